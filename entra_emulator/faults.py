"""Fault injection: make the next Graph or token calls fail the way the real services fail.

`FaultInjector` holds pending faults per target ("graph" or "token"), first in first out; the
Graph blueprint and the token endpoint call `intercept(target)` before doing their real work.
`admin_bp` exposes the same operations (and ID-token defects, key rotation) over loopback HTTP.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import math
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from flask import Blueprint, Response, request

from entra_emulator.context import current_state
from entra_emulator.errors import ERROR_LOOKUP_URI, Diagnostics, json_response
from entra_emulator.graph import (
    GRAPH_APP_ID,
    graph_date,
    graph_error_response,
    graph_www_authenticate,
    request_ids,
)

TARGETS = ("graph", "token")
KINDS = ("429", "503", "claims_challenge", "delay")
# Upper bounds that keep a typo from hanging a test run or a request thread for hours.
MAX_COUNT = 10_000
MAX_SECONDS = 3600.0
DEFAULT_RETRY_AFTER_429 = 1


@dataclass(frozen=True)
class Fault:
    target: str
    kind: str
    retry_after: float | None = None
    delay_seconds: float | None = None


class FaultInjector:
    """Pending faults per target, consumed one per intercepted call. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, deque[Fault]] = {target: deque() for target in TARGETS}

    def add(self, target: str, kind: str, count: int = 1, retry_after: float | None = None,
            delay_seconds: float | None = None) -> None:
        """Queue `count` faults of `kind` for `target`; ValueError names what is wrong."""
        fault = Fault(target=_checked_choice("target", target, TARGETS),
                      kind=_checked_choice("kind", kind, KINDS),
                      retry_after=_checked_seconds("retry_after", retry_after),
                      delay_seconds=_checked_seconds("delay_seconds", delay_seconds))
        count = _checked_count(count)
        if fault.kind == "delay" and fault.delay_seconds is None:
            raise ValueError("kind 'delay' needs delay_seconds")
        with self._lock:
            self._pending[fault.target].extend([fault] * count)

    def clear(self) -> None:
        with self._lock:
            for queue in self._pending.values():
                queue.clear()

    def pending(self) -> list[dict[str, Any]]:
        """The queued faults, in the order they will fire (per target)."""
        with self._lock:
            return [asdict(fault) for target in TARGETS for fault in self._pending[target]]

    def intercept(self, target: str) -> Response | None:
        """Consume the next fault for `target` and answer with it; None lets the call proceed.

        Must run inside the request (it renders the target service's error shape).
        """
        with self._lock:
            queue = self._pending.get(target)
            fault = queue.popleft() if queue else None
        if fault is None:
            return None
        if fault.kind == "delay":
            # Sleep outside the lock so other requests keep flowing; then serve normally.
            time.sleep(fault.delay_seconds or 0)
            return None
        return _FAULT_RESPONSES[(fault.target, fault.kind)](fault)


def _checked_choice(field: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{field} must be one of {', '.join(choices)} (got {value!r})")
    return value


def _checked_count(count: Any) -> int:
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_COUNT:
        raise ValueError(f"count must be a whole number from 1 to {MAX_COUNT} (got {count!r})")
    return count


def _checked_seconds(field: str, value: Any) -> float | None:
    if value is None:
        return None
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not math.isfinite(value) or not 0 <= value <= MAX_SECONDS):
        raise ValueError(f"{field} must be a number of seconds from 0 to {MAX_SECONDS:g} "
                         f"(got {value!r})")
    return value


def retry_after_header(seconds: float) -> str:
    """Whole seconds as Graph and Entra usually send them; fractions kept if asked for."""
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


# ---------------------------------------------------------------------------------------------
# Graph's answers
# ---------------------------------------------------------------------------------------------

def _graph_429(fault: Fault) -> Response:
    request_id, client_request_id = request_ids()
    retry_after = fault.retry_after if fault.retry_after is not None else DEFAULT_RETRY_AFTER_429
    # Graph's throttling body (throttling.md): the innerError carries code/status/message too.
    inner = {"code": "429", "date": graph_date(), "message": "Please retry after",
             "request-id": request_id, "status": "429", "client-request-id": client_request_id}
    return graph_error_response(429, "TooManyRequests", "Please retry again later.",
                                inner_error=inner,
                                headers={"Retry-After": retry_after_header(retry_after)})


def _graph_503(fault: Fault) -> Response:
    headers = ({"Retry-After": retry_after_header(fault.retry_after)}
               if fault.retry_after is not None else None)
    return graph_error_response(503, "serviceNotAvailable",
                                "The service is temporarily unavailable. Please retry later.",
                                headers=headers)


def claims_challenge_value(now: float | None = None) -> str:
    """The CAE `claims` parameter: base64 of {"access_token":{"nbf":{essential, value}}}."""
    nbf = str(int(now if now is not None else time.time()))
    claims = {"access_token": {"nbf": {"essential": True, "value": nbf}}}
    return base64.b64encode(json.dumps(claims, separators=(",", ":")).encode()).decode()


