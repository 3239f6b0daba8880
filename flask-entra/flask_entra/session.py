"""The signed-in session: started at a successful sign-in (a new session id), read by a
before_request hook, ended one way only (end_session), expiring SESSION_LIFETIME after the
sign-in or after SESSION_IDLE_TIMEOUT without a request, whatever the tokens' lifetimes.

The session is Flask-Session's, configured as the `identity` package configures it (SESSION_TYPE
`filesystem`/`cachelib` or `redis`), so the host app keeps using `flask.session` for its own data.
The extension keeps one small entry in it (SESSION_KEY: the ID token's claims, the account id, a
CSRF token for sign-out, two timestamps); the token cache lives apart (tokens.py). The records
the extension adds (token caches, ended-session marks, locks) live in a Store beside it.

An ended session is marked in the store before it is deleted, and a session is never saved
once marked: a request that loaded it before the sign-out (another tab recording activity)
would otherwise write it back and sign the browser in again.
"""

from __future__ import annotations

import logging
import secrets
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from flask import Flask, Response, current_app, g, request, session
from flask.sessions import SessionMixin
from flask_session.cachelib import CacheLibSessionInterface

from .errors import render_error, store_unavailable
from .settings import Settings
from .store import (
    REDIS_UNAVAILABLE,
    FileStore,
    RedisStore,
    Store,
    StoreBusy,
    StoreUnavailable,
    redis_calls,
)

log = logging.getLogger(__name__)

SESSION_KEY = "flask_entra"
# Recording activity writes the session, so it is done at most this often, not every request.
ACTIVITY_RECORD_SECONDS = 60
# Longer than any request that could still hold a copy of an ended session.
ENDED_MARK_SECONDS = 3600
ENDED_PREFIX = "ended:"
TOKEN_CACHE_PREFIX = "tokens:"  # the session's token cache, a record of its own (tokens.py)
FILE_SESSIONS_THRESHOLD = 20_000  # cachelib's default (500) would evict signed-in users
SUPPORTED_TYPES = ("filesystem", "cachelib", "redis")
REDIS_TIMEOUT_SECONDS = 3


class EndedSessionGuard:
    """A mixin for Flask-Session's interfaces: an ended session is never saved again."""

    store: Store
    settings: Settings

    def _upsert_session(self, session_lifetime: timedelta, session: Any, store_id: str) -> None:
        # Flask-Session gives every write the full lifetime; a signed-in session is kept only as
        # long as stored_for says (what is left of it, and the idle timeout: checklist E6).
        entry = session.get(SESSION_KEY)
        if isinstance(entry, dict):
            session_lifetime = timedelta(seconds=stored_for(entry, self.settings, time.time()))
        super()._upsert_session(session_lifetime, session, store_id)  # type: ignore[misc]

    def save_session(self, app: Flask, session: Any, response: Response) -> None:
        # Not only a modified session: with SESSION_REFRESH_EACH_REQUEST (Flask's default) an
        # unmodified one is written back too, and would bring an ended session back.
        guarded = bool(session) and self.should_set_storage(app, session)  # type: ignore[attr-defined]
        if guarded and self.is_ended(session.sid):
            log.info("Not saving a session that has ended meanwhile")
            return
        super().save_session(app, session, response)  # type: ignore[misc]
        # Ended while this was written? Whoever ended it marked it before deleting, so either
        # that delete came after this write or this check sees the mark.
        if guarded and self.is_ended(session.sid):
            self.delete_stored(session.sid)

    def should_set_storage(self, app: Flask, session: Any) -> bool:
        # Flask's own rule: SESSION_REFRESH_EACH_REQUEST (default True) renews only a permanent
        # session. Flask-Session 0.8 would rewrite every session at every request (a file or a
        # Redis SET, plus two ended-mark reads, per page; two tabs overwriting each other).
        return session.modified or (session.permanent
                                    and app.config["SESSION_REFRESH_EACH_REQUEST"])

    def is_ended(self, sid: str) -> bool:
        return self.store.get(ENDED_PREFIX + sid) is not None

    def delete_stored(self, sid: str) -> None:
        raise NotImplementedError


class FileSessions(EndedSessionGuard, CacheLibSessionInterface):
    def delete_stored(self, sid: str) -> None:
        self.cache.delete(self.key_prefix + sid)


