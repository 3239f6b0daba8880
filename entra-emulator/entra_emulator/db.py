"""The emulator's state database: one SQLite file (`state.sqlite3`, WAL mode) in the state
folder, shared by every worker process and every thread.

Everything a request may need that another request (on another worker) created lives here:
sign-ins in progress, codes, refresh tokens, revocations, SSO sessions, consents, signing keys,
faults, defects, the test clock and run-time directory changes. The stores in state.py,
signin_state.py, keys.py, faults.py and defects.py keep their Python interfaces on top of it.

Each thread has its own connection (sqlite3 connections are not shared between threads);
a write that reads first runs in `BEGIN IMMEDIATE`, so two workers never interleave it.

The file says what it is: `PRAGMA application_id` marks it as the emulator's and
`PRAGMA user_version` is its schema version. A file of another program, or of a newer schema,
is refused with a message that says what to do; the JSON files of the emulator before 0.3
(signing_keys.json, consents.json) are imported once and renamed `*.migrated`.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DB_FILE = "state.sqlite3"
APPLICATION_ID = 0x456D4E54   # "EmNT"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 10_000
# The state folder of entra-emulator 0.2 and earlier: imported, then renamed.
OLD_KEYS_FILE = "signing_keys.json"
OLD_CONSENTS_FILE = "consents.json"

SCHEMA = """
CREATE TABLE shared (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    clock_offset REAL NOT NULL DEFAULT 0,
    keys_generation INTEGER NOT NULL DEFAULT 0,
    directory_generation INTEGER NOT NULL DEFAULT 0,
    directory TEXT,            -- the directory document changed at run time (JSON), or NULL
    directory_source TEXT
);
INSERT INTO shared (id) VALUES (1);
CREATE TABLE signing_keys (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, kid TEXT NOT NULL,
    private_key TEXT NOT NULL, certificate TEXT NOT NULL);
CREATE TABLE consents (
    user_id TEXT NOT NULL, app_id TEXT NOT NULL, permissions TEXT NOT NULL,
    PRIMARY KEY (user_id, app_id));
CREATE TABLE codes (
    key TEXT PRIMARY KEY, record TEXT NOT NULL, client_id TEXT NOT NULL, sid TEXT NOT NULL,
    redeemed INTEGER NOT NULL DEFAULT 0, reused INTEGER NOT NULL DEFAULT 0,
    families TEXT NOT NULL DEFAULT '[]', utis TEXT NOT NULL DEFAULT '[]',
    forget_at REAL NOT NULL);
CREATE INDEX codes_forget_at ON codes (forget_at);
CREATE INDEX codes_sid ON codes (sid);
CREATE TABLE refresh_tokens (
    key TEXT PRIMARY KEY, family TEXT NOT NULL, client_id TEXT NOT NULL, sid TEXT NOT NULL,
    record TEXT NOT NULL, used INTEGER NOT NULL DEFAULT 0, expires_at REAL NOT NULL);
CREATE INDEX refresh_tokens_expires_at ON refresh_tokens (expires_at);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family);
CREATE INDEX refresh_tokens_sid ON refresh_tokens (sid);
CREATE TABLE revoked_families (family TEXT PRIMARY KEY, until REAL NOT NULL);
CREATE INDEX revoked_families_until ON revoked_families (until);
CREATE TABLE revoked_access_tokens (uti TEXT PRIMARY KEY, until REAL NOT NULL);
CREATE INDEX revoked_access_tokens_until ON revoked_access_tokens (until);
CREATE TABLE sessions (
    key TEXT PRIMARY KEY, seq INTEGER NOT NULL, sid TEXT NOT NULL, session_state TEXT NOT NULL,
    user_id TEXT NOT NULL, auth_time INTEGER NOT NULL, last_used REAL NOT NULL);
CREATE UNIQUE INDEX sessions_seq ON sessions (seq);
CREATE INDEX sessions_last_used ON sessions (last_used);
CREATE TABLE pending (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, ctx TEXT NOT NULL UNIQUE, record TEXT NOT NULL,
    created_at REAL NOT NULL);
CREATE INDEX pending_created_at ON pending (created_at);
CREATE TABLE faults (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, target TEXT NOT NULL, kind TEXT NOT NULL,
    retry_after REAL, delay_seconds REAL);
