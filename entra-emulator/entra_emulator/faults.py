"""Fault injection: make the next Graph or token calls fail the way the real services fail.

`FaultInjector` holds pending faults per target ("graph" or "token"), first in first out; the
Graph blueprint and the token endpoint call `intercept(target)` before doing their real work.
admin.py exposes the same operations over loopback HTTP.
"""

from __future__ import annotations

import base64
import json
import math
import time
from dataclasses import asdict, dataclass
from typing import Any

from flask import Response

from entra_emulator.context import current_state
from entra_emulator.db import StateDB
from entra_emulator.errors import entra_error, error_json_response
from entra_emulator.graph import (
    graph_date,
    graph_error_response,
    graph_www_authenticate,
    request_ids,
)
from entra_emulator.scopes import GRAPH_APP_ID

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
    """Pending faults per target, consumed one per intercepted call, in the state database:
    a fault queued through one worker fires on whichever worker the next call reaches.
    Thread-safe."""

    def __init__(self, db: StateDB | None = None) -> None:
        self._db = db or StateDB.in_memory()

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
        with self._db.write() as connection:
            connection.executemany(
                "INSERT INTO faults (target, kind, retry_after, delay_seconds) "
                "VALUES (?, ?, ?, ?)", [(fault.target, fault.kind, fault.retry_after,
                                         fault.delay_seconds)] * count)

    def clear(self) -> None:
        self._db.run("DELETE FROM faults")

    def pending(self) -> list[dict[str, Any]]:
        """The queued faults, in the order they will fire (per target)."""
        rows = self._db.all("SELECT target, kind, retry_after, delay_seconds FROM faults "
                            "ORDER BY seq")
        return [asdict(_fault(row)) for target in TARGETS for row in rows if row[0] == target]

    def intercept(self, target: str) -> Response | None:
        """Consume the next fault for `target` and answer with it; None lets the call proceed.

        Must run inside the request (it renders the target service's error shape).
        """
        fault = self._take(target)
        if fault is None:
            return None
        if fault.kind == "delay":
            # Sleep with no lock or connection held, so other requests keep flowing (on the
            # server's other threads: http_server.THREADS delays at once fill them); then
            # serve normally.
            time.sleep(fault.delay_seconds or 0)
            return None
        return _FAULT_RESPONSES[(fault.target, fault.kind)](fault)

    def _take(self, target: str) -> Fault | None:
        # A read first: most calls find nothing and take no write lock.
        while True:
            row = self._db.one("SELECT seq, target, kind, retry_after, delay_seconds "
                               "FROM faults WHERE target = ? ORDER BY seq LIMIT 1", (target,))
            if row is None:
                return None
            if self._db.run("DELETE FROM faults WHERE seq = ?", (row[0],)):
                return _fault(row[1:])
            # Another worker took it first: the next one, if any.


def _fault(row: Any) -> Fault:
    target, kind, retry_after, delay_seconds = row
    return Fault(target=target, kind=kind, retry_after=_number(retry_after),
                 delay_seconds=_number(delay_seconds))


def _number(value: float | None) -> float | None:
    # Stored as REAL: 5 comes back 5.0; answer with the whole number as it was given.
    return int(value) if value is not None and float(value).is_integer() else value


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

def _token_429(fault: Fault) -> Response:
    retry_after = fault.retry_after if fault.retry_after is not None else DEFAULT_RETRY_AFTER_429
    response = error_json_response(entra_error("TenantThrottlingError"))
    response.headers["Retry-After"] = retry_after_header(retry_after)
    return response


def _token_503(fault: Fault) -> Response:
    response = error_json_response(entra_error("MsodsServiceUnavailable"))
    if fault.retry_after is not None:
        response.headers["Retry-After"] = retry_after_header(fault.retry_after)
    return response


def _token_claims_challenge(fault: Fault) -> Response:
    # What Conditional Access answers when a token needs a stronger sign-in: MSAL returns it
    # as a dict with error "interaction_required", so the app must send the user to authorize.
    return error_json_response(entra_error("UserStrongAuthClientAuthNRequired",
                                           resource=GRAPH_APP_ID))


_FAULT_RESPONSES = {
    ("graph", "429"): _graph_429,
    ("graph", "503"): _graph_503,
    ("graph", "claims_challenge"): _graph_claims_challenge,
    ("token", "429"): _token_429,
    ("token", "503"): _token_503,
    ("token", "claims_challenge"): _token_claims_challenge,
}
