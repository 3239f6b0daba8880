"""The directory file: a tenant, its users and its applications, in Microsoft Graph's shapes.

A user is a Graph `user` resource plus `passwordProfile.password` (and our optional `photo`,
a path relative to the file, and `perUserMfaState`). An application is a Graph `application`
resource: `appId`, `displayName`, `web.redirectUris`, `publicClient.redirectUris`,
`isFallbackPublicClient`, `passwordCredentials[].secretText`, `keyCredentials[]`
(`key` = base64 DER certificate as Graph returns it; PEM text is accepted too), plus our
optional `tokenLifetimes` (seconds). The authorization fields (groups, app roles, exposed
scopes, service principals, app-role assignments, permission grants) are read by
`directory_authz`. A malformed file is refused with a `DirectoryError` naming the file, the
entry and the field.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from entra_emulator.directory_authz import (
    AppRole,
    AppRoleAssignment,
    Group,
    PermissionGrant,
    PermissionScope,
    ResourceAccess,
    ServicePrincipal,
    entry_name,
    read_api,
    read_app_role_assignment,
    read_group,
    read_permission_grant,
    read_service_principal,
)
from entra_emulator.directory_credentials import (
    MAX_LIFETIME_SECONDS,
    MIN_LIFETIME_SECONDS,
    SUPPORTED_OPTIONAL_ID_TOKEN_CLAIMS,
    TOKEN_LIFETIME_KEYS,
    KeyCredential,
    PasswordCredential,
    read_id_token_optional_claims,
    read_key_credential,
    read_mfa_state,
    read_password_credential,
    read_token_lifetimes,
)
from entra_emulator.directory_queries import DirectoryAccess, check_references
from entra_emulator.redirect_uris import is_web_redirect_uri, read_public_client

__all__ = ["MAX_LIFETIME_SECONDS", "MIN_LIFETIME_SECONDS", "SUPPORTED_OPTIONAL_ID_TOKEN_CLAIMS",
           "TOKEN_LIFETIME_KEYS", "AppRole", "AppRoleAssignment", "Application", "Directory",
           "DirectoryError", "Group", "KeyCredential", "PasswordCredential", "PermissionGrant",
           "PermissionScope", "ResourceAccess", "ServicePrincipal", "Tenant", "User",
           "load_directory", "parse_directory"]

DEFAULT_DIRECTORY = Path(__file__).with_name("default_directory.json")



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
    # Our `perUserMfaState` ("enforced": MFA is required, so the password grant is refused).
    mfa_required: bool = False

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
    # Authorization (directory_authz): what the app exposes and what it asks of others.
    identifier_uris: tuple[str, ...] = ()
    api_scopes: tuple[PermissionScope, ...] = ()  # api.oauth2PermissionScopes
    app_roles: tuple[AppRole, ...] = ()
    requested_access_token_version: int = 1       # api.requestedAccessTokenVersion (null = 1)
    group_membership_claims: str | None = None    # None when absent or "None"
    required_resource_access: tuple[ResourceAccess, ...] = ()
    # Optional access-token claims the app (as a resource) asked for, e.g. idtyp.
    access_token_optional_claims: frozenset[str] = frozenset()
    # The id of its service principal when the file's servicePrincipals declares one.
    declared_service_principal_id: str | None = None
    # publicClient.redirectUris and isFallbackPublicClient (redirect_uris.py).
    public_client_redirect_uris: tuple[str, ...] = ()
    is_fallback_public_client: bool = False

    @property
    def service_principal_id(self) -> str:
        """The object id of the app's service principal in the tenant (stable per appId)."""
        return self.declared_service_principal_id or str(
            uuid.uuid5(uuid.NAMESPACE_URL, f"servicePrincipal:{self.app_id}"))

    def api_scope(self, value: str) -> PermissionScope | None:
        """The exposed scope named `value` (case-insensitive), enabled or not."""
        wanted = value.lower()
        return next((s for s in self.api_scopes if s.value.lower() == wanted), None)

    def app_role(self, role_id: str) -> AppRole | None:
        return next((r for r in self.app_roles if r.id == role_id), None)

    def key_credential_for(self, *, sha1: bytes | None = None,
                           sha256: bytes | None = None) -> KeyCredential | None:
        for credential in self.key_credentials:
            if (sha256 is not None and credential.sha256_thumbprint == sha256) or (
                    sha1 is not None and credential.sha1_thumbprint == sha1):
                return credential
        return None


