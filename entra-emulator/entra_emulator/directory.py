"""The directory file: a tenant, its users and its applications, in Microsoft Graph's shapes.

A user is a Graph `user` resource plus `passwordProfile.password` (and our optional `photo`,
a path relative to the file). An application is a Graph `application` resource: `appId`,
`displayName`, `web.redirectUris`, `passwordCredentials[].secretText`, `keyCredentials[]`
(`key` = base64 DER certificate as Graph returns it; PEM text is accepted too), plus our
optional `tokenLifetimes` (seconds). A malformed file is refused with a `DirectoryError`
naming the file, the entry and the field.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes

DEFAULT_DIRECTORY = Path(__file__).with_name("default_directory.json")

TOKEN_LIFETIME_KEYS = ("accessToken", "idToken", "refreshToken", "authorizationCode")
# Entra's configurable token lifetime policy allows 10 minutes to 1 day for access/ID tokens;
# we allow shorter ones so tests can watch tokens expire without long sleeps.
MIN_LIFETIME_SECONDS = 1
MAX_LIFETIME_SECONDS = 400 * 24 * 3600


class DirectoryError(ValueError):
    """The directory file is malformed; the message names the file, entry and field."""


@dataclass(frozen=True)
class Tenant:
    id: str
    display_name: str
    default_domain: str


@dataclass(frozen=True)
class User:
    id: str
    user_principal_name: str
    display_name: str
    password: str
    graph: dict[str, Any]  # the Graph user resource, without passwordProfile and photo
    photo: Path | None = None

    @property
    def given_name(self) -> str | None:
        return self.graph.get("givenName")

    @property
    def surname(self) -> str | None:
        return self.graph.get("surname")

    @property
    def mail(self) -> str | None:
        return self.graph.get("mail")


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


@dataclass(frozen=True)
class Application:
    app_id: str
    display_name: str
    redirect_uris: tuple[str, ...]
    password_credentials: tuple[PasswordCredential, ...] = ()
    key_credentials: tuple[KeyCredential, ...] = ()
    token_lifetimes: Mapping[str, int] = field(default_factory=dict)
    # Graph's optionalClaims.idToken[].name: the optional ID token claims the app asked for.
    id_token_optional_claims: frozenset[str] = frozenset()
    graph: dict[str, Any] = field(default_factory=dict)

    @property
    def service_principal_id(self) -> str:
        """The object id of the app's service principal in the tenant (stable per appId)."""
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"servicePrincipal:{self.app_id}"))

    def key_credential_for(self, *, sha1: bytes | None = None,
                           sha256: bytes | None = None) -> KeyCredential | None:
        for credential in self.key_credentials:
            if (sha256 is not None and credential.sha256_thumbprint == sha256) or (
                    sha1 is not None and credential.sha1_thumbprint == sha1):
                return credential
        return None


@dataclass(frozen=True)
class Directory:
    tenant: Tenant
    users: tuple[User, ...]
    applications: tuple[Application, ...]
    source: Path | None = None

    @property
    def tenant_id(self) -> str:
        return self.tenant.id

    def user_by_id(self, oid: Any) -> User | None:
        if not isinstance(oid, str):
            return None
        return self._users_by_id.get(oid.lower())

    def user_by_username(self, username: str) -> User | None:
        """Users sign in with their UPN (or their mail), compared case-insensitively."""
        wanted = username.strip().lower()
        if not wanted:
            return None
        for user in self.users:
            if user.user_principal_name.lower() == wanted or (
                    user.mail or "").lower() == wanted:
                return user
        return None

    def photo_path(self, user: Mapping[str, Any] | User) -> Path | None:
        oid = user.id if isinstance(user, User) else user.get("id")
        found = self.user_by_id(oid)
        return found.photo if found is not None else None

    def application(self, app_id: str | None) -> Application | None:
        if not app_id:
            return None
        return self._applications_by_id.get(app_id.strip().lower())

    # Indexes built on first use: token, Graph and sign-in requests each look up an
    # application and a user, which would otherwise be a scan of the whole directory.
    @cached_property
    def _users_by_id(self) -> dict[str, User]:
        return {user.id: user for user in self.users}

    @cached_property
    def _applications_by_id(self) -> dict[str, Application]:
        return {app.app_id: app for app in self.applications}

    def resolve_tenant(self, segment: str) -> str | None:
        """The tenant id a URL's tenant segment names: GUID, domain, common, organizations."""
        lowered = segment.lower()
        if lowered in ("common", "organizations", self.tenant.id,
                       self.tenant.default_domain.lower()):
            return self.tenant.id
        return None


