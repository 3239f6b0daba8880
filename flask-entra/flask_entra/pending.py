"""Pending sign-ins, sealed in short-lived cookies: nothing is stored server-side when anyone
visits /login (security checklist J1).

A pending sign-in is what MSAL reads back at the callback (its auth-code flow: state, nonce as
kept, PKCE verifier, redirect URI, scopes, claims challenge) plus where to return and what the
response must look like (issuer, RFC 9207 `iss`). It is sealed (Fernet: encrypted and
authenticated, with its time) in a cookie named after its `state`, so several tabs may sign in at
once (checklist A6), and a response is matched to the browser that started it (A5): the cookie
must open, be younger than PENDING_SECONDS and hold that very state. Under https only the
`__Host-` name is read, so a sibling subdomain or an http man-in-the-middle cannot plant one
(login CSRF, J5). The cookie is SameSite=None: the provider's form_post is a cross-site POST.
At most max_pending_sign_ins such cookies live at once (the oldest are dropped), so no page
can bloat a browser's Cookie header past a server's limit.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import asdict, dataclass
from typing import Any

from flask import Request, Response

from .sealing import Sealer, SealError
from .settings import Settings

PENDING_SECONDS = 600  # how long a started sign-in may take (Entra's own limit is 10 minutes)
COOKIE_PREFIX = "entra-signin-"
HOST_PREFIX = "__Host-"
MAX_COOKIE_CHARS = 3000  # a sealed cookie is ~1 KiB; a few of them stay far under 8 KiB
MAX_STATE_CHARS = 256


class PendingError(Exception):
    """No pending sign-in of this browser matches the response; the message says why."""


@dataclass(frozen=True)
class PendingSignIn:
    flow: dict[str, Any]  # MSAL's auth-code flow, without its (long) auth_uri
    nonce: str  # as sent (MSAL sends a hash of the one it keeps in the flow)
    next_path: str
    issuer: str
    iss_required: bool
    previous_session: str | None  # this browser's session when it started, ended at success
    created: float

    @property
    def state(self) -> str:
        return self.flow["state"]

    @property
    def expires_at(self) -> float:
        return self.created + PENDING_SECONDS


class PendingSignIns:
    def __init__(self, settings: Settings, secret_keys: list[str]) -> None:
        self._sealer = Sealer(secret_keys, "pending sign-in")
        self._secure = settings.uses_https or settings.response_mode == "form_post"
        self._prefix = (HOST_PREFIX if settings.uses_https else "") + COOKIE_PREFIX
        self._form_post = settings.response_mode == "form_post"
        self._max = settings.max_pending_sign_ins

    def cookie_name(self, state: str) -> str:
        return self._prefix + hashlib.sha256(state.encode()).hexdigest()[:16]

    def remember(self, pending: PendingSignIn, request: Request, response: Response) -> None:
        """Set the pending sign-in's cookie, dropping the oldest ones past the cap."""
        others = sorted((self._created(value), name) for name, value in request.cookies.items()
                        if name.startswith(self._prefix))
        for _, name in others[:max(0, len(others) - self._max + 1)]:
            self._delete(response, name)
        sealed = self._sealer.seal(json.dumps(asdict(pending), separators=(",", ":")).encode())
        response.set_cookie(
            self.cookie_name(pending.state), sealed.decode(), max_age=PENDING_SECONDS, path="/",
            httponly=True, secure=self._secure,
            # form_post arrives as a cross-site POST, which carries only SameSite=None cookies
            # (browsers accept those only when Secure, which they allow on http://localhost).
            samesite="None" if self._form_post else "Lax")

    def take(self, state: str, request: Request) -> PendingSignIn:
        """The pending sign-in this browser started with `state`, or PendingError."""
        if not state or len(state) > MAX_STATE_CHARS:
            raise PendingError("the response carries no valid state")
        sealed = request.cookies.get(self.cookie_name(state))
        if sealed is None:
            raise PendingError("no sign-in started in this browser is waiting for it")
        pending = self._open(sealed)
        if pending is None:
            raise PendingError("the sign-in it answers has expired or its cookie was altered")
        if not hmac.compare_digest(pending.state.encode(), state.encode()):
            raise PendingError("it answers another sign-in")
        return pending

    def forget(self, state: str, response: Response) -> None:
        self._delete(response, self.cookie_name(state))

    def _open(self, sealed: str) -> PendingSignIn | None:
        if len(sealed) > MAX_COOKIE_CHARS:
            return None
        try:
            return PendingSignIn(**json.loads(self._sealer.open(sealed, PENDING_SECONDS)))
        except (SealError, ValueError, TypeError):
            return None

    def _created(self, sealed: str) -> float:
        pending = self._open(sealed)
        return pending.created if pending else 0.0  # unreadable ones go first

    def _delete(self, response: Response, name: str) -> None:
        response.delete_cookie(name, path="/", httponly=True, secure=self._secure,
                               samesite="None" if self._form_post else "Lax")


def new_pending(flow: dict[str, Any], nonce: str, next_path: str, issuer: str,
                iss_required: bool, previous_session: str | None) -> PendingSignIn:
    flow = {k: v for k, v in flow.items() if k != "auth_uri"}
    return PendingSignIn(flow=flow, nonce=nonce, next_path=next_path, issuer=issuer,
                         iss_required=iss_required, previous_session=previous_session,
                         created=time.time())
