"""The server-side session store (Flask-Session, on the filesystem or in Redis), with what
Flask-Session does not do by itself:

- a stored session expires when its sign-in does (SESSION_LIFETIME after it), however often it is
  rewritten, so the token cache inside never outlives the session;
- Redis being unreachable is a clear 503 page, never a stack trace, and the app recovers on its
  own when Redis answers again (redis-py reconnects on the next command);
- a per-session lock, and loading/saving a session at once rather than at the end of the request,
  for renewing tokens without losing a newer token cache (see auth.get_access_token).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import redis
from flask import Flask, Request, Response, g, render_template, request
from flask_session.base import ServerSideSession
from flask_session.cachelib import CacheLibSessionInterface
from flask_session.redis import RedisSessionInterface

from .errors import STORE_UNAVAILABLE, AppError, session_store_unavailable

log = logging.getLogger(__name__)

SIGNED_IN_AT = "signed_in_at"  # the session key auth.py stamps at sign-in; expiry counts from it
LOCK_POLL_SECONDS = 0.01


class SessionBusy(AppError):
    """Another request of the same session held its lock for too long."""

    def __init__(self) -> None:
        super().__init__(503, "Busy", "Another page of yours is renewing your sign-in right now.",
                         hint="Try again in a moment.", retry_after=5)


class SignInBoundSessions:
    """What both stores share (a mixin for Flask-Session's interfaces)."""

    def _upsert_session(self, session_lifetime: timedelta, session: ServerSideSession,
                        store_id: str) -> None:
        # Flask-Session gives every write the full lifetime; a signed-in session has only what
        # is left of it.
        signed_in_at = session.get(SIGNED_IN_AT)
        if isinstance(signed_in_at, int | float):
            left = signed_in_at + session_lifetime.total_seconds() - time.time()
            session_lifetime = timedelta(seconds=max(1, int(left) + 1))
        super()._upsert_session(session_lifetime, session, store_id)  # type: ignore[misc]

    def load_now(self, session_id: str) -> dict[str, Any] | None:
        """The session as stored right now (None if it is gone)."""
        return self._retrieve_session_data(self._get_store_id(session_id))  # type: ignore

    def save_now(self, app: Flask, session: ServerSideSession) -> None:
        """Write the session now, while its lock is held, so the next request to take the lock
        sees it. An emptied session is deleted, and stays marked modified so the end of the
        request also clears the cookie."""
        store_id = self._get_store_id(session.sid)  # type: ignore[attr-defined]
        if not session:
            self._delete_session(store_id)  # type: ignore[attr-defined]
            return
        self._upsert_session(app.permanent_session_lifetime, session, store_id)
        session.modified = False


class RedisSessions(SignInBoundSessions, RedisSessionInterface):
    """Sessions in Redis, shared by every process and instance."""

    def open_session(self, app: Flask, request: Request) -> ServerSideSession:
        try:
            return super().open_session(app, request)
        except STORE_UNAVAILABLE as exc:
            # Too early for an error page: keep the failure for stop_if_store_unavailable().
            g.session_store_error = exc
            return self.make_null_session(app)  # type: ignore[return-value]

    def save_session(self, app: Flask, session: ServerSideSession, response: Response) -> None:
        try:
            super().save_session(app, session, response)
        except STORE_UNAVAILABLE as exc:
            # The page is built but what it depends on was not saved (a sign-in, a sign-out):
            # answer with the 503 page instead, as if the store had failed earlier.
            log.warning("Session store unreachable while saving: %s", exc)
            error = session_store_unavailable()
            response.status_code = error.status
            response.set_data(render_template("error.html", error=error))
            response.mimetype = "text/html"
            response.headers.pop("Location", None)
            response.headers["Retry-After"] = str(error.retry_after)

    @contextlib.contextmanager
    def lock(self, session_id: str, seconds: float) -> Iterator[None]:
        """Hold the session's lock: a Redis lock (redis-py's SET NX PX with a token) whose lease
        ends after `seconds` even if its holder dies; waits at most as long."""
        lock = self.client.lock(f"lock:{self._get_store_id(session_id)}", timeout=seconds,
                                blocking_timeout=seconds, sleep=LOCK_POLL_SECONDS)
        if not lock.acquire():
            raise SessionBusy()
        try:
            yield
        finally:
            with contextlib.suppress(redis.exceptions.LockError):
                lock.release()  # not ours any more if the lease ran out: nothing to release


class FileSessions(SignInBoundSessions, CacheLibSessionInterface):
    """Sessions in files (cachelib's FileSystemCache): processes of one machine share them."""

    def __init__(self, *args: Any, lock_dir: Path, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lock_dir = lock_dir
        self.lock_dir.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def lock(self, session_id: str, seconds: float) -> Iterator[None]:
        """Hold the session's lock: a lock file created exclusively (O_EXCL: atomic, and
        portable, unlike flock), holding its owner's token and the end of its lease (`seconds`),
        after which a waiter takes it over, as from a holder that died. Waits at most
        `seconds`."""
        path = self.lock_dir / f"{hashlib.sha256(session_id.encode()).hexdigest()}.lock"
        token = secrets.token_hex(16)
        deadline = time.monotonic() + seconds
        while not _create(path, f"{token} {time.time() + seconds}"):
            if _lease_over(path, seconds):
                # Two waiters taking over the same dead lock at once could both win; that needs
                # a holder that died mid-renewal, and costs at worst a refused renewal.
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)
            elif time.monotonic() > deadline:
                raise SessionBusy()
            else:
                time.sleep(LOCK_POLL_SECONDS)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                if path.read_text().partition(" ")[0] == token:  # not if taken over meanwhile
                    os.remove(path)


def _create(path: Path, content: str) -> bool:
    try:
        descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(descriptor, "w") as lock_file:
        lock_file.write(content)
    return True


def _lease_over(path: Path, seconds: float) -> bool:
    try:
        expires = path.read_text().partition(" ")[2]
        if expires:
            return float(expires) < time.time()
        # Just created, its lease not written yet (or never, if its holder died right then).
        return path.stat().st_mtime + seconds < time.time()
    except (FileNotFoundError, ValueError):
        return False


def stop_if_store_unavailable() -> None:
    """First before_request: the 503 page when the session could not be read. Static files and
    /healthz do not need a session."""
    error = g.pop("session_store_error", None)
    if error is not None and request.endpoint not in ("static", "healthz"):
        raise error