def load_directory(path: str | Path | None = None) -> Directory:
    """Read and validate a directory file (the packaged default when `path` is None)."""
    source = Path(path) if path is not None else DEFAULT_DIRECTORY
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as problem:
        raise DirectoryError(f"{source}: cannot read the directory file ({problem.strerror})")\
            from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as problem:
        raise DirectoryError(f"{source}: not valid JSON: {problem.msg} at line "
                             f"{problem.lineno}, column {problem.colno}") from None
    return parse_directory(document, source)


def parse_directory(document: Any, source: Path) -> Directory:
    reader = _Reader(source)
    if not isinstance(document, dict):
        raise reader.error("(top level)", "", "must be a JSON object with tenant, users and "
                           "applications")
    tenant = _read_tenant(reader, document.get("tenant"))
    users = tuple(_read_user(reader, index, entry, source)
                  for index, entry in enumerate(reader.array(document, "users")))
    applications = tuple(_read_application(reader, index, entry)
                         for index, entry in enumerate(reader.array(document, "applications")))
    _require_unique(reader, "users", [(u.id, "id") for u in users])
    _require_unique(reader, "users",
                    [(u.user_principal_name.lower(), "userPrincipalName") for u in users])
    _require_unique(reader, "applications", [(a.app_id, "appId") for a in applications])
    return Directory(tenant=tenant, users=users, applications=applications, source=source)


class _Reader:
    """Field access that names the file, the entry and the field in every complaint."""

    def __init__(self, source: Path) -> None:
        self.source = source

    def error(self, entry: str, name: str, problem: str) -> DirectoryError:
        where = f"{entry}, field '{name}'" if name else entry
        return DirectoryError(f"{self.source}: {where}: {problem}")

    def array(self, document: dict[str, Any], name: str) -> list[Any]:
        value = document.get(name)
        if not isinstance(value, list):
            raise self.error("(top level)", name, "must be a JSON array")
        return value

    def string(self, entry: str, obj: Mapping[str, Any], name: str, *,
               required: bool = True) -> str | None:
        value = obj.get(name)
        if value is None and not required:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.error(entry, name, "is required and must be a non-empty string"
                             if required else "must be a non-empty string")
        return value.strip()

    def guid(self, entry: str, obj: Mapping[str, Any], name: str) -> str:
        value = self.string(entry, obj, name) or ""
        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise self.error(entry, name, f"must be a GUID (got {value!r})") from None


