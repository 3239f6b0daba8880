"""What the emulator remembers: codes, refresh tokens, SSO sessions, sign-ins in progress
(in memory) and consents (in the state folder, so they survive a restart). Every in-memory
store is bounded by its records' lifetimes and purged as they expire.

Every store is thread-safe: werkzeug serves each request on its own thread.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import ssl
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from entra_emulator.directory import Directory
from entra_emulator.keys import KeyStore, b64url, write_private_file

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


class Clock:
    """Wall-clock seconds, with an offset tests can move to watch things expire."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds

    def reset(self) -> None:
        self.offset = 0.0


def random_token(size: int) -> str:
    """`size` random bytes, base64url: opaque credentials and the unique values in tokens.

    From OpenSSL's generator (seeded by the operating system, as os.urandom is) rather than
    the secrets module: a token response draws six such values, and each os.urandom call is a
    system call that hands the GIL over to another request's thread.
    """
    return b64url(ssl.RAND_bytes(size))


def opaque_token(prefix: str = "1.A") -> str:
    """An opaque credential shaped like Entra's ("0.AXkA…" / "1.AXkA…")."""
    return prefix + random_token(64)


def _digest(token: str) -> str:
    # Stores hold a hash, never the credential itself.
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class ExpiryQueue:
    """Store keys in the order they expire. A purge then looks only at what has expired:
    scanning every record on each issue made each token cost more than the last (under load,
    thousands of rotated refresh tokens are kept for reuse detection). Not thread-safe; the
    store's lock guards it."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, str]] = []

    def add(self, expires_at: float, key: str) -> None:
        heapq.heappush(self._heap, (expires_at, key))

    def pop_expired(self, now: float) -> list[str]:
        """The keys whose time ended before `now`, removed from the queue."""
        expired = []
        while self._heap and self._heap[0][0] < now:
            expired.append(heapq.heappop(self._heap)[1])
        return expired


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


class CodeStore:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._codes: dict[str, AuthorizationCode] = {}
        self._forget_after = ExpiryQueue()

    def issue(self, record: AuthorizationCode) -> str:
        code = opaque_token("1.A")
        key = _digest(code)
        with self._lock:
            self._purge()
            self._codes[key] = record
            self._forget_after.add(record.expires_at + SPENT_CODE_MEMORY_SECONDS, key)
        return code

    def find(self, code: str) -> AuthorizationCode | None:
        with self._lock:
            return self._codes.get(_digest(code))

    def redeem(self, code: str) -> tuple[AuthorizationCode | None, bool]:
        """The code's record and whether this is its first redemption (atomically marked)."""
        with self._lock:
            record = self._codes.get(_digest(code))
            if record is None:
                return None, False
            first = not record.redeemed
            record.redeemed = True
            return record, first

    def _purge(self) -> None:
        for key in self._forget_after.pop_expired(self._clock.now()):
            del self._codes[key]


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


