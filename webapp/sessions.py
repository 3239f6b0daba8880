"""The server-side session store (Flask-Session, on the filesystem or in Redis), with what
Flask-Session does not do by itself:

- the file store keeps each process's recently read sessions decoded in memory, checked against a
  generation that every process renews when it writes a session (RecentSessions), so a page of a
  signed-in user costs no file read;

- a stored session expires when its sign-in does (SESSION_LIFETIME after it), however often it is
  rewritten, so the token cache inside never outlives the session;
- Redis being unreachable is a clear 503 page, never a stack trace, and the app recovers on its
  own when Redis answers again (redis-py reconnects on the next command);
- a per-session lock, and loading/saving a session at once rather than at the end of the request,
  for renewing tokens without losing a newer token cache (see tokens.get_access_token).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import mmap
import os
import pickle
import secrets
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import redis
from cachelib.base import BaseCache
from cachelib.file import FileSystemCache
from flask import Flask, Request, Response, g, render_template, request
from flask_session.base import ServerSideSession
from flask_session.cachelib import CacheLibSessionInterface
from flask_session.redis import RedisSessionInterface

from .config import Settings
from .errors import STORE_UNAVAILABLE, AppError, session_store_unavailable

log = logging.getLogger(__name__)

SIGNED_IN_AT = "signed_in_at"  # the session key auth.py stamps at sign-in; expiry counts from it
LAST_SEEN = "last_seen"  # stamped at sign-in, then by a request at most every ACTIVITY_RECORD_...
# How stale LAST_SEEN may get: recording activity writes the stored session, so it is done at
# most this often, not on every request. SESSION_IDLE_TIMEOUT is at least twice as long.
ACTIVITY_RECORD_SECONDS = 60
LOCK_POLL_SECONDS = 0.01
ENDED_PREFIX = "ended:"
# How long an ended session's mark lasts: only a request already holding a copy can write a
# session back (a new request finds nothing and starts another session id), and no request lasts
# nearly this long (gunicorn's timeout, a renewal's lease).
ENDED_MARK_SECONDS = 3600
REDIS_TIMEOUT_SECONDS = 3


class SessionBusy(AppError):
    """Another request of the same session held its lock for too long."""

    def __init__(self) -> None:
        super().__init__(503, "Busy", "Another page of yours is renewing your sign-in right now.",
                         hint="Try again in a moment.", retry_after=5)


class SignInBoundSessions:
    """What both stores share (a mixin for Flask-Session's interfaces)."""

    idle_timeout: float | None = None  # SESSION_IDLE_TIMEOUT, set by configure_session_store

    def _delete_session(self, store_id: str) -> None:
        # Marked ended for good, and before it goes: a request that still holds a copy (a token
        # renewal in another tab, a page that changed its session) must not write it back after
        # a sign-out. See _upsert_session for why the mark comes first.
        self._mark_ended(ENDED_PREFIX + store_id)
        super()._delete_session(store_id)  # type: ignore[misc]

    def _upsert_session(self, session_lifetime: timedelta, session: ServerSideSession,
                        store_id: str) -> None:
        ended = ENDED_PREFIX + store_id
        if self._is_marked_ended(ended):
            log.info("Not saving a session that has ended meanwhile")
            return
        self._write_session(session_lifetime, session, store_id)
        # Ended while this was being written? Whoever ended it marked it before deleting, so
        # either that delete came after this write, or this check sees the mark: no order of
        # the two leaves the session stored.
        if self._is_marked_ended(ended):
            super()._delete_session(store_id)  # type: ignore[misc]

    def _write_session(self, session_lifetime: timedelta, session: ServerSideSession,
                       store_id: str) -> None:
        # Flask-Session gives every write the full lifetime; a signed-in session has only what
        # is left of it, and ends in the store too when left idle (not only at the next request).
        signed_in_at = session.get(SIGNED_IN_AT)
        if isinstance(signed_in_at, int | float):
            ends = signed_in_at + session_lifetime.total_seconds()
            last_seen = session.get(LAST_SEEN)
            if self.idle_timeout and isinstance(last_seen, int | float):
                ends = min(ends, last_seen + self.idle_timeout + ACTIVITY_RECORD_SECONDS)
            session_lifetime = timedelta(seconds=max(1, int(ends - time.time()) + 1))
        super()._upsert_session(session_lifetime, session, store_id)  # type: ignore[misc]

    def load_now(self, session_id: str) -> dict[str, Any] | None:
        """The session as stored right now (None if it is gone), read from the store itself."""
        return self._retrieve_session_data(self._get_store_id(session_id))  # type: ignore

    def delete_now(self, session_id: str) -> None:
        """Delete the stored session, for good (Flask-Session has no public call for this)."""
        self._delete_session(self._get_store_id(session_id))  # type: ignore[attr-defined]

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

    def _mark_ended(self, key: str) -> None:
        self.client.set(key, b"1", ex=ENDED_MARK_SECONDS)

    def _is_marked_ended(self, key: str) -> bool:
        return bool(self.client.exists(key))

    @contextlib.contextmanager
    def lock(self, session_id: str, seconds: float, wait: float | None = None
             ) -> Iterator[None]:
        """Hold the session's lock: a Redis lock (redis-py's SET NX PX with a token) whose lease
        ends after `seconds` even if its holder dies; waits at most `wait` (default: as long)."""
        lock = self.client.lock(f"lock:{self._get_store_id(session_id)}", timeout=seconds,
                                blocking_timeout=seconds if wait is None else wait,
                                sleep=LOCK_POLL_SECONDS)
        if not lock.acquire():
            raise SessionBusy()
        try:
            yield
        finally:
            with contextlib.suppress(redis.exceptions.LockError):
                lock.release()  # not ours any more if the lease ran out: nothing to release


class FileSessions(SignInBoundSessions, CacheLibSessionInterface):
    """Sessions in files (cachelib's FileSystemCache): processes of one machine share them."""

    def __init__(self, *args: Any, lock_dir: Path, ended_dir: Path, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lock_dir = lock_dir
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        self.recent = RecentSessions(lock_dir / "generations")
        # Apart from the sessions, so that marks never count towards the sessions' threshold
        # (past it, cachelib would evict sessions and sign users out).
        self.ended_marks = FileSystemCache(str(ended_dir), threshold=200000, mode=0o600)

    def _mark_ended(self, key: str) -> None:
        if not self.ended_marks.set(key, True, timeout=ENDED_MARK_SECONDS):
            # The session itself is gone; only the guard against a late write-back is missing.
            log.warning("Could not mark an ended session in the file store")

    def _is_marked_ended(self, key: str) -> bool:
        return self.ended_marks.has(key)

    def load_now(self, session_id: str) -> dict[str, Any] | None:
        # Never from memory: what renewals read under the lock must be the file, whatever
        # happened to the generations file.
        return super()._retrieve_session_data(self._get_store_id(session_id))

    def _retrieve_session_data(self, store_id: str) -> dict[str, Any] | None:
        # The generation is read before the file: a write that lands after it bumps it again.
        generation = self.recent.generation(store_id)
        data = self.recent.get(store_id, generation)
        if data is None:
            data = super()._retrieve_session_data(store_id)
            if data is not None:
                self.recent.put(store_id, generation, data)
        return data

    def _upsert_session(self, session_lifetime: timedelta, session: ServerSideSession,
                        store_id: str) -> None:
        super()._upsert_session(session_lifetime, session, store_id)
        self.recent.changed(store_id)

    def _delete_session(self, store_id: str) -> None:
        super()._delete_session(store_id)
        self.recent.changed(store_id)

    @contextlib.contextmanager
    def lock(self, session_id: str, seconds: float, wait: float | None = None
             ) -> Iterator[None]:
        """Hold the session's lock: a lock file created exclusively (O_EXCL: atomic, and
        portable, unlike flock), holding its owner's token and the end of its lease (`seconds`),
        after which a waiter takes it over, as from a holder that died. Waits at most `wait`
        (default: `seconds`)."""
        path = self.lock_dir / f"{hashlib.sha256(session_id.encode()).hexdigest()}.lock"
        token = secrets.token_hex(16)
        deadline = time.monotonic() + (seconds if wait is None else wait)
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


class RecentSessions:
    """The sessions this process read lately, kept decoded, for the file store.

    Reading a session file costs a signed-in page more than everything else it does (open, read,
    unpickle: system calls that also hand the GIL to the worker's other threads). A copy kept in
    memory is used while the session's generation is unchanged: 8 bytes in a small file that
    every process maps into memory (so reading it is no system call) and overwrites with new
    random bytes after it writes or deletes the session. Sessions share GENERATION_SLOTS
    generations by a stable hash of their id, so another session's write costs at worst one
    extra read. A copy is also dropped after MAX_AGE_SECONDS, so what the file store does by
    itself (expiry, pruning) shows within that time; a signed-in session's own end is checked on
    every request (auth.current_user). Should the generations file be deleted or replaced
    (someone clearing the session folder), each process notices within FILE_CHECK_SECONDS, maps
    the new one and forgets its copies."""

    GENERATION_SLOTS = 8192
    CAPACITY = 2000
    MAX_AGE_SECONDS = 60
    FILE_CHECK_SECONDS = 1

    def __init__(self, generations_path: Path) -> None:
        self._path = generations_path
        self._lock = threading.Lock()
        # store id -> (generation, monotonic deadline, pickled session); pickled, so a request
        # that changes a nested value in its session cannot change another request's copy.
        self._entries: dict[str, tuple[bytes, float, bytes]] = {}
        self._generations, self._file_id = _shared_memory(generations_path,
                                                          self.GENERATION_SLOTS * 8)
        self._check_file_at = time.monotonic() + self.FILE_CHECK_SECONDS

    def generation(self, store_id: str) -> bytes:
        if time.monotonic() > self._check_file_at:
            self._check_file()
        at = self._slot(store_id)
        return self._generations[at:at + 8]

    def get(self, store_id: str, generation: bytes) -> dict[str, Any] | None:
        entry = self._entries.get(store_id)
        if entry is None or entry[0] != generation or entry[1] < time.monotonic():
            return None
        return pickle.loads(entry[2])  # noqa: S301 - pickled by this process, from memory

    def put(self, store_id: str, generation: bytes, data: dict[str, Any]) -> None:
        entry = (generation, time.monotonic() + self.MAX_AGE_SECONDS,
                 pickle.dumps(data, pickle.HIGHEST_PROTOCOL))
        with self._lock:
            if store_id not in self._entries and len(self._entries) >= self.CAPACITY:
                del self._entries[next(iter(self._entries))]  # first in, first out
            self._entries[store_id] = entry

    def changed(self, store_id: str) -> None:
        """After this process wrote or deleted the session: every process's copy is stale."""
        self._check_file()  # a replaced file would not tell the processes that mapped the new one
        at = self._slot(store_id)
        self._generations[at:at + 8] = secrets.token_bytes(8)
        with self._lock:
            self._entries.pop(store_id, None)

    def _slot(self, store_id: str) -> int:
        # crc32, not hash(): the slot must be the same in every process.
        return zlib.crc32(store_id.encode()) % self.GENERATION_SLOTS * 8

    def _check_file(self) -> None:
        with self._lock:
            self._check_file_at = time.monotonic() + self.FILE_CHECK_SECONDS
            try:
                stat = os.stat(self._path)
                same = (stat.st_dev, stat.st_ino) == self._file_id
            except FileNotFoundError:
                same = False
            if not same:
                log.warning("The session generations file was replaced; mapping it again")
                self._generations, self._file_id = _shared_memory(
                    self._path, self.GENERATION_SLOTS * 8)
                self._entries.clear()


def _shared_memory(path: Path, size: int) -> tuple[mmap.mmap, tuple[int, int]]:
    """`size` bytes of `path` mapped into memory, shared with every process that maps it, and the
    file's identity (device, inode)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        stat = os.fstat(descriptor)
        if stat.st_size < size:
            os.ftruncate(descriptor, size)  # zeros; a no-op when another process was first
        return mmap.mmap(descriptor, size), (stat.st_dev, stat.st_ino)
    finally:
        os.close(descriptor)


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


@dataclass(frozen=True)
class Records:
    """Server-side records beside the sessions, on the same store, so every process and
    instance sharing the sessions shares them too."""

    sign_ins: BaseCache  # pending sign-ins: anyone can start one, so the file store caps them
    session_index: BaseCache  # back-channel logout's index and used jtis: never evicted early


def configure_session_store(app: Flask, settings: Settings) -> Records:
    """Set up Flask-Session on the configured store, and the records beside it. The one place to
    extend for another store."""
    cookie_name = "__Host-session" if settings.uses_https else "session"
    app.config.update(
        SESSION_COOKIE_NAME=cookie_name,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SECURE=settings.uses_https,
        # Lax, not Strict: the return from the identity provider is a cross-site navigation.
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_PATH="/",
        SESSION_COOKIE_DOMAIN=None,
        # A browser-session cookie; the server-side entry expires after SESSION_LIFETIME.
        SESSION_PERMANENT=False,
        PERMANENT_SESSION_LIFETIME=settings.session_lifetime,
        # Write the store only when the session changed, not on every request.
        SESSION_REFRESH_EACH_REQUEST=False,
        SESSION_KEY_PREFIX="session:",
    )
    # Flask-Session's own interfaces, built as its Session(app) builds them from these settings,
    # with what webapp/sessions.py adds (expiry with the sign-in, the 503 page, the lock).
    options = {"key_prefix": app.config["SESSION_KEY_PREFIX"],
               "permanent": app.config["SESSION_PERMANENT"]}
    if settings.session_type == "redis":
        import redis
        from cachelib.redis import RedisCache

        # A Redis that stops answering must cost a request seconds, not a worker forever (redis-py
        # waits without limit by default). Options in REDIS_URL's query take precedence.
        client = redis.Redis.from_url(settings.redis_url,
                                      socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
                                      socket_timeout=REDIS_TIMEOUT_SECONDS)
        app.config.update(SESSION_TYPE="redis", SESSION_REDIS=client)
        records = Records(sign_ins=RedisCache(host=client, key_prefix="webapp:"),
                          session_index=RedisCache(host=client, key_prefix="webapp:index:"))
        app.session_interface = RedisSessions(app, client=client, **options)
        app.before_request(stop_if_store_unavailable)
    else:
        directory = Path(settings.session_file_dir).resolve()
        # A large threshold: cachelib evicts entries beyond it, which would sign users out.
        sessions = FileSystemCache(str(directory), threshold=20000, mode=0o600)
        # Past its threshold cachelib evicts what expires soonest. Pending sign-ins can be
        # started by anyone, so they get a cap of their own; the index only grows with sign-ins
        # and provider-signed logout tokens, and its threshold only bounds expired files.
        records = Records(
            sign_ins=FileSystemCache(str(directory / "sign-ins"), threshold=20000, mode=0o600),
            session_index=FileSystemCache(str(directory / "session-index"), threshold=200000,
                                          mode=0o600))
        app.config.update(SESSION_TYPE="cachelib", SESSION_CACHELIB=sessions)
        app.session_interface = FileSessions(app, client=sessions, lock_dir=directory / "locks",
                                             ended_dir=directory / "ended", **options)
    app.session_interface.idle_timeout = settings.session_idle_timeout
    return records
