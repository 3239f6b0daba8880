"""Token signing keys as Entra publishes them: RS256 keys with self-signed certificates.

`kid` and `x5t` are both the base64url SHA-1 thumbprint of the key's certificate, and the
JWKS carries the certificate in `x5c` (entra-protocol.md §1.6). Keys persist in the state
database (db.py), so tokens stay verifiable across restarts and every worker signs with the
same key; a rotation keeps the old key published.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from entra_emulator.db import StateDB

# Entra publishes a handful of keys; we keep the current one and the last two retired ones.
PUBLISHED_KEY_COUNT = 3
# The subject of Entra's own token-signing certificates.
CERTIFICATE_SUBJECT = "accounts.accesscontrol.windows.net"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_uint(number: int) -> str:
    return b64url(number.to_bytes((number.bit_length() + 7) // 8, "big"))


@dataclass(frozen=True)
class SigningKey:
    kid: str
    x5t: str
    private_key: rsa.RSAPrivateKey
    public_key: rsa.RSAPublicKey
    certificate: x509.Certificate

    @classmethod
    def from_parts(cls, private_key: rsa.RSAPrivateKey,
                   certificate: x509.Certificate) -> SigningKey:
        thumbprint = b64url(certificate.fingerprint(hashes.SHA1()))  # noqa: S303 - Entra's x5t
        return cls(kid=thumbprint, x5t=thumbprint, private_key=private_key,
                   public_key=private_key.public_key(), certificate=certificate)

    @classmethod
    def generate(cls) -> SigningKey:
        private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return cls.from_parts(private_key, _self_signed_certificate(private_key))

    def jwk(self, issuer: str | None = None) -> dict[str, Any]:
        jwk = dict(self._public_jwk)
        if issuer is not None:
            jwk["issuer"] = issuer
        return jwk

    @functools.cached_property
    def _public_jwk(self) -> dict[str, Any]:
        # Once per key, not per JWKS request: the key and its certificate never change.
        numbers = self.public_key.public_numbers()
        der = self.certificate.public_bytes(serialization.Encoding.DER)
        return {
            "kty": "RSA", "use": "sig", "kid": self.kid, "x5t": self.x5t,
            "n": _b64url_uint(numbers.n), "e": _b64url_uint(numbers.e),
            "x5c": [base64.b64encode(der).decode("ascii")],
            "cloud_instance_name": "microsoftonline.com",
        }

    def to_json(self) -> dict[str, str]:
        return {
            "kid": self.kid,
            "private_key": self.private_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption()).decode("ascii"),
            "certificate": self.certificate.public_bytes(
                serialization.Encoding.PEM).decode("ascii"),
        }

    @classmethod
    def from_json(cls, data: dict[str, str]) -> SigningKey:
        # The emulator's own key, which it generated and wrote owner-only into its state
        # folder: OpenSSL's full RSA key check costs about 50 ms per key at every start (a
        # tenth of the start-up budget, three times over after rotations). A key that does
        # not belong to its certificate is still refused just below.
        private_key = serialization.load_pem_private_key(
            data["private_key"].encode(), None, unsafe_skip_rsa_key_validation=True)
        if not isinstance(private_key, rsa.RSAPrivateKey):
            raise ValueError("signing key is not an RSA key")
        certificate = x509.load_pem_x509_certificate(data["certificate"].encode())
        if certificate.public_key().public_numbers() != private_key.public_key().public_numbers():
            raise ValueError("signing key does not match its certificate")
        return cls.from_parts(private_key, certificate)


def _self_signed_certificate(private_key: rsa.RSAPrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CERTIFICATE_SUBJECT)])
    now = dt.datetime.now(dt.UTC)
    return (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(private_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=5 * 365))
            .sign(private_key, hashes.SHA256()))


class KeyStore:
    """The published signing keys (newest last) and the current one, in the state database
    shared by every worker. Thread-safe; each process keeps the keys loaded and reloads them
    when the database's key generation moves (a rotation on another worker)."""

    def __init__(self, state_dir: str | Path | None = None, db: StateDB | None = None) -> None:
        if db is None:
            db = StateDB.open(state_dir) if state_dir is not None else StateDB.in_memory()
        self._db = db
        self._lock = threading.Lock()
        self._unpublished: SigningKey | None = None
        self._published: tuple[SigningKey, ...] = ()
        self._generation: int | None = None
        if self._db.one("SELECT 1 FROM signing_keys") is None:
            fresh = SigningKey.generate()   # outside the lock: it takes a while
            with self._db.write() as connection:
                if connection.execute("SELECT 1 FROM signing_keys").fetchone() is None:
                    _insert(connection, fresh)
        self.sync(self._db.one("SELECT keys_generation FROM shared")[0])

    def sync(self, generation: int) -> None:
        """Reload the keys if `generation` (shared.keys_generation) is not the one loaded."""
        if generation == self._generation:
            return
        with self._lock:
            rows = self._db.all("SELECT kid, private_key, certificate FROM signing_keys "
                                "ORDER BY seq DESC LIMIT ?", (PUBLISHED_KEY_COUNT,))
            loaded = {key.kid: key for key in self._published}
            keys = []
            for kid, private_key, certificate in reversed(rows):
                if kid in loaded:   # parsing a key costs milliseconds: only the new ones
                    keys.append(loaded[kid])
                    continue
                try:
                    keys.append(SigningKey.from_json({"private_key": private_key,
                                                      "certificate": certificate}))
                except (ValueError, TypeError) as problem:
                    raise RuntimeError(f"{self._db.path}: unreadable signing key ({problem}); "
                                       "delete the state folder to start with new "
                                       "keys") from None
            self._published = tuple(keys)
            self._generation = generation

    @property
    def current(self) -> SigningKey:
        return self._published[-1]

    @property
    def published(self) -> tuple[SigningKey, ...]:
        return self._published

    def sign(self, claims: dict[str, Any], *, headers: dict[str, Any] | None = None,
             key: SigningKey | None = None) -> str:
        """An RS256 JWT whose header starts typ, alg, kid (then any extra `headers`)."""
        key = key or self.current
        header = {"typ": "JWT", "alg": "RS256", "kid": key.kid, **(headers or {})}
        return jwt.encode(claims, key.private_key, algorithm="RS256", headers=header,
                          sort_headers=False)

    def jwks(self, issuer: str | None = None) -> dict[str, Any]:
        return {"keys": [key.jwk(issuer) for key in reversed(self._published)]}

    def public_key_for(self, kid: str) -> rsa.RSAPublicKey | None:
        for key in self._published:
            if key.kid == kid:
                return key.public_key
        return None

    def rotate(self) -> SigningKey:
        """A new current key; the previous ones stay published (up to PUBLISHED_KEY_COUNT), on
        every worker."""
        new_key = SigningKey.generate()
        with self._db.write() as connection:
            _insert(connection, new_key)
            # Only the published keys are kept: a retired key signs nothing and verifies nothing.
            connection.execute("DELETE FROM signing_keys WHERE seq NOT IN (SELECT seq FROM "
                               "signing_keys ORDER BY seq DESC LIMIT ?)", (PUBLISHED_KEY_COUNT,))
            connection.execute("UPDATE shared SET keys_generation = keys_generation + 1")
            generation = connection.execute("SELECT keys_generation FROM shared").fetchone()[0]
        with self._lock:   # the new key as generated, not read back
            self._published = (*self._published, new_key)[-PUBLISHED_KEY_COUNT:]
        self.sync(generation)
        return new_key

    def publish_new_key(self) -> SigningKey:
        return self.rotate()

    def unpublished_key(self) -> SigningKey:
        """A key that is never in the JWKS (for tokens whose `kid` nobody can resolve)."""
        with self._lock:
            if self._unpublished is None:
                self._unpublished = SigningKey.generate()
            return self._unpublished


def _insert(connection: Any, key: SigningKey) -> None:
    data = key.to_json()
    connection.execute("INSERT INTO signing_keys (kid, private_key, certificate) "
                       "VALUES (?, ?, ?)", (data["kid"], data["private_key"], data["certificate"]))


def ensure_private_dir(path: Path) -> None:
    """The state folder holds private keys and consents: make it (0700), or take group and
    other access away from it when it is ours already (as ssh does for ~/.ssh)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    status = path.stat()
    if status.st_mode & 0o077 and status.st_uid == os.getuid():
        path.chmod(0o700)


def make_private(path: Path) -> None:
    """Take group and other access away from a file the emulator wrote before (an older
    version wrote its certificates 0644)."""
    if path.is_file() and path.stat().st_mode & 0o077:
        path.chmod(0o600)


def write_private_file(path: Path, text: str) -> None:
    """Write atomically, readable by the owner only (the file may hold private keys or the
    client secret)."""
    if not path.parent.is_dir():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(temporary, path)
