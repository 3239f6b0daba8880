"""`/_emulator/...`: the admin endpoints tests and developers drive the emulator with.

Faults (faults.py), ID-token defects (defects.py) and key rotation, over HTTP on the https port.
They change what the emulator answers to everyone, so three guards come before any of them:

- the caller is on this machine (its address is loopback);
- the request is addressed to this machine (the Host header is localhost, 127.0.0.1 or [::1]),
  so a web page cannot reach us through DNS rebinding (a name of its own resolving to 127.0.0.1);
- a POST says `Content-Type: application/json`. A web page can send a cross-site POST without
  asking first only with a form content type (text/plain, urlencoded, multipart) or none;
  any other type makes the browser send a CORS preflight, which we never approve. DELETE
  always needs a preflight, and GET answers cannot be read cross-site, so POST is the one
  method that needs this.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from flask import Blueprint, Response, request

from entra_emulator.context import current_state
from entra_emulator.errors import json_response
from entra_emulator.jsonsafe import MAX_BYTES, UnsafeJson
from entra_emulator.jsonsafe import loads as bounded_json_loads

bp = Blueprint("emulator_admin", __name__, url_prefix="/_emulator")

# A Host header naming this machine, with any port (RFC 9110 §7.2: host [":" port]).
LOOPBACK_HOST = re.compile(r"(localhost|127\.0\.0\.1|\[::1\])(:\d{1,5})?", re.IGNORECASE)
JSON_MIMETYPE = "application/json"


def _admin_error(status: int, description: str, error: str = "invalid_request") -> Response:
    return json_response({"error": error, "error_description": description}, status=status)


def is_loopback(address: str | None) -> bool:
    try:
        ip = ipaddress.ip_address((address or "").split("%")[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def is_loopback_host(host: str | None) -> bool:
    return LOOPBACK_HOST.fullmatch(host or "") is not None


@bp.before_request
def _local_json_callers_only() -> Response | None:
    if not is_loopback(request.remote_addr):
        return _admin_error(403, "The emulator's admin endpoints answer loopback callers only.",
                            error="access_denied")
    host = request.headers.get("Host")
    if not is_loopback_host(host):
        return _admin_error(
            403, "The emulator's admin endpoints answer requests addressed to localhost, "
                 f"127.0.0.1 or [::1] only (Host was {host!r}).", error="access_denied")
    if request.method == "POST" and request.mimetype != JSON_MIMETYPE:
        sent = request.mimetype or "none"
        return _admin_error(
            415, f"The emulator's admin endpoints take JSON: send Content-Type: "
                 f"{JSON_MIMETYPE} (got {sent}).")
    return None


def _json_object() -> dict[str, Any]:
    """The body as a JSON object, parsed with bounds (jsonsafe.py): malformed, oversized or
    deeply nested JSON is a ValueError, which the endpoints answer with a 400."""
    data = request.stream.read(MAX_BYTES + 1)   # a chunked body has no Content-Length
    if (request.content_length or 0) > MAX_BYTES or len(data) > MAX_BYTES:
        raise ValueError(f"the body is larger than {MAX_BYTES} bytes")
    try:
        body = bounded_json_loads(data)
    except UnsafeJson as problem:
        raise ValueError(f"the body must be a JSON object: {problem}") from None
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    return body


@bp.get("/faults")
def list_faults() -> Response:
    return json_response({"pending": current_state().faults.pending()})


@bp.post("/faults")
def add_fault() -> Response:
    state = current_state()
    try:
        body = _json_object()
        unknown = set(body) - {"target", "kind", "count", "retry_after", "delay_seconds"}
        if unknown:
            raise ValueError(f"unknown field(s): {', '.join(sorted(unknown))}")
        state.faults.add(body.get("target"), body.get("kind"), count=body.get("count", 1),
                         retry_after=body.get("retry_after"),
                         delay_seconds=body.get("delay_seconds"))
    except ValueError as problem:
        return _admin_error(400, str(problem))
    return json_response({"pending": state.faults.pending()}, status=201)


@bp.delete("/faults")
def clear_faults() -> Response:
    current_state().faults.clear()
    return json_response({"pending": []})


@bp.get("/defects")
def list_defects() -> Response:
    return json_response({"pending": current_state().defects.pending()})


@bp.post("/defects")
def add_defect() -> Response:
    state = current_state()
    try:
        body = _json_object()
        unknown = set(body) - {"client_id", "defect", "count"}
        if unknown:
            raise ValueError(f"unknown field(s): {', '.join(sorted(unknown))}")
        client_id = body.get("client_id")
        if not isinstance(client_id, str) or state.directory.application(client_id) is None:
            raise ValueError(f"client_id must be the appId of an application in the "
                             f"directory (got {client_id!r})")
        state.defects.add(client_id, body.get("defect"), count=body.get("count", 1))
    except ValueError as problem:
        return _admin_error(400, str(problem))
    return json_response({"pending": state.defects.pending()}, status=201)


@bp.delete("/defects")
def clear_defects() -> Response:
    current_state().defects.clear()
    return json_response({"pending": []})


@bp.post("/rotate-keys")
def rotate_keys() -> Response:
    # Takes no body, but like every admin POST it must say application/json (see above).
    keys = current_state().keys
    keys.rotate()
    published = [key["kid"] for key in keys.jwks().get("keys", [])]
    return json_response({"current_kid": keys.current.kid, "published_kids": published})
