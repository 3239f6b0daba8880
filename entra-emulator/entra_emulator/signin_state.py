"""What the browser-facing side remembers, in the shared state database (db.py): SSO sessions
(the ESTSAUTH cookie) and sign-ins in progress (the `ctx` of the sign-in and consent forms), so
the form posted to one worker finds the sign-in another worker started. Re-exported by
state.py.

Both are bounded in count and lifetime and purged as they expire, oldest first: each row has a
sequence number (sessions take a new one at each use), and a new row drops those more than the
limit behind it, one indexed range delete.
"""

from __future__ import annotations

import json
import secrets
import uuid
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from entra_emulator.db import StateDB
from entra_emulator.records import Clock, Purge, digest

if TYPE_CHECKING:
    from entra_emulator.directory import User

# Entra: "the default configuration for user sign-in frequency is a rolling window of 90 days"
# (Conditional Access, sign-in frequency). A session unused for that long is forgotten.
SSO_SESSION_LIFETIME_SECONDS = 90 * 24 * 3600
# Beyond this many sessions the least recently used is forgotten (its user signs in again).
MAX_SSO_SESSIONS = 100_000
# How long a sign-in form stays usable (AADSTS50089 after). Entra's flow token lasts minutes,
# not hours; the exact figure is not documented.
PENDING_SIGN_IN_LIFETIME_SECONDS = 600
# Sign-ins in progress held at once; beyond it the oldest is dropped. Each holds a request
# bounded by request_limits.py, so this bounds their size.
MAX_PENDING_SIGN_INS = 4000




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
    """Sessions by cookie hash; each use gives a session the next sequence number and restarts
    its window."""

    def __init__(self, clock: Clock, *, limit: int = MAX_SSO_SESSIONS,
                 db: StateDB | None = None) -> None:
        self._clock = clock
        self._limit = limit
        self._db = db or StateDB.in_memory()
        self._purge = Purge(self._db, clock, "DELETE FROM sessions WHERE last_used < ?",
                            keep=SSO_SESSION_LIFETIME_SECONDS)

    def create(self, user: User, auth_time: int) -> tuple[str, Session]:
        """A new session; returns (cookie value, session)."""
        cookie = secrets.token_urlsafe(32)
        session = Session(sid=str(uuid.uuid4()), session_state=str(uuid.uuid4()),
                          user_id=user.id, auth_time=auth_time)
        with self._db.write() as connection:   # one commit for the three statements
            self._purge(connection)
            seq = connection.execute(
                f"INSERT INTO sessions VALUES (?, {_NEXT_SEQ}, ?, ?, ?, ?, ?) "  # noqa: S608
                "RETURNING seq", (digest(cookie), session.sid, session.session_state,
                                  session.user_id, session.auth_time,
                                  self._clock.now())).fetchone()[0]
            if seq > self._limit:   # (places start at 1: before that, nothing to drop)
                connection.execute("DELETE FROM sessions WHERE seq <= ?", (seq - self._limit,))
        return cookie, session

    def get(self, cookie: str | None) -> Session | None:
        if not cookie:
            return None
        key, now = digest(cookie), self._clock.now()
        self._purge()
        row = self._db.one(f"UPDATE sessions SET seq = {_NEXT_SEQ}, last_used = ? "  # noqa: S608
                           "WHERE key = ? AND last_used >= ? "
                           "RETURNING sid, session_state, user_id, auth_time",
                           (now, key, now - SSO_SESSION_LIFETIME_SECONDS))
        return Session(*row) if row else None

    def end(self, cookie: str | None) -> Session | None:
        if not cookie:
            return None
        row = self._db.one("DELETE FROM sessions WHERE key = ? "
                           "RETURNING sid, session_state, user_id, auth_time", (digest(cookie),))
        return Session(*row) if row else None

    def __len__(self) -> int:
        self._purge()
        return self._db.one("SELECT count(*) FROM sessions")[0]