def _redis_sessions() -> type:
    from flask_session.redis import RedisSessionInterface

    class RedisSessions(EndedSessionGuard, RedisSessionInterface):
        """Redis being unreachable is the 503 page, never a stack trace; redis-py reconnects by
        itself once Redis answers again."""

        def open_session(self, app: Flask, request: Any) -> Any:
            try:
                return super().open_session(app, request)
            except REDIS_UNAVAILABLE:
                # Too early for an error page: raised by the first before_request instead.
                g._flask_entra_store_down = True
                return self.make_null_session(app)

        def save_session(self, app: Flask, session: Any, response: Response) -> None:
            try:
                super().save_session(app, session, response)
            except (*REDIS_UNAVAILABLE, StoreUnavailable):
                # The page is built, but what it depends on (a sign-in, a sign-out) was not
                # saved: answer with the 503 page instead.
                log.warning("Session store unreachable while saving the session")
                body, status, headers = render_error(store_unavailable())  # type: ignore[misc]
                response.status_code = status
                response.set_data(body)
                response.mimetype = "text/html"
                response.headers.pop("Location", None)
                response.headers.update(headers)

        def delete_stored(self, sid: str) -> None:
            with redis_calls():
                self.client.delete(self.key_prefix + sid)

    return RedisSessions


def raise_if_store_down() -> None:
    """The first before_request: the 503 page when the session could not be read (static
    files need no session: the 503 page's own stylesheet among them)."""
    if g.pop("_flask_entra_store_down", False) and request.endpoint != "static":
        raise StoreUnavailable("the session could not be read")


def configure_sessions(app: Flask, settings: Settings) -> Store:
    """Flask-Session on SESSION_TYPE, cookies secure by default, and the store beside it."""
    config = app.config
    session_type = str(config.get("SESSION_TYPE") or "filesystem").lower()
    if session_type not in SUPPORTED_TYPES:
        raise ValueError(f"flask_entra: SESSION_TYPE {session_type!r} is not supported; use "
                         "filesystem (or cachelib) or redis.")
    _secure_cookie_defaults(config, settings)
    # Written only when changed (sign-in, activity once a minute, sign-out), not every request.
    config.setdefault("SESSION_PERMANENT", False)
    if config.get("PERMANENT_SESSION_LIFETIME") == timedelta(days=31):  # Flask's default
        config["PERMANENT_SESSION_LIFETIME"] = timedelta(seconds=settings.session_lifetime)
    options = {"key_prefix": config.get("SESSION_KEY_PREFIX", "session:"),
               "use_signer": config.get("SESSION_USE_SIGNER", False),
               "permanent": config["SESSION_PERMANENT"],
               "sid_length": config.get("SESSION_ID_LENGTH", 32)}
    if session_type == "redis":
        client = config.get("SESSION_REDIS") or _default_redis()
        store: Store = RedisStore(client)
        interface = _redis_sessions()(app, client=client, **options)
    else:
        cache = config.get("SESSION_CACHELIB")
        directory = Path(config.get("SESSION_FILE_DIR") or "flask_session").resolve()
        if cache is None:
            from cachelib.file import FileSystemCache

            threshold = config.get("SESSION_FILE_THRESHOLD") or FILE_SESSIONS_THRESHOLD
            cache = FileSystemCache(str(directory), threshold=threshold, mode=0o600)
        store = FileStore(config.get("ENTRA_STORE_DIR") or f"{directory}-flask-entra")
        interface = FileSessions(app, client=cache, **options)
    interface.store = store
    interface.settings = settings
    app.session_interface = interface
    return store


def _default_redis() -> Any:
    import redis

    # redis-py waits without limit by default: a Redis that stops answering would hang workers.
    return redis.Redis(host="localhost", port=6379, socket_timeout=REDIS_TIMEOUT_SECONDS,
                       socket_connect_timeout=REDIS_TIMEOUT_SECONDS)


def _secure_cookie_defaults(config: Any, settings: Settings) -> None:
    """Cookie settings still at Flask's defaults become safe ones; the host's own stay."""
    if config.get("SESSION_COOKIE_SAMESITE") is None:
        # Lax, not Strict: the return from the identity provider is a cross-site navigation.
        config["SESSION_COOKIE_SAMESITE"] = "Lax"
    if settings.uses_https:
        if not config.get("SESSION_COOKIE_SECURE"):
            config["SESSION_COOKIE_SECURE"] = True
        if config.get("SESSION_COOKIE_NAME") == "session" and not config.get(
                "SESSION_COOKIE_DOMAIN"):
            config["SESSION_COOKIE_NAME"] = "__Host-session"