@dataclass(frozen=True)
class Directory(DirectoryAccess):
    tenant: Tenant
    users: tuple[User, ...]
    applications: tuple[Application, ...]
    source: Path | None = None
    groups: tuple[Group, ...] = ()
    service_principals: tuple[ServicePrincipal, ...] = ()
    app_role_assignments: tuple[AppRoleAssignment, ...] = ()
    oauth2_permission_grants: tuple[PermissionGrant, ...] = ()

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
    groups = tuple(read_group(reader, index, entry)
                   for index, entry in enumerate(_optional_array(reader, document, "groups")))
    _require_unique(reader, "groups", [(g.id, "id") for g in groups])
    _require_unique(reader, "groups/users", [(o, "id") for o in
                                             [*(u.id for u in users), *(g.id for g in groups)]])
    principals = tuple(read_service_principal(reader, index, entry) for index, entry in
                       enumerate(_optional_array(reader, document, "servicePrincipals")))
    _require_unique(reader, "servicePrincipals", [(p.app_id, "appId") for p in principals])
    _require_unique(reader, "servicePrincipals", [(p.id, "id") for p in principals])
    declared = {p.app_id: p.id for p in principals}
    applications = tuple(replace(app, declared_service_principal_id=declared.get(app.app_id))
                         for app in applications)
    assignments = tuple(read_app_role_assignment(reader, index, entry) for index, entry in
                        enumerate(_optional_array(reader, document, "appRoleAssignments")))
    grants = tuple(read_permission_grant(reader, index, entry) for index, entry in
                   enumerate(_optional_array(reader, document, "oauth2PermissionGrants")))
    directory = Directory(tenant=tenant, users=users, applications=applications, source=source,
                          groups=groups, service_principals=principals,
                          app_role_assignments=assignments, oauth2_permission_grants=grants)
    return replace(directory, app_role_assignments=check_references(reader, directory))


def _optional_array(reader: _Reader, document: dict[str, Any], name: str) -> list[Any]:
    return reader.array(document, name) if document.get(name) is not None else []


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


_entry_name = entry_name


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
    graph = {key: value for key, value in obj.items()
             if key not in ("passwordProfile", "photo", "perUserMfaState")}
    user_id = reader.guid(entry, obj, "id")
    graph["id"] = user_id
    graph.setdefault("businessPhones", [])
    return User(id=user_id, user_principal_name=upn,
                display_name=reader.string(entry, obj, "displayName") or "",
                password=password, graph=graph, photo=photo,
                mfa_required=read_mfa_state(reader, entry, obj))


def _read_photo(reader: _Reader, entry: str, obj: Mapping[str, Any], source: Path) -> Path | None:
    name = reader.string(entry, obj, "photo", required=False)
    if name is None:
        return None
    path = (source.parent / name).resolve()
    if not path.is_file():
        raise reader.error(entry, "photo", f"file not found: {path}")
    return path


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
        if not is_web_redirect_uri(uri):
            raise reader.error(entry, "web.redirectUris",
                               f"{uri!r} is not an absolute http(s) URL without a fragment")
    secrets = tuple(read_password_credential(reader, f"{entry}.passwordCredentials[{i}]", c)
                    for i, c in enumerate(_list(reader, entry, obj, "passwordCredentials")))
    keys = tuple(read_key_credential(reader, f"{entry}.keyCredentials[{i}]", c)
                 for i, c in enumerate(_list(reader, entry, obj, "keyCredentials")))
    graph = {k: v for k, v in obj.items() if k not in ("passwordCredentials", "tokenLifetimes")}
    return Application(**read_api(reader, entry, obj), **read_public_client(reader, entry, obj),
                       app_id=reader.guid(entry, obj, "appId"),
                       display_name=reader.string(entry, obj, "displayName") or "",
                       redirect_uris=tuple(uris), password_credentials=secrets,
                       key_credentials=keys,
                       token_lifetimes=read_token_lifetimes(reader, entry, obj),
                       id_token_optional_claims=read_id_token_optional_claims(reader, entry, obj),
                       graph=graph)


def _list(reader: _Reader, entry: str, obj: Mapping[str, Any], name: str) -> list[Any]:
    value = obj.get(name, [])
    if not isinstance(value, list):
        raise reader.error(entry, name, "must be an array")
    return value


def _require_unique(reader: _Reader, kind: str, values: list[tuple[str, str]]) -> None:
    seen: set[str] = set()
    for index, (value, name) in enumerate(values):
        if value in seen:
            raise reader.error(f"{kind}[{index}]", name, f"duplicates another entry ({value})")
        seen.add(value)