def _graph_claims_challenge(fault: Fault) -> Response:
    # "now" on the emulator's clock, which stamps the tokens it issues (tests may move it).
    now = current_state().clock.now()
    challenge = graph_www_authenticate(
        f'error="insufficient_claims", claims="{claims_challenge_value(now)}"')
    return graph_error_response(
        401, "InvalidAuthenticationToken",
        "Continuous access evaluation resulted in challenge with result: InteractionRequired "
        "and code: TokenIssuedBeforeRevocationTimestamp",
        headers={"WWW-Authenticate": challenge})


# ---------------------------------------------------------------------------------------------
# The token endpoint's answers (Entra's error body)
# ---------------------------------------------------------------------------------------------

def entra_error_response(status: int, error: str, code: int, description: str,
                         headers: Mapping[str, str] | None = None,
                         **extra: Any) -> Response:
    """Entra's token-endpoint error body for the fault-only AADSTS codes below.

    errors.py's catalogue holds the errors the protocol checks raise; these codes only ever
    come from injected faults, so they are built here, in the same shape, with its helpers.
    """
    diagnostics = Diagnostics.for_request()
    body = {
        "error": error,
        "error_description": f"AADSTS{code}: {description}\r\n"
                             f"Trace ID: {diagnostics.trace_id}\r\n"
                             f"Correlation ID: {diagnostics.correlation_id}\r\n"
                             f"Timestamp: {diagnostics.timestamp}",
        "error_codes": [code],
        "timestamp": diagnostics.timestamp,
        "trace_id": diagnostics.trace_id,
        "correlation_id": diagnostics.correlation_id,
        "error_uri": ERROR_LOOKUP_URI.format(code=code),
        **extra,
    }
    response = json_response(body, status=status)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _token_429(fault: Fault) -> Response:
    retry_after = fault.retry_after if fault.retry_after is not None else DEFAULT_RETRY_AFTER_429
    # Entra documents temporarily_unavailable for "too busy"; it does not document the AADSTS
    # number sent with its 429, so we use TenantThrottlingError's (90055).
    return entra_error_response(
        429, "temporarily_unavailable", 90055,
        "There are too many incoming requests. Please try again later.",
        headers={"Retry-After": retry_after_header(retry_after)})


def _token_503(fault: Fault) -> Response:
    headers = ({"Retry-After": retry_after_header(fault.retry_after)}
               if fault.retry_after is not None else None)
    return entra_error_response(503, "temporarily_unavailable", 90033,
                                "A transient error has occurred. Please try again.",
                                headers=headers)


def _token_claims_challenge(fault: Fault) -> Response:
    # What Conditional Access answers when a token needs a stronger sign-in: MSAL returns it
    # as a dict with error "interaction_required", so the app must send the user to authorize.
    return entra_error_response(
        400, "interaction_required", 50076,
        "Due to a configuration change made by your administrator, or because you moved to a "
        f"new location, you must use multi-factor authentication to access '{GRAPH_APP_ID}'.",
        suberror="basic_action")


_FAULT_RESPONSES = {
    ("graph", "429"): _graph_429,
    ("graph", "503"): _graph_503,
    ("graph", "claims_challenge"): _graph_claims_challenge,
    ("token", "429"): _token_429,
    ("token", "503"): _token_503,
    ("token", "claims_challenge"): _token_claims_challenge,
}


# ---------------------------------------------------------------------------------------------
# Admin endpoints (loopback only)
# ---------------------------------------------------------------------------------------------

admin_bp = Blueprint("emulator_admin", __name__, url_prefix="/_emulator")


def _admin_error(status: int, description: str, error: str = "invalid_request") -> Response:
    return json_response({"error": error, "error_description": description}, status=status)


def _admin_json(body: Any, status: int = 200) -> Response:
    return json_response(body, status=status)


def is_loopback(address: str | None) -> bool:
    try:
        ip = ipaddress.ip_address((address or "").split("%")[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


@admin_bp.before_request
def _loopback_only() -> Response | None:
    if not is_loopback(request.remote_addr):
        return _admin_error(403, "The emulator's admin endpoints answer loopback callers only.",
                            error="access_denied")
    return None


def _json_object() -> dict[str, Any]:
    body = request.get_json(force=True, silent=True)
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    return body


@admin_bp.get("/faults")
def list_faults() -> Response:
    return _admin_json({"pending": current_state().faults.pending()})


@admin_bp.post("/faults")
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
    return _admin_json({"pending": state.faults.pending()}, status=201)


@admin_bp.delete("/faults")
def clear_faults() -> Response:
    current_state().faults.clear()
    return _admin_json({"pending": []})


@admin_bp.get("/defects")
def list_defects() -> Response:
    return _admin_json({"pending": current_state().defects.pending()})


@admin_bp.post("/defects")
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
    return _admin_json({"pending": state.defects.pending()}, status=201)


@admin_bp.delete("/defects")
def clear_defects() -> Response:
    current_state().defects.clear()
    return _admin_json({"pending": []})


@admin_bp.post("/rotate-keys")
def rotate_keys() -> Response:
    keys = current_state().keys
    keys.rotate()
    published = [key["kid"] for key in keys.jwks().get("keys", [])]
    return _admin_json({"current_kid": keys.current.kid, "published_kids": published})