# --------------------------------------------------------------------------------------------
# Start, read, end
# --------------------------------------------------------------------------------------------

def start_session(claims: dict[str, Any], account_id: str) -> None:
    """Fill this request's session (already given a new id) for the signed-in user."""
    now = int(time.time())
    session[SESSION_KEY] = {"claims": claims, "account": account_id,
                            "csrf": secrets.token_urlsafe(32), "signed_in_at": now,
                            "last_seen": now}


def load_signed_in_user(settings: Settings) -> dict[str, Any] | None:
    """The before_request step: the signed-in user's claims (also kept in g), or None. Ends a
    session past its lifetime or idle timeout; records activity at most once a minute."""
    entry = session.get(SESSION_KEY)
    if not isinstance(entry, dict):
        return None
    now = time.time()
    idle = now - entry.get("last_seen", 0)
    if now - entry.get("signed_in_at", 0) > settings.session_lifetime or (
            idle > settings.session_idle_timeout):
        end_session()
        return None
    if idle > ACTIVITY_RECORD_SECONDS:
        session[SESSION_KEY] = {**entry, "last_seen": int(now)}
        _keep_token_cache(session[SESSION_KEY], settings, now)
    g._flask_entra_session = entry
    return entry["claims"]


def stored_for(entry: dict[str, Any], settings: Settings, now: float) -> int:
    """How long (s) the store keeps a signed-in session and its token cache from `now`: what is
    left of its lifetime, and no longer than the idle timeout after its last recorded request
    (plus the minute by which that record may lag), so a browser that never comes back leaves
    no session and no refresh token behind (checklist E6)."""
    ends = min(entry.get("signed_in_at", 0) + settings.session_lifetime,
               entry.get("last_seen", now) + settings.session_idle_timeout
               + ACTIVITY_RECORD_SECONDS)
    return max(1, int(ends - now) + 1)


def _keep_token_cache(entry: dict[str, Any], settings: Settings, now: float) -> None:
    """Recorded activity keeps the token cache as long as the session (stored_for); under the
    renewal lock, so a renewal's newer cache is never overwritten with this older copy."""
    store: Store = current_app.session_interface.store  # type: ignore[attr-defined]
    key = TOKEN_CACHE_PREFIX + session_id()
    try:
        with store.lock("renew:" + session_id(), 10, wait=0):
            sealed = store.get(key)
            if sealed is not None:
                write_token_cache(store, session_id(), sealed, stored_for(entry, settings, now))
    except StoreBusy:
        pass  # a renewal holds it, and saves the cache with a new time to live itself


def write_token_cache(store: Store, sid: str, sealed: bytes, ttl: int) -> None:
    """Store a session's sealed token cache. Ended while this was written (a sign-out during a
    renewal)? Whoever ended it marked it before deleting the record: either that delete came
    after this write, or this check sees the mark. An ended session's refresh token must not
    stay behind."""
    store.set(TOKEN_CACHE_PREFIX + sid, sealed, ttl)
    if store.get(ENDED_PREFIX + sid) is not None:
        store.delete(TOKEN_CACHE_PREFIX + sid)


def current_entry() -> dict[str, Any] | None:
    return g.get("_flask_entra_session")


def session_id() -> str:
    return session.sid  # type: ignore[attr-defined]


def end_session(sid: str | None = None) -> None:
    """The one way a session ends (sign-out, expiry, a refused refresh, back-channel logout, a
    new sign-in in the same browser): marked ended, its token cache and record deleted, and if
    it is this request's, this request's copy cleared (Flask-Session then clears the cookie)."""
    interface = current_app.session_interface
    own = sid is None or sid == session_id()
    sid = session_id() if sid is None else sid
    store: Store = interface.store  # type: ignore[attr-defined]
    store.set(ENDED_PREFIX + sid, b"1", ENDED_MARK_SECONDS)
    store.delete(TOKEN_CACHE_PREFIX + sid)
    interface.delete_stored(sid)  # type: ignore[attr-defined]
    if own:
        _clear(session)
        g.pop("_flask_entra_session", None)


def _clear(current: SessionMixin) -> None:
    current.clear()
    current.modified = True
