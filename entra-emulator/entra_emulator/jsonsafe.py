"""JSON from callers, parsed with bounds (security-checklist SEC-J3).

`json.loads` recurses once per nesting level: a body nested 100,000 deep raises RecursionError,
which is no ValueError, so it escaped every `except ValueError` and became a 500. Here the
size and the nesting depth are checked first, without recursion, and every failure is one
`UnsafeJson` (a ValueError) that the endpoint answers in its own error shape.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

# Far above anything the emulator is sent (MSAL's `claims` is 4 deep, admin bodies 1 deep).
MAX_DEPTH = 32
MAX_BYTES = 64 * 1024
# What the depth scan looks at: quotes, escapes (inside strings) and brackets. One left-to-right
# pass, so linear in the text whatever it holds.
_SCANNED = re.compile(r'\\.|["\[\]{}]', re.DOTALL)


class UnsafeJson(ValueError):
    """Not JSON, or JSON too large or too deeply nested to parse."""


def _reject_constant(name: str) -> Any:
    raise UnsafeJson(f"{name} is not JSON")


def nesting_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in `text` (0 for a scalar)."""
    depth = deepest = 0
    in_string = False
    for match in _SCANNED.finditer(text):
        token = match.group()
        if token == '"':
            in_string = not in_string
        elif in_string or len(token) == 2:   # inside a string, or an escape
            continue
        elif token in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def loads(data: str | bytes, *, max_depth: int = MAX_DEPTH, max_bytes: int = MAX_BYTES) -> Any:
    """Parse JSON (RFC 8259: UTF-8, no NaN or Infinity) within the bounds, or raise
    UnsafeJson saying why."""
    if len(data) > max_bytes:
        raise UnsafeJson(f"the JSON is larger than {max_bytes} bytes")
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise UnsafeJson("the JSON is not UTF-8") from None
    if nesting_depth(data) > max_depth:
        raise UnsafeJson(f"the JSON is nested more than {max_depth} deep")
    try:
        return json.loads(data, parse_constant=_reject_constant)
    except RecursionError:   # not expected after the depth check; never a 500 all the same
        raise UnsafeJson(f"the JSON is nested more than {max_depth} deep") from None
    except ValueError as problem:
        raise UnsafeJson(f"not valid JSON ({problem})") from None


def check_jwt(token: str, *, max_bytes: int = MAX_BYTES) -> None:
    """Before a JWT's header or payload reaches PyJWT's json.loads: raise UnsafeJson when
    either segment is too large or too deeply nested. Other malformations are left to PyJWT."""
    if len(token) > max_bytes * 2:
        raise UnsafeJson("the token is too large")
    for segment in token.split(".")[:2]:
        try:
            decoded = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        except (binascii.Error, ValueError):
            continue
        if nesting_depth(decoded.decode("utf-8", "replace")) > MAX_DEPTH:
            raise UnsafeJson(f"the token's JSON is nested more than {MAX_DEPTH} deep")
