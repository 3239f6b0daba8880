"""What the stores (state.py, signin_state.py) build on: the clock, random credentials and their
digests, purging expired rows, and records as JSON."""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from typing import Any

from entra_emulator.db import StateDB

# Expired rows are purged at most this often (clock seconds) by each store of each process.
PURGE_INTERVAL_SECONDS = 1.0


class Clock:
    """Wall-clock seconds, with an offset tests can move to watch things expire. The offset is
    shared through the state database; EmulatorState.sync() reads it at each request."""

    def __init__(self, db: StateDB | None = None) -> None:
        self._db = db
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self._set(self.offset + seconds, float(seconds))

    def reset(self) -> None:
        self._set(0.0, None)

    def sync(self, offset: float) -> None:
        self.offset = offset

    def _set(self, local: float, add: float | None) -> None:
        if self._db is None:
            self.offset = local
            return
        with self._db.write() as connection:
            if add is None:
                connection.execute("UPDATE shared SET clock_offset = 0")
            else:
                connection.execute("UPDATE shared SET clock_offset = clock_offset + ?", (add,))
            self.offset = connection.execute("SELECT clock_offset FROM shared").fetchone()[0]


def random_token(size: int) -> str:
    """`size` random bytes, base64url: opaque credentials and the unique values in tokens."""
    return secrets.token_urlsafe(size)


def opaque_token(prefix: str = "1.A") -> str:
    """An opaque credential shaped like Entra's ("0.AXkA…" / "1.AXkA…")."""
    return prefix + random_token(64)


def digest(token: str) -> str:
    # Stores hold a hash, never the credential itself.
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class Purge:
    """Deletes a table's expired rows, at most once per PURGE_INTERVAL_SECONDS of clock time
    in this process: one indexed range delete, whatever the table holds. `sql` has one
    parameter: the clock's time less `keep` seconds."""

    def __init__(self, db: StateDB, clock: Clock, sql: str, keep: float = 0) -> None:
        self._db, self._clock, self._sql, self._keep = db, clock, sql, keep
        self._next = 0.0

    def __call__(self, connection: Any = None) -> None:
        now = self._clock.now()
        if now < self._next:
            return
        self._next = now + PURGE_INTERVAL_SECONDS
        if connection is None:
            self._db.run(self._sql, (now - self._keep,))
        else:
            connection.execute(self._sql, (now - self._keep,))


def record_from_text(cls: Any, text: str, **extra: Any) -> Any:
    """A record dataclass from its JSON (`granted` back to a frozenset)."""
    data = json.loads(text)
    data["granted"] = frozenset(data["granted"])
    return cls(**data, **extra)


def record_text(record: Any, *leave_out: str) -> str:
    """A record dataclass as JSON, without the fields kept in columns of their own."""
    data = {name: getattr(record, name) for name in record.__dataclass_fields__
            if name not in leave_out}
    data["granted"] = sorted(data["granted"])
    return json.dumps(data, separators=(",", ":"))
