"""What the emulator remembers: codes, refresh tokens and their revocations, revoked access
tokens and consents, in the state database (db.py) that every worker shares, so a request may
land on any worker and a restart loses nothing Entra would keep. SSO sessions and sign-ins in
progress are in signin_state.py. Every table is bounded by its records' lifetimes: expired rows
are purged as new ones come.

Every store is thread-safe and safe across processes: single-use operations (a code's
redemption, a refresh token's use) are single SQL statements or IMMEDIATE transactions.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from entra_emulator.db import VOLATILE_TABLES, StateDB
from entra_emulator.directory import Directory, parse_directory
from entra_emulator.keys import KeyStore
from entra_emulator.records import Clock as Clock
from entra_emulator.records import Purge, digest, record_from_text, record_text
from entra_emulator.records import opaque_token as opaque_token
from entra_emulator.records import random_token as random_token

# The browser-facing stores (SSO sessions, sign-ins in progress) live in signin_state.py and
# are imported from here as before.
from entra_emulator.signin_state import PendingSignIn as PendingSignIn
from entra_emulator.signin_state import PendingStore as PendingStore
from entra_emulator.signin_state import Session as Session
from entra_emulator.signin_state import SessionStore as SessionStore

CODE_LIFETIME_SECONDS = 600            # Entra: "about 10 minutes"
# Entra's refresh tokens live 90 days (sliding 24 h for SPAs); we use the 90 days.
REFRESH_TOKEN_LIFETIME_SECONDS = 90 * 24 * 3600
ID_TOKEN_LIFETIME_SECONDS = 3900       # 65 minutes, as seen on real v2 ID tokens
ACCESS_TOKEN_LIFETIME_RANGE = (3600, 5400)
# How long a redeemed or expired code is remembered, so reuse is told apart from garbage.
SPENT_CODE_MEMORY_SECONDS = 3600
# Held at once, newest kept (like pending sign-ins and SSO sessions): anyone who can sign in can
# mint codes and refresh tokens in a loop, and each is otherwise kept until it expires.
MAX_CODES = 10_000
MAX_REFRESH_TOKENS = 100_000


# ---------------------------------------------------------------------------------------------
# Authorization codes
# ---------------------------------------------------------------------------------------------

@dataclass
class AuthorizationCode:
    client_id: str
    redirect_uri: str
    user_id: str
    scope: str                     # the scope string as requested at authorize
    granted: frozenset[str]        # permissions the user consented to for this request
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    sid: str
    auth_time: int
    include_auth_time: bool
    tenant_id: str
    issued_at: float
    expires_at: float
    redeemed: bool = False
    # What was issued from this code, revoked if the code is used again.
    issued_families: list[str] = field(default_factory=list)
    issued_access_tokens: list[str] = field(default_factory=list)


_CODE_STATE = ("redeemed", "issued_families", "issued_access_tokens")


class CodeStore:
    def __init__(self, clock: Clock, db: StateDB | None = None, *,
                 limit: int = MAX_CODES) -> None:
        self._clock = clock
        self._limit = limit
        self._db = db or StateDB.in_memory()
        self._purge = Purge(self._db, clock, "DELETE FROM codes WHERE forget_at < ?")

    def issue(self, record: AuthorizationCode) -> str:
        code = opaque_token("1.A")
        with self._db.write() as connection:
            self._purge(connection)
            row = connection.execute(
                "INSERT INTO codes (key, record, client_id, sid, forget_at) "
                "VALUES (?, ?, ?, ?, ?) RETURNING rowid",
                (digest(code), record_text(record, *_CODE_STATE), record.client_id,
                 record.sid, record.expires_at + SPENT_CODE_MEMORY_SECONDS)).fetchone()[0]
            _keep_newest(connection, "codes", row, self._limit)
        return code

    def find(self, code: str) -> AuthorizationCode | None:
        row = self._db.one("SELECT record, redeemed, families, utis FROM codes WHERE key = ?",
                           (digest(code),))
        if row is None:
            return None
        return record_from_text(AuthorizationCode, row[0], redeemed=bool(row[1]),
                       issued_families=json.loads(row[2]), issued_access_tokens=json.loads(row[3]))

    def redeem(self, code: str, family: str | None = None) -> tuple[AuthorizationCode | None,
                                                                    bool]:
        """The code's record and whether this is its first redemption. The first redemption
        marks the code and records `family` (the refresh token family it issues) in the same
        statement, so a concurrent second redemption on any worker finds the family to revoke."""
        families = json.dumps([family] if family else [])
        row = self._db.one("UPDATE codes SET redeemed = 1, families = ? WHERE key = ? "
                           "AND redeemed = 0 RETURNING record", (families, digest(code)))
        if row is None:
            return self.find(code), False
        return record_from_text(AuthorizationCode, row[0], redeemed=True,
                                issued_families=json.loads(families)), True

    def mark_reused(self, code: str) -> tuple[list[str], list[str]]:
        """A redeemed code came back: what its first redemption issued (refresh token families,
        access token `uti`s), to revoke. Atomic with add_access_token."""
        row = self._db.one("UPDATE codes SET reused = 1 WHERE key = ? RETURNING families, utis",
                           (digest(code),))
        return (json.loads(row[0]), json.loads(row[1])) if row else ([], [])

    def add_access_token(self, code: str, uti: str) -> bool:
        """Record an access token issued from the code; True when the code was used again
        meanwhile (then that token must be revoked too)."""
        row = self._db.one("UPDATE codes SET utis = json_insert(utis, '$[#]', ?) WHERE key = ? "
                           "RETURNING reused", (uti, digest(code)))
        return row is not None and bool(row[0])

    def client_ids_for_session(self, sid: str) -> set[str]:
        return {row[0] for row in self._db.all("SELECT client_id FROM codes WHERE sid = ?",
                                               (sid,))}


# ---------------------------------------------------------------------------------------------
# Refresh tokens (rotating; a family is revoked when a used token comes back)
# ---------------------------------------------------------------------------------------------

@dataclass
class RefreshGrant:
    family: str
    client_id: str
    user_id: str
    tenant_id: str
    granted: frozenset[str]
    sid: str
    auth_time: int
    include_auth_time: bool
    issued_at: float
    expires_at: float
    used: bool = False
    revoked: bool = False   # its family was revoked (read with the token, not stored in it)


# The token's row and whether its family is revoked, in one statement.
_GRANT_COLUMNS = ("record, used, EXISTS (SELECT 1 FROM revoked_families "
                  "WHERE family = refresh_tokens.family AND until >= ?)")


class RefreshTokenStore:
    def __init__(self, clock: Clock, db: StateDB | None = None, *,
                 limit: int = MAX_REFRESH_TOKENS) -> None:
        self._clock = clock
        self._limit = limit
        self._db = db or StateDB.in_memory()
        # A revoked family is remembered until its last grant expires (a token past that is
        # unknown anyway).
        self._purge_grants = Purge(self._db, clock,
                                   "DELETE FROM refresh_tokens WHERE expires_at < ?")
        self._purge_revoked = Purge(self._db, clock,
                                    "DELETE FROM revoked_families WHERE until < ?")

    def issue(self, grant: RefreshGrant) -> str:
        token = opaque_token("1.A")
        with self._db.write() as connection:   # one commit for the statements
            self._purge_grants(connection)
            self._purge_revoked(connection)
            row = connection.execute(
                "INSERT INTO refresh_tokens (key, family, client_id, sid, record, expires_at) "
                "VALUES (?, ?, ?, ?, ?, ?) RETURNING rowid",
                (digest(token), grant.family, grant.client_id, grant.sid,
                 record_text(grant, "used", "revoked"), grant.expires_at)).fetchone()[0]
            _keep_newest(connection, "refresh_tokens", row, self._limit)
            # Issued by a refresh that raced its family's revocation: remember it longer. (A
            # revocation after the insert counts this token's expiry itself.)
            connection.execute("UPDATE revoked_families SET until = max(until, ?) "
                               "WHERE family = ?", (grant.expires_at, grant.family))
        return token

    def find(self, token: str) -> RefreshGrant | None:
        row = self._db.one(f"SELECT {_GRANT_COLUMNS} FROM refresh_tokens "  # noqa: S608
                           "WHERE key = ?", (self._clock.now(), digest(token)))
        return None if row is None else _grant_from(row)

    def use(self, token: str) -> tuple[RefreshGrant | None, bool]:
        """The grant and whether it was still usable (marked used by one statement: of two
        concurrent uses on any workers, one wins)."""
        row = self._db.one(
            f"UPDATE refresh_tokens SET used = 1 WHERE key = ? AND used = 0 "  # noqa: S608
            f"RETURNING {_GRANT_COLUMNS}", (digest(token), self._clock.now()))
        if row is None:
            return self.find(token), False
        grant = _grant_from(row)
        return grant, not grant.revoked

    def revoke_family(self, family: str) -> None:
        with self._db.write() as connection:
            last = connection.execute("SELECT max(expires_at) FROM refresh_tokens "
                                      "WHERE family = ?", (family,)).fetchone()[0]
            # A family with no token yet (a code reused while its first redemption is still
            # issuing) may get one still: remember it as long as such a token could live.
            until = last if last is not None else \
                self._clock.now() + REFRESH_TOKEN_LIFETIME_SECONDS
            connection.execute("INSERT INTO revoked_families VALUES (?, ?) ON CONFLICT (family) "
                               "DO UPDATE SET until = max(until, excluded.until)",
                               (family, until))

    def is_revoked(self, family: str) -> bool:
        row = self._db.one("SELECT until FROM revoked_families WHERE family = ?", (family,))
        return row is not None and row[0] >= self._clock.now()

    def client_ids_for_session(self, sid: str) -> set[str]:
        return {row[0] for row in self._db.all(
            "SELECT client_id FROM refresh_tokens WHERE sid = ?", (sid,))}

    def __len__(self) -> int:
        return self._db.one("SELECT count(*) FROM refresh_tokens")[0]


def _grant_from(row: tuple[str, int, int]) -> RefreshGrant:
    return record_from_text(RefreshGrant, row[0], used=bool(row[1]), revoked=bool(row[2]))


def _keep_newest(connection: Any, table: str, newest: int, limit: int) -> None:
    """Drop the rows older than the newest `limit` (rowids grow with each insert)."""
    if newest > limit:
        connection.execute(f"DELETE FROM {table} WHERE rowid <= ?",  # noqa: S608 - our tables
                           (newest - limit,))


class RevokedAccessTokens:
    """`uti`s of revoked access tokens, each remembered until no token it names can still be
    valid: Entra's configurable access token lifetime is at most 1 day."""

    MEMORY_SECONDS = 24 * 3600

    def __init__(self, clock: Clock, db: StateDB | None = None) -> None:
        self._clock = clock
        self._db = db or StateDB.in_memory()
        self._purge = Purge(self._db, clock, "DELETE FROM revoked_access_tokens WHERE until < ?")

    def update(self, utis: Iterable[str]) -> None:
        until = self._clock.now() + self.MEMORY_SECONDS
        with self._db.write() as connection:
            self._purge(connection)
            connection.executemany("INSERT OR REPLACE INTO revoked_access_tokens VALUES (?, ?)",
                                   [(uti, until) for uti in utis])

    def __contains__(self, uti: object) -> bool:
        if not isinstance(uti, str):
            return False
        row = self._db.one("SELECT until FROM revoked_access_tokens WHERE uti = ?", (uti,))
        return row is not None and row[0] >= self._clock.now()

    def __len__(self) -> int:
        self._purge()
        return self._db.one("SELECT count(*) FROM revoked_access_tokens")[0]


