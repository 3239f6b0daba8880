"""The small storage interface the extension keeps its own records in, beside the sessions:

  get / set(ttl) / delete   token caches (sealed) and ended-session marks
  claim_once(key, until)    single use of a sign-in response: True for the first caller only
  lock(key, seconds)        a per-session lock that holds across processes and instances

Two implementations, chosen by the session type: files (cachelib's FileSystemCache plus lock
files, for the processes of one machine) and Redis (every instance sharing it). Both only ever
hold records a signed-in user or a verified sign-in response made: nothing an anonymous request
sends is stored.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from cachelib.file import FileSystemCache

try:
    import redis

    # Redis refusing connections, gone, or not answering in time (its socket timeouts).
    REDIS_UNAVAILABLE: tuple[type[Exception], ...] = (redis.exceptions.ConnectionError,
                                                      redis.exceptions.TimeoutError)
except ImportError:  # without the [redis] extra only the file store exists
    redis = None  # type: ignore[assignment]
    REDIS_UNAVAILABLE = ()

LOCK_POLL_SECONDS = 0.01
# Records are bounded by signed-in use (a token cache per session, a mark per sign-out); past
# this many files cachelib removes expired ones first. Sessions live in their own folder.
FILE_RECORDS_THRESHOLD = 100_000


class StoreBusy(Exception):
    """A lock was not obtained in time."""


class StoreUnavailable(Exception):
    """The store could not be read or written."""


class Store(Protocol):
    def get(self, key: str) -> bytes | None: ...
    def set(self, key: str, value: bytes, ttl: int) -> None: ...
    def delete(self, key: str) -> None: ...
    def claim_once(self, key: str, until: float) -> bool: ...
    def lock(self, key: str, seconds: float, wait: float | None = None
             ) -> contextlib.AbstractContextManager[None]: ...


class FileStore:
    """Records in files under `directory` (mode 0600), for the processes of one machine."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._records = FileSystemCache(str(self.directory / "records"),
                                        threshold=FILE_RECORDS_THRESHOLD, mode=0o600)
        self._locks = self.directory / "locks"
        self._once = self.directory / "once"
        for folder in (self._locks, self._once):
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)

    def get(self, key: str) -> bytes | None:
        value = self._records.get(key)
        return value if isinstance(value, bytes) else None

    def set(self, key: str, value: bytes, ttl: int) -> None:
        if not self._records.set(key, value, timeout=max(1, int(ttl))):
            raise StoreUnavailable(f"could not write {self.directory}")

    def delete(self, key: str) -> None:
        self._records.delete(key)

    def claim_once(self, key: str, until: float) -> bool:
        """A file created exclusively (atomic on every local file system) in a folder per
        minute of expiry; whole folders are removed once their minute has passed, so a claim
        costs O(1) however many there were, and none outlives its `until` by over a minute."""
        minute = int(until // 60) + 1
        folder = self._once / str(minute)
        folder.mkdir(exist_ok=True, mode=0o700)
        self._purge_once(before=int(time.time() // 60))
        try:
            os.close(os.open(folder / _digest(key), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            return False
        except FileNotFoundError:  # its minute passed while we were here: expired anyway
            return False
        return True

    def _purge_once(self, before: int) -> None:
        for entry in os.scandir(self._once):
            if entry.name.isdigit() and int(entry.name) < before:
                shutil.rmtree(entry.path, ignore_errors=True)

    @contextlib.contextmanager
    def lock(self, key: str, seconds: float, wait: float | None = None) -> Iterator[None]:
        """A lock file created exclusively (O_EXCL), holding its owner's token and the end of its
        lease, after which a waiter takes it over as from a holder that died. Waits at most
        `wait` (default: `seconds`), then raises StoreBusy."""
        path = self._locks / f"{_digest(key)}.lock"
        token = secrets.token_hex(16)
        deadline = time.monotonic() + (seconds if wait is None else wait)
        while not _create(path, f"{token} {time.time() + seconds}"):
            if _lease_over(path, seconds):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)
            elif time.monotonic() > deadline:
                raise StoreBusy()
            else:
                time.sleep(LOCK_POLL_SECONDS)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                if path.read_text().partition(" ")[0] == token:  # not if taken over meanwhile
                    os.remove(path)


class RedisStore:
    """Records in Redis under `prefix`, shared by every process and instance."""

    def __init__(self, client: redis.Redis, prefix: str = "flask_entra:") -> None:
        self.client = client
        self.prefix = prefix

    def get(self, key: str) -> bytes | None:
        with redis_calls():
            return self.client.get(self.prefix + key)

    def set(self, key: str, value: bytes, ttl: int) -> None:
        with redis_calls():
            self.client.set(self.prefix + key, value, ex=max(1, int(ttl)))

    def delete(self, key: str) -> None:
        with redis_calls():
            self.client.delete(self.prefix + key)

    def claim_once(self, key: str, until: float) -> bool:
        with redis_calls():
            return bool(self.client.set(self.prefix + "once:" + _digest(key), b"1", nx=True,
                                        exat=int(until) + 1))

    @contextlib.contextmanager
    def lock(self, key: str, seconds: float, wait: float | None = None) -> Iterator[None]:
        """redis-py's lock (SET NX PX with a token): its lease ends after `seconds` even if its
        holder dies; waits at most `wait` (default: `seconds`), then raises StoreBusy."""
        lock = self.client.lock(f"{self.prefix}lock:{_digest(key)}", timeout=seconds,
                                blocking_timeout=seconds if wait is None else wait,
                                sleep=LOCK_POLL_SECONDS)
        with redis_calls():
            acquired = lock.acquire()
        if not acquired:
            raise StoreBusy()
        try:
            yield
        finally:
            with contextlib.suppress(redis.exceptions.LockError, *REDIS_UNAVAILABLE):
                lock.release()  # not ours any more if the lease ran out: nothing to release


@contextlib.contextmanager
def redis_calls() -> Iterator[None]:
    try:
        yield
    except REDIS_UNAVAILABLE as exc:
        raise StoreUnavailable(str(exc)) from None


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


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