CREATE TABLE defects (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, client_key TEXT NOT NULL, defect TEXT NOT NULL);
"""
# Device authorizations (device_code.py): added within schema 1, so also created in a file that
# predates them (idempotent, at every open).
DEVICE_CODES_SCHEMA = """
CREATE TABLE IF NOT EXISTS device_codes (
    key TEXT PRIMARY KEY, id TEXT NOT NULL UNIQUE, user_code TEXT NOT NULL UNIQUE,
    record TEXT NOT NULL, forget_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS device_codes_forget_at ON device_codes (forget_at);
"""
# What a reset of the emulator between tests empties (consents and keys are put back instead).
VOLATILE_TABLES = ("codes", "refresh_tokens", "revoked_families", "revoked_access_tokens",
                   "sessions", "pending", "faults", "defects", "device_codes")


class StateError(RuntimeError):
    """The state folder cannot be used; the message says why and what to do."""


class StateDB:
    """The state database at `path`, or a private in-memory one (path None: for stores built
    on their own, as unit tests do)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._local = threading.local()
        # Every thread's connection, so that stopping the emulator closes them all (a thread
        # of the test that started it may outlive it, and keep its connection open).
        self._opened: list[sqlite3.Connection] = []
        self._opened_lock = threading.Lock()
        self._memory: sqlite3.Connection | None = None
        self._memory_lock = threading.RLock()
        if path is None:
            self._memory = sqlite3.connect(":memory:", isolation_level=None,
                                           check_same_thread=False)
            _create(self._memory)
        else:
            _prepare(path)

    @classmethod
    def open(cls, state_dir: str | Path) -> StateDB:
        """The state folder's database, created (or imported from an older layout) if need be.
        StateError when the folder holds something this version cannot use."""
        folder = Path(state_dir)
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        db = cls(folder / DB_FILE)
        _import_old_files(db, folder)
        return db

    @classmethod
    def in_memory(cls) -> StateDB:
        return cls(None)

    def connection(self) -> sqlite3.Connection:
        if self._memory is not None:
            return self._memory
        connection = getattr(self._local, "connection", None)
        if connection is None:
            assert self.path is not None
            connection = _connect(self.path)
            self._local.connection = connection
            with self._opened_lock:
                self._opened.append(connection)
        return connection

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that holds the write lock from its start (BEGIN IMMEDIATE): what
        it reads cannot change before it commits."""
        with self._memory_lock if self._memory is not None else contextlib.nullcontext():
            connection = self.connection()
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
                connection.execute("COMMIT")
            except BaseException:
                # (SQLite may have rolled back already, after an I/O error: then there is
                # nothing to undo, and the connection must not be left inside a transaction.)
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise

    def run(self, sql: str, params: tuple | list = ()) -> int:
        """One statement in its own transaction (autocommit); the number of rows it changed."""
        with self._memory_lock if self._memory is not None else contextlib.nullcontext():
            return self.connection().execute(sql, params).rowcount

    def one(self, sql: str, params: tuple | list = ()) -> Any:
        """The first row of a statement's answer (None when there is none)."""
        with self._memory_lock if self._memory is not None else contextlib.nullcontext():
            # fetchall: a statement (an UPDATE ... RETURNING) ends, and commits, only once
            # every row is read.
            rows = self.connection().execute(sql, params).fetchall()
            return rows[0] if rows else None

    def all(self, sql: str, params: tuple | list = ()) -> list[Any]:
        with self._memory_lock if self._memory is not None else contextlib.nullcontext():
            return self.connection().execute(sql, params).fetchall()

    def close(self) -> None:
        """Close this thread's connection (other threads' close when their thread ends)."""
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None

    def close_all(self) -> None:
        """Close every thread's connection: once the emulator has stopped serving. A thread that
        uses the database again opens a new one."""
        with self._opened_lock:
            opened, self._opened = self._opened, []
            self._local = threading.local()
        for connection in opened:
            connection.close()


def _connect(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                 timeout=BUSY_TIMEOUT_MS / 1000)
    # WAL: readers never wait for the writer; NORMAL: a commit is not flushed to disk until
    # the next checkpoint (a crash of the machine may lose the last moments, never corrupts).
    connection.execute("PRAGMA synchronous = NORMAL")
    return connection


def _create(connection: sqlite3.Connection) -> None:
    """The schema, in the caller's transaction (executescript would commit it first)."""
    for statement in (SCHEMA + DEVICE_CODES_SCHEMA).split(";\n"):
        if statement.strip():
            connection.execute(statement)
    connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _prepare(path: Path) -> None:
    """Create the database (owner-only, like the rest of the state folder) or check that the
    one there is the emulator's and of a schema this version reads."""
    if not path.exists():
        # SQLite gives its -wal and -shm files the database file's permissions.
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    elif path.stat().st_mode & 0o077:
        path.chmod(0o600)
    try:
        connection = _connect(path)
        try:
            connection.execute("BEGIN IMMEDIATE")
            application_id = connection.execute("PRAGMA application_id").fetchone()[0]
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            tables = connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if application_id == 0 and version == 0 and tables == 0:   # new and empty
                _create(connection)
                connection.execute("COMMIT")
            else:
                connection.execute("ROLLBACK")
                _check_kind(path, application_id, version)
                connection.executescript(DEVICE_CODES_SCHEMA)
            connection.execute("PRAGMA journal_mode = WAL")
        finally:
            connection.close()
    except sqlite3.DatabaseError as problem:
        raise StateError(f"{path}: not a state database of entra-emulator ({problem}); delete "
                         "it (the emulator starts afresh: everyone signs in again) or choose "
                         "another state folder") from None


def _check_kind(path: Path, application_id: int, version: int) -> None:
    if application_id != APPLICATION_ID:
        raise StateError(f"{path}: not a state database of entra-emulator (another program's "
                         "SQLite file?); choose another state folder, or delete the file")
    if version > SCHEMA_VERSION:
        raise StateError(
            f"{path}: written by a newer entra-emulator (state schema {version}; this version "
            f"reads schema {SCHEMA_VERSION}). Run that newer version, or choose another state "
            "folder (or delete this one: the emulator starts afresh and everyone signs in "
            "again)")
    if version < SCHEMA_VERSION:   # no older schema exists yet: anything else is damaged
        raise StateError(f"{path}: unknown state schema {version}; delete the file to start "
                         "afresh")


def _import_old_files(db: StateDB, folder: Path) -> None:
    """Bring in the signing keys and consents of the JSON layout (entra-emulator 0.2), then
    rename those files so they are imported only once."""
    keys_file, consents_file = folder / OLD_KEYS_FILE, folder / OLD_CONSENTS_FILE
    if not keys_file.exists() and not consents_file.exists():
        return
    keys = _read_old(keys_file, "signing keys")
    consents = _read_old(consents_file, "consents")
    try:
        key_rows = [(str(item["kid"]), str(item["private_key"]), str(item["certificate"]))
                    for item in (keys or {}).get("keys", [])]
        consent_rows = [(*str(key).split("|", 1), json.dumps(sorted(map(str, value))))
                        for key, value in (consents or {}).items()
                        if isinstance(value, list) and "|" in str(key)]
    except (AttributeError, KeyError, TypeError) as problem:
        raise StateError(f"{folder}: the signing keys or consents of an older emulator are "
                         f"unreadable ({problem}); delete {OLD_KEYS_FILE} and "
                         f"{OLD_CONSENTS_FILE} to start afresh") from None
    with db.write() as connection:
        if key_rows and connection.execute("SELECT 1 FROM signing_keys").fetchone() is None:
            connection.executemany(
                "INSERT INTO signing_keys (kid, private_key, certificate) VALUES (?, ?, ?)",
                key_rows)
            connection.execute("UPDATE shared SET keys_generation = keys_generation + 1")
        connection.executemany("INSERT OR IGNORE INTO consents VALUES (?, ?, ?)", consent_rows)
    for path in (keys_file, consents_file):
        if path.exists():
            path.replace(path.with_name(path.name + ".migrated"))


def _read_old(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as problem:
        raise StateError(f"{path}: unreadable {what} of an older emulator ({problem}); delete "
                         "the file to start afresh") from None