# A session's place in the least-recently-used order: after every other (one statement with
# the insert or update that uses it, so two workers never take the same).
_NEXT_SEQ = "(SELECT coalesce(max(seq), 0) + 1 FROM sessions)"


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

    def __init__(self, clock: Clock, *, limit: int = MAX_PENDING_SIGN_INS,
                 db: StateDB | None = None) -> None:
        self._clock = clock
        self._limit = limit
        self._db = db or StateDB.in_memory()
        self._purge = Purge(self._db, clock, "DELETE FROM pending WHERE created_at < ?",
                            keep=PENDING_SIGN_IN_LIFETIME_SECONDS)

    def start(self, request: Any, *, browser: str | None = None) -> PendingSignIn:
        pending = PendingSignIn(ctx=secrets.token_urlsafe(32), request=request,
                                created_at=self._clock.now(), browser=browser)
        with self._db.write() as connection:   # one commit for the three statements
            self._purge(connection)
            seq = connection.execute(
                "INSERT INTO pending (ctx, record, created_at) VALUES (?, ?, ?) RETURNING seq",
                (pending.ctx, _pending_text(pending), pending.created_at)).fetchone()[0]
            if seq > self._limit:   # (places start at 1: before that, nothing to drop)
                connection.execute("DELETE FROM pending WHERE seq <= ?", (seq - self._limit,))
        return pending

    def get(self, ctx: str | None) -> PendingSignIn | None:
        row = self._db.one("SELECT record FROM pending WHERE ctx = ?", (ctx or "",))
        pending = _pending_from(row[0]) if row else None
        if pending is None or self._expired(pending):
            return None
        return pending

    def update(self, pending: PendingSignIn, **changes: Any) -> PendingSignIn:
        """The changed sign-in, stored in its place if it is still held (never re-added)."""
        updated = replace(pending, **changes)
        self._db.run("UPDATE pending SET record = ? WHERE ctx = ?",
                     (_pending_text(updated), pending.ctx))
        return updated

    def finish(self, ctx: str) -> None:
        self._db.run("DELETE FROM pending WHERE ctx = ?", (ctx,))

    def __len__(self) -> int:
        self._purge()
        return self._db.one("SELECT count(*) FROM pending")[0]

    def _expired(self, pending: PendingSignIn) -> bool:
        return self._clock.now() - pending.created_at > PENDING_SIGN_IN_LIFETIME_SECONDS


def _pending_text(pending: PendingSignIn) -> str:
    data = {name: getattr(pending, name) for name in pending.__dataclass_fields__}
    if hasattr(pending.request, "client"):   # an AuthorizationRequest (unit tests use None)
        data["request"] = request_to_json(pending.request)
    if data.get("to_ask") is not None:
        data["to_ask"] = sorted(data["to_ask"])
    return json.dumps(data, separators=(",", ":"))


def _pending_from(text: str) -> PendingSignIn | None:
    data = json.loads(text)
    if data.get("to_ask") is not None:
        data["to_ask"] = frozenset(data["to_ask"])
    if isinstance(data.get("request"), dict) and "client_id" in data["request"]:
        data["request"] = request_from_json(data["request"])
        if data["request"] is None:   # its app left the directory meanwhile
            return None
    return PendingSignIn(**data)


def request_to_json(request: Any) -> dict[str, Any]:
    """An authorize.AuthorizationRequest as JSON: its app by id, its scopes by their string."""
    data = {name: getattr(request, name) for name in request.__dataclass_fields__
            if name not in ("client", "scopes")}
    data["prompt"] = sorted(data["prompt"])
    data["client_id"] = request.client.app_id
    return data


def request_from_json(data: dict[str, Any]) -> Any:
    """The AuthorizationRequest back, read against this worker's directory."""
    from entra_emulator.authorize_request import AuthorizationRequest
    from entra_emulator.context import current_state
    from entra_emulator.scopes import parse_scopes

    directory = current_state().directory
    data = dict(data)
    client = directory.application(data.pop("client_id"))
    if client is None:
        return None
    try:
        scopes = tuple(parse_scopes(data["scope"], directory))
    except Exception:   # the scope's API left the directory meanwhile
        return None
    return AuthorizationRequest(**{**data, "prompt": frozenset(data["prompt"])}, client=client,
                                scopes=scopes)
