"""What the browser-facing side remembers, in memory: SSO sessions (the ESTSAUTH cookie) and
sign-ins in progress (the `ctx` of the sign-in and consent forms). Re-exported by state.py.

Both are bounded in count and lifetime and purged as they expire, oldest first: each store is
an OrderedDict kept in the order records expire, so a purge looks only at what has expired.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from entra_emulator.directory import User
    from entra_emulator.state import Clock

# Entra: "the default configuration for user sign-in frequency is a rolling window of 90 days"
# (Conditional Access, sign-in frequency). A session unused for that long is forgotten.
SSO_SESSION_LIFETIME_SECONDS = 90 * 24 * 3600
# Beyond this many sessions the least recently used is forgotten (its user signs in again).
MAX_SSO_SESSIONS = 100_000
# How long a sign-in form stays usable (AADSTS50089 after). Entra's flow token lasts minutes,
# not hours; the exact figure is not documented.
PENDING_SIGN_IN_LIFETIME_SECONDS = 600
# Sign-ins in progress held at once; beyond it the oldest is dropped. Each holds a request
# bounded by request_limits.py, so this bounds their memory.
MAX_PENDING_SIGN_INS = 4000


def _digest(token: str) -> str:
    # Stores hold a hash, never the credential itself.
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------------------------
# SSO sessions (the browser's cookie)
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Session:
    sid: str              # the `sid` claim
    session_state: str    # the `session_state` redirect parameter
    user_id: str
    auth_time: int


class SessionStore:
    """Sessions by cookie hash, least recently used first; each use moves a session to the end
    and restarts its window."""

    def __init__(self, clock: Clock, *, limit: int = MAX_SSO_SESSIONS) -> None:
        self._clock = clock
        self._limit = limit
        self._lock = threading.Lock()
        self._sessions: OrderedDict[str, tuple[Session, float]] = OrderedDict()

    def create(self, user: User, auth_time: int) -> tuple[str, Session]:
        """A new session; returns (cookie value, session)."""
        cookie = secrets.token_urlsafe(32)
        session = Session(sid=str(uuid.uuid4()), session_state=str(uuid.uuid4()),
                          user_id=user.id, auth_time=auth_time)
        now = self._clock.now()
        with self._lock:
            self._purge(now)
            while len(self._sessions) >= self._limit:
                self._sessions.popitem(last=False)
            self._sessions[_digest(cookie)] = (session, now)
        return cookie, session

    def get(self, cookie: str | None) -> Session | None:
        if not cookie:
            return None
        key, now = _digest(cookie), self._clock.now()
        with self._lock:
            self._purge(now)
            found = self._sessions.get(key)
            if found is None:
                return None
            self._sessions[key] = (found[0], now)
            self._sessions.move_to_end(key)
            return found[0]

    def end(self, cookie: str | None) -> Session | None:
        if not cookie:
            return None
        with self._lock:
            found = self._sessions.pop(_digest(cookie), None)
        return found[0] if found else None

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def _purge(self, now: float) -> None:
        while self._sessions:
            key, (_, last_used) = next(iter(self._sessions.items()))
            if now - last_used <= SSO_SESSION_LIFETIME_SECONDS:
                return
            del self._sessions[key]


# ---------------------------------------------------------------------------------------------
# Sign-ins in progress (the `ctx` hidden field of the sign-in and consent forms)
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PendingSignIn:
    ctx: str
    request: Any                         # authorize.AuthorizationRequest
    created_at: float
    browser: str | None = None           # the browser it is bound to (signin_binding.py)
    signed_in_session: str | None = None   # sid of a sign-in completed during this flow
    consent_for_session: str | None = None  # sid the consent page was shown to
    consented: bool = False
    to_ask: frozenset[str] | None = None     # the permissions the consent page asks for


class PendingStore:
    """Sign-ins in progress, oldest first."""

    def __init__(self, clock: Clock, *, limit: int = MAX_PENDING_SIGN_INS) -> None:
        self._clock = clock
        self._limit = limit
        self._lock = threading.Lock()
        self._pending: OrderedDict[str, PendingSignIn] = OrderedDict()

    def start(self, request: Any, *, browser: str | None = None) -> PendingSignIn:
        pending = PendingSignIn(ctx=secrets.token_urlsafe(32), request=request,
                                created_at=self._clock.now(), browser=browser)
        with self._lock:
            self._purge()
            while len(self._pending) >= self._limit:
                self._pending.popitem(last=False)
            self._pending[pending.ctx] = pending
        return pending

    def get(self, ctx: str | None) -> PendingSignIn | None:
        with self._lock:
            self._purge()
            pending = self._pending.get(ctx or "")
        if pending is None or self._expired(pending):
            return None
        return pending

    def update(self, pending: PendingSignIn, **changes: Any) -> PendingSignIn:
        """The changed sign-in, stored in its place if it is still held (never re-added)."""
        updated = replace(pending, **changes)
        with self._lock:
            if pending.ctx in self._pending:
                self._pending[pending.ctx] = updated
        return updated

    def finish(self, ctx: str) -> None:
        with self._lock:
            self._pending.pop(ctx, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)

    def _expired(self, pending: PendingSignIn) -> bool:
        return self._clock.now() - pending.created_at > PENDING_SIGN_IN_LIFETIME_SECONDS

    def _purge(self) -> None:
        while self._pending:
            oldest = next(iter(self._pending.values()))
            if not self._expired(oldest):
                return
            del self._pending[oldest.ctx]