def _read_tenant(reader: _Reader, tenant: Any) -> Tenant:
    entry = "tenant"
    if not isinstance(tenant, dict):
        raise reader.error(entry, "", "must be an object with id, displayName, defaultDomain")
    domain = reader.string(entry, tenant, "defaultDomain") or ""
    if not re.fullmatch(r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+", domain):
        raise reader.error(entry, "defaultDomain", f"must be a domain name (got {domain!r})")
    return Tenant(id=reader.guid(entry, tenant, "id"),
                  display_name=reader.string(entry, tenant, "displayName") or "",
                  default_domain=domain)


def _entry_name(kind: str, index: int, obj: Any, key: str) -> str:
    label = obj.get(key) if isinstance(obj, dict) else None
    return f"{kind}[{index}] ({label})" if isinstance(label, str) else f"{kind}[{index}]"


def _read_user(reader: _Reader, index: int, obj: Any, source: Path) -> User:
    entry = _entry_name("users", index, obj, "userPrincipalName")
    if not isinstance(obj, dict):
        raise reader.error(entry, "", "must be a Graph user object")
    upn = reader.string(entry, obj, "userPrincipalName") or ""
    if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", upn):
        raise reader.error(entry, "userPrincipalName", f"must look like name@domain (got {upn!r})")
    profile = obj.get("passwordProfile")
    if not isinstance(profile, dict):
        raise reader.error(entry, "passwordProfile", "is required: {\"password\": \"...\"}")
    password = profile.get("password")
    if not isinstance(password, str) or not password:
        raise reader.error(entry, "passwordProfile.password", "must be a non-empty string")
    for name in ("givenName", "surname", "mail", "jobTitle", "officeLocation", "mobilePhone",
                 "preferredLanguage"):
        if obj.get(name) is not None and not isinstance(obj.get(name), str):
            raise reader.error(entry, name, "must be a string or null")
    phones = obj.get("businessPhones", [])
    if not isinstance(phones, list) or not all(isinstance(p, str) for p in phones):
        raise reader.error(entry, "businessPhones", "must be an array of strings")
    photo = _read_photo(reader, entry, obj, source)
    graph = {key: value for key, value in obj.items() if key not in ("passwordProfile", "photo")}
    user_id = reader.guid(entry, obj, "id")
    graph["id"] = user_id
    graph.setdefault("businessPhones", [])
    return User(id=user_id, user_principal_name=upn,
                display_name=reader.string(entry, obj, "displayName") or "",
                password=password, graph=graph, photo=photo)


def _read_photo(reader: _Reader, entry: str, obj: Mapping[str, Any], source: Path) -> Path | None:
    name = reader.string(entry, obj, "photo", required=False)
    if name is None:
        return None
    path = (source.parent / name).resolve()
    if not path.is_file():
        raise reader.error(entry, "photo", f"file not found: {path}")
    return path


# Optional ID token claims the emulator can add (Entra has many more).
SUPPORTED_OPTIONAL_ID_TOKEN_CLAIMS = ("login_hint",)


def _read_application(reader: _Reader, index: int, obj: Any) -> Application:
    entry = _entry_name("applications", index, obj, "displayName")
    if not isinstance(obj, dict):
        raise reader.error(entry, "", "must be a Graph application object")
    web = obj.get("web", {})
    if not isinstance(web, dict):
        raise reader.error(entry, "web", "must be an object with redirectUris")
    uris = web.get("redirectUris", [])
    if not isinstance(uris, list):
        raise reader.error(entry, "web.redirectUris", "must be an array of URLs")
    for uri in uris:
        if not _is_redirect_uri(uri):
            raise reader.error(entry, "web.redirectUris",
                               f"{uri!r} is not an absolute http(s) URL without a fragment")
    secrets = tuple(_read_password_credential(reader, f"{entry}.passwordCredentials[{i}]", c)
                    for i, c in enumerate(_list(reader, entry, obj, "passwordCredentials")))
    keys = tuple(_read_key_credential(reader, f"{entry}.keyCredentials[{i}]", c)
                 for i, c in enumerate(_list(reader, entry, obj, "keyCredentials")))
    graph = {k: v for k, v in obj.items() if k not in ("passwordCredentials", "tokenLifetimes")}
    return Application(app_id=reader.guid(entry, obj, "appId"),
                       display_name=reader.string(entry, obj, "displayName") or "",
                       redirect_uris=tuple(uris), password_credentials=secrets,
                       key_credentials=keys,
                       token_lifetimes=_read_token_lifetimes(reader, entry, obj),
                       id_token_optional_claims=_read_optional_claims(reader, entry, obj),
                       graph=graph)


def _list(reader: _Reader, entry: str, obj: Mapping[str, Any], name: str) -> list[Any]:
    value = obj.get(name, [])
    if not isinstance(value, list):
        raise reader.error(entry, name, "must be an array")
    return value


def _is_redirect_uri(uri: Any) -> bool:
    if not isinstance(uri, str):
        return False
    parts = urlsplit(uri)
    return parts.scheme in ("http", "https") and bool(parts.netloc) and not parts.fragment \
        and "#" not in uri


def _read_password_credential(reader: _Reader, entry: str, obj: Any) -> PasswordCredential:
    if not isinstance(obj, dict):
        raise reader.error(entry, "", "must be an object with secretText")
    return PasswordCredential(
        key_id=str(obj.get("keyId") or ""),
        secret_text=reader.string(entry, obj, "secretText") or "",
        end=_read_datetime(reader, entry, obj, "endDateTime"),
        display_name=obj.get("displayName"))


def _read_datetime(reader: _Reader, entry: str, obj: Mapping[str, Any],
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


def _read_key_credential(reader: _Reader, entry: str, obj: Any) -> KeyCredential:
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


def _parse_certificate(reader: _Reader, entry: str, text: str) -> x509.Certificate:
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


def _read_token_lifetimes(reader: _Reader, entry: str, obj: Mapping[str, Any]) -> dict[str, int]:
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


def _read_optional_claims(reader: _Reader, entry: str, obj: Mapping[str, Any]) -> frozenset[str]:
    optional = obj.get("optionalClaims", {})
    if not isinstance(optional, dict):
        raise reader.error(entry, "optionalClaims", "must be an object (idToken, accessToken, ...)")
    names = set()
    for index, claim in enumerate(_list(reader, entry, optional, "idToken")):
        name = claim.get("name") if isinstance(claim, dict) else None
        if name not in SUPPORTED_OPTIONAL_ID_TOKEN_CLAIMS:
            raise reader.error(entry, f"optionalClaims.idToken[{index}].name",
                               f"must be one of {', '.join(SUPPORTED_OPTIONAL_ID_TOKEN_CLAIMS)} "
                               f"(got {name!r})")
        names.add(name)
    return frozenset(names)


def _require_unique(reader: _Reader, kind: str, values: list[tuple[str, str]]) -> None:
    seen: set[str] = set()
    for index, (value, name) in enumerate(values):
        if value in seen:
            raise reader.error(f"{kind}[{index}]", name, f"duplicates another entry ({value})")
        seen.add(value)