class RefreshTokenStore:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._grants: dict[str, RefreshGrant] = {}
        # Revoked family -> when its last grant expires; the revocation is forgotten then (a
        # token past that is unknown anyway).
        self._revoked_families: dict[str, float] = {}
        self._expiry = ExpiryQueue()
        self._forget_revoked = ExpiryQueue()

    def issue(self, grant: RefreshGrant) -> str:
        token = opaque_token("1.A")
        key = _digest(token)
        with self._lock:
            self._purge()
            self._grants[key] = grant
            self._expiry.add(grant.expires_at, key)
            if grant.expires_at > self._revoked_families.get(grant.family, grant.expires_at):
                # Issued by a refresh that raced its family's revocation: remember it longer.
                self._remember_revoked(grant.family, grant.expires_at)
        return token

    def find(self, token: str) -> RefreshGrant | None:
        with self._lock:
            return self._grants.get(_digest(token))

    def use(self, token: str) -> tuple[RefreshGrant | None, bool]:
        """The grant and whether it was still usable (atomically marked used)."""
        with self._lock:
            grant = self._grants.get(_digest(token))
            if grant is None:
                return None, False
            usable = not grant.used and grant.family not in self._revoked_families
            grant.used = True
            return grant, usable

    def revoke_family(self, family: str) -> None:
        with self._lock:
            self._purge()
            # Rare (a token came back twice), so scanning the grants for the family is fine.
            last = max((g.expires_at for g in self._grants.values() if g.family == family),
                       default=self._clock.now())
            self._remember_revoked(family, last)

    def is_revoked(self, family: str) -> bool:
        with self._lock:
            return family in self._revoked_families

    def __len__(self) -> int:
        with self._lock:
            return len(self._grants)

    def _remember_revoked(self, family: str, until: float) -> None:
        self._revoked_families[family] = max(until, self._revoked_families.get(family, until))
        self._forget_revoked.add(self._revoked_families[family], family)

    def _purge(self) -> None:
        now = self._clock.now()
        for key in self._expiry.pop_expired(now):
            del self._grants[key]
        for family in self._forget_revoked.pop_expired(now):
            # A family revoked again later has a later entry in the queue: keep it till then.
            if self._revoked_families.get(family, now) < now:
                del self._revoked_families[family]


class RevokedAccessTokens:
    """`uti`s of revoked access tokens, each remembered until no token it names can still be
    valid: Entra's configurable access token lifetime is at most 1 day."""

    MEMORY_SECONDS = 24 * 3600

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._utis: set[str] = set()
        self._forget = ExpiryQueue()

    def update(self, utis: Iterable[str]) -> None:
        now = self._clock.now()
        with self._lock:
            self._purge(now)
            for uti in utis:
                self._utis.add(uti)
                self._forget.add(now + self.MEMORY_SECONDS, uti)

    def __contains__(self, uti: object) -> bool:
        with self._lock:
            self._purge(self._clock.now())
            return uti in self._utis

    def __len__(self) -> int:
        with self._lock:
            return len(self._utis)

    def _purge(self, now: float) -> None:
        for uti in self._forget.pop_expired(now):
            self._utis.discard(uti)


# ---------------------------------------------------------------------------------------------
# Consents (persisted)
# ---------------------------------------------------------------------------------------------

class ConsentStore:
    """Permissions each user granted each app, in `consents.json` in the state folder."""

    def __init__(self, state_dir: Path) -> None:
        self._path = state_dir / "consents.json"
        self._lock = threading.Lock()
        self._grants: dict[str, list[str]] = self._load()

    @staticmethod
    def _key(user_id: str, app_id: str) -> str:
        return f"{user_id}|{app_id}"

    def granted(self, user_id: str, app_id: str) -> frozenset[str]:
        with self._lock:
            return frozenset(self._grants.get(self._key(user_id, app_id), ()))

    def grant(self, user_id: str, app_id: str, permissions: set[str]) -> None:
        with self._lock:
            key = self._key(user_id, app_id)
            self._grants[key] = sorted(set(self._grants.get(key, ())) | permissions)
            write_private_file(self._path, json.dumps(self._grants, indent=1))

    def _load(self) -> dict[str, list[str]]:
        try:
            data = json.loads(self._path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as problem:
            raise RuntimeError(f"{self._path}: unreadable consents ({problem}); delete the file "
                               "to forget all consents") from None
        if not isinstance(data, dict):
            raise RuntimeError(f"{self._path}: unreadable consents; delete the file")
        return {str(k): [str(p) for p in v] for k, v in data.items() if isinstance(v, list)}


# ---------------------------------------------------------------------------------------------
# Everything together
# ---------------------------------------------------------------------------------------------

@dataclass
class EmulatorState:
    """Stored at `app.extensions["entra_emulator"]`; every blueprint works from it."""

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
    # `uti`s of access tokens revoked because their authorization code was used twice.
    revoked_access_tokens: RevokedAccessTokens = field(init=False)

    def __post_init__(self) -> None:
        self.revoked_access_tokens = RevokedAccessTokens(self.clock)

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
