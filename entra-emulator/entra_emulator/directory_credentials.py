"""Application credentials and token settings in the directory file: `passwordCredentials[]`
(client secrets), `keyCredentials[]` (certificates: base64 DER as Graph returns it, or PEM
text), our `tokenLifetimes` and `optionalClaims.idToken`; and a user's `perUserMfaState`."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from entra_emulator.directory_authz import ReaderLike, array_field

TOKEN_LIFETIME_KEYS = ("accessToken", "idToken", "refreshToken", "authorizationCode")
# Entra's configurable token lifetime policy allows 10 minutes to 1 day for access/ID tokens;
# we allow shorter ones so tests can watch tokens expire without long sleeps.
MIN_LIFETIME_SECONDS = 1
MAX_LIFETIME_SECONDS = 400 * 24 * 3600

# Optional ID token claims the emulator can add (Entra has many more).
SUPPORTED_OPTIONAL_ID_TOKEN_CLAIMS = ("login_hint", "groups")


@dataclass(frozen=True)
class PasswordCredential:
    key_id: str
    secret_text: str
    end: datetime | None = None
    display_name: str | None = None


@dataclass(frozen=True)
class KeyCredential:
    key_id: str
    certificate: x509.Certificate
    sha1_thumbprint: bytes
    sha256_thumbprint: bytes
    display_name: str | None = None


def read_password_credential(reader: ReaderLike, entry: str, obj: Any) -> PasswordCredential:
    if not isinstance(obj, dict):
        raise reader.error(entry, "", "must be an object with secretText")
    return PasswordCredential(
        key_id=str(obj.get("keyId") or ""),
        secret_text=reader.string(entry, obj, "secretText") or "",
        end=_read_datetime(reader, entry, obj, "endDateTime"),
        display_name=obj.get("displayName"))


def _read_datetime(reader: ReaderLike, entry: str, obj: Mapping[str, Any],
                   name: str) -> datetime | None:
    value = reader.string(entry, obj, name, required=False)
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise reader.error(entry, name, f"must be an ISO 8601 date-time (got {value!r})") \
            from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def read_key_credential(reader: ReaderLike, entry: str, obj: Any) -> KeyCredential:
    if not isinstance(obj, dict):
        raise reader.error(entry, "", "must be an object with key (the certificate)")
    key_type = obj.get("type", "AsymmetricX509Cert")
    if key_type != "AsymmetricX509Cert":
        raise reader.error(entry, "type", f"only AsymmetricX509Cert is supported (got "
                           f"{key_type!r})")
    certificate = _parse_certificate(reader, entry, reader.string(entry, obj, "key") or "")
    sha1 = certificate.fingerprint(hashes.SHA1())  # noqa: S303 - Entra's x5t is SHA-1
    identifier = obj.get("customKeyIdentifier")
    if identifier is not None and not _identifier_matches(identifier, sha1):
        raise reader.error(entry, "customKeyIdentifier",
                           "does not match the certificate's SHA-1 thumbprint "
                           f"({sha1.hex().upper()})")
    return KeyCredential(key_id=str(obj.get("keyId") or ""), certificate=certificate,
                         sha1_thumbprint=sha1,
                         sha256_thumbprint=certificate.fingerprint(hashes.SHA256()),
                         display_name=obj.get("displayName"))


def _parse_certificate(reader: ReaderLike, entry: str, text: str) -> x509.Certificate:
    try:
        if "-----BEGIN CERTIFICATE-----" in text:
            return x509.load_pem_x509_certificate(text.encode())
        return x509.load_der_x509_certificate(base64.b64decode(text, validate=True))
    except (ValueError, binascii.Error):
        raise reader.error(entry, "key", "must be an X.509 certificate: base64 DER (as Graph "
                           "returns it) or PEM text") from None


def _identifier_matches(identifier: Any, sha1: bytes) -> bool:
    """Graph shows customKeyIdentifier as base64 of the thumbprint; the portal shows hex."""
    if not isinstance(identifier, str):
        return False
    if identifier.strip().upper() == sha1.hex().upper():
        return True
    try:
        return base64.b64decode(identifier, validate=True) == sha1
    except (ValueError, binascii.Error):
        return False


def read_token_lifetimes(reader: ReaderLike, entry: str, obj: Mapping[str, Any]) -> dict[str, int]:
    lifetimes = obj.get("tokenLifetimes", {})
    if not isinstance(lifetimes, dict):
        raise reader.error(entry, "tokenLifetimes", "must be an object of seconds")
    for name, value in lifetimes.items():
        if name not in TOKEN_LIFETIME_KEYS:
            raise reader.error(entry, f"tokenLifetimes.{name}",
                               f"unknown; expected one of {', '.join(TOKEN_LIFETIME_KEYS)}")
        if isinstance(value, bool) or not isinstance(value, int) or not (
                MIN_LIFETIME_SECONDS <= value <= MAX_LIFETIME_SECONDS):
            raise reader.error(entry, f"tokenLifetimes.{name}",
                               f"must be a whole number of seconds from {MIN_LIFETIME_SECONDS} "
                               f"to {MAX_LIFETIME_SECONDS} (got {value!r})")
    return dict(lifetimes)


def read_id_token_optional_claims(reader: ReaderLike, entry: str,
                                  obj: Mapping[str, Any]) -> frozenset[str]:
    optional = obj.get("optionalClaims", {})
    if not isinstance(optional, dict):
        raise reader.error(entry, "optionalClaims", "must be an object (idToken, accessToken, ...)")
    names = set()
    for index, claim in enumerate(array_field(reader, entry, optional, "idToken")):
        name = claim.get("name") if isinstance(claim, dict) else None
        if name not in SUPPORTED_OPTIONAL_ID_TOKEN_CLAIMS:
            raise reader.error(entry, f"optionalClaims.idToken[{index}].name",
                               f"must be one of {', '.join(SUPPORTED_OPTIONAL_ID_TOKEN_CLAIMS)} "
                               f"(got {name!r})")
        names.add(name)
    return frozenset(names)


# Graph's per-user MFA state (beta: /users/{id}/authentication/requirements, perUserMfaState),
# written on the user object in the directory file.
MFA_STATES = ("disabled", "enabled", "enforced")


def read_mfa_state(reader: ReaderLike, entry: str, obj: Mapping[str, Any]) -> bool:
    """Whether the user must use multi-factor authentication: `perUserMfaState` "enforced" (or
    "enabled", which Entra enforces at the next interactive sign-in). The emulator has no second
    factor: interactive sign-ins pass with the password alone, while the password grant, which
    cannot prompt, is refused (AADSTS50076)."""
    state = obj.get("perUserMfaState")
    if state is None:
        return False
    if state not in MFA_STATES:
        raise reader.error(entry, "perUserMfaState", f"must be one of {', '.join(MFA_STATES)}")
    return state != "disabled"