# ---------------------------------------------------------------------------------------------
# Consents (kept across restarts)
# ---------------------------------------------------------------------------------------------

class ConsentStore:
    """Permissions each user granted each app."""

    def __init__(self, db: StateDB | Path | None = None) -> None:
        self._db = db if isinstance(db, StateDB) else (
            StateDB.open(db) if db is not None else StateDB.in_memory())

    def granted(self, user_id: str, app_id: str) -> frozenset[str]:
        row = self._db.one("SELECT permissions FROM consents WHERE user_id = ? AND app_id = ?",
                           (user_id, app_id))
        return frozenset(json.loads(row[0])) if row else frozenset()

    def grant(self, user_id: str, app_id: str, permissions: set[str]) -> None:
        with self._db.write() as connection:
            row = connection.execute("SELECT permissions FROM consents WHERE user_id = ? "
                                     "AND app_id = ?", (user_id, app_id)).fetchone()
            held = set(json.loads(row[0])) if row else set()
            connection.execute("INSERT OR REPLACE INTO consents VALUES (?, ?, ?)",
                               (user_id, app_id, json.dumps(sorted(held | permissions))))


# ---------------------------------------------------------------------------------------------
# Everything together
# ---------------------------------------------------------------------------------------------

@dataclass
class EmulatorState:
    """Stored at `app.extensions["entra_emulator"]`; every blueprint works from it.

    Each worker holds its own EmulatorState over the shared database; `sync()` (before each
    request) picks up what another worker or a test changed: the clock, the signing keys, the
    directory."""

    directory: Directory
    keys: KeyStore
    faults: Any            # faults.FaultInjector
    defects: Any           # defects.DefectInjector
    https_base: str
    http_base: str
    state_dir: Path
    clock: Clock
    sessions: SessionStore
    pending: PendingStore
    codes: CodeStore
    refresh_tokens: RefreshTokenStore
    consents: ConsentStore
    db: StateDB = field(default_factory=StateDB.in_memory)
    device_codes: Any = None   # device_code.DeviceCodeStore (app.build_state makes it)
    # `uti`s of access tokens revoked because their authorization code was used twice.
    revoked_access_tokens: RevokedAccessTokens = field(init=False)

    def __post_init__(self) -> None:
        self.revoked_access_tokens = RevokedAccessTokens(self.clock, self.db)
        self.initial_directory = self.directory
        self._directory_generation = -1
        self.sync()

    def now(self) -> int:
        return int(self.clock.now())

    def issuer(self, tenant_id: str) -> str:
        return f"{self.https_base}/{tenant_id}/v2.0"

    def v1_issuer(self, tenant_id: str) -> str:
        # The issuer Entra writes in v1 tokens, including Graph access tokens.
        return f"https://sts.windows.net/{tenant_id}/"

    def access_token_revoked(self, claims: Mapping[str, Any]) -> bool:
        """For a resource server: was this access token revoked (RFC 6749 §4.1.2: a code used
        twice revokes the tokens issued from it)?"""
        return claims.get("uti") in self.revoked_access_tokens

    # -- what workers share besides the stores ------------------------------------------------

    def sync(self) -> None:
        """Catch up with the shared state: one small query, and a reload only of what changed."""
        offset, keys_generation, directory_generation = self.db.one(
            "SELECT clock_offset, keys_generation, directory_generation FROM shared")
        self.clock.sync(offset)
        self.keys.sync(keys_generation)
        if directory_generation != self._directory_generation:
            document, source = self.db.one("SELECT directory, directory_source FROM shared")
            self.directory = self.initial_directory if document is None else \
                parse_directory(json.loads(document), Path(source))
            self._directory_generation = directory_generation

    def change_directory(self, document: dict[str, Any], source: Path) -> None:
        """Serve `document` (the directory file's shape) from now on, on every worker."""
        directory = parse_directory(document, source)   # DirectoryError when malformed
        with self.db.write() as connection:
            connection.execute("UPDATE shared SET directory = ?, directory_source = ?, "
                               "directory_generation = directory_generation + 1",
                               (json.dumps(document), str(source)))
        self.directory = directory
        self.sync()

    def snapshot(self) -> dict[str, list[tuple]]:
        """What `reset_to` brings back: the signing keys and the consents."""
        return {"signing_keys": self.db.all("SELECT * FROM signing_keys ORDER BY seq"),
                "consents": self.db.all("SELECT * FROM consents ORDER BY user_id, app_id")}

    def reset_to(self, snapshot: dict[str, list[tuple]]) -> None:
        """Back to `snapshot` and the initial directory, with nothing else remembered: no code,
        token, revocation, session, sign-in in progress, fault or defect; the clock at 0."""
        with self.db.write() as connection:
            for table in VOLATILE_TABLES:
                connection.execute(f"DELETE FROM {table}")  # noqa: S608 - our own table names
            for table, rows in snapshot.items():
                held = connection.execute(f"SELECT * FROM {table}").fetchall()  # noqa: S608
                if sorted(held) != sorted(rows):
                    connection.execute(f"DELETE FROM {table}")  # noqa: S608
                    if rows:
                        marks = ", ".join("?" * len(rows[0]))
                        connection.executemany(
                            f"INSERT INTO {table} VALUES ({marks})", rows)  # noqa: S608
                    if table == "signing_keys":
                        connection.execute(
                            "UPDATE shared SET keys_generation = keys_generation + 1")
            connection.execute("UPDATE shared SET clock_offset = 0, directory = NULL, "
                               "directory_generation = directory_generation + 1 "
                               "WHERE directory IS NOT NULL OR clock_offset != 0")
        self.sync()
