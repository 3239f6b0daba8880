"""The authorization half of the directory file, in Microsoft Graph's shapes.

An application's `identifierUris`, `api.oauth2PermissionScopes`, `api.requestedAccessTokenVersion`,
`appRoles`, `groupMembershipClaims` and `requiredResourceAccess`; the top-level `groups`
(members: user or group ids, nested), `servicePrincipals` (`id`, `appId`,
`appRoleAssignmentRequired`), `appRoleAssignments` (principal → app role of a resource's service
principal) and `oauth2PermissionGrants` (delegated consent, `AllPrincipals` = tenant-wide admin
consent). Queries and cross-reference checks are in `directory_queries`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
DEFAULT_ACCESS_ROLE_ID = "00000000-0000-0000-0000-000000000000"
GROUP_MEMBERSHIP_CLAIMS = ("None", "SecurityGroup", "ApplicationGroup", "DirectoryRole", "All")
PRINCIPAL_TYPES = ("User", "Group", "ServicePrincipal")
# Optional access-token claims the emulator knows: `idtyp` ("app" in app-only tokens) and
# `groups` (accepted; the groups claim itself follows groupMembershipClaims).
SUPPORTED_OPTIONAL_ACCESS_TOKEN_CLAIMS = ("idtyp", "groups")


class ReaderLike(Protocol):
    def error(self, entry: str, name: str, problem: str) -> Exception: ...
    def string(self, entry: str, obj: Mapping[str, Any], name: str, *,
               required: bool = True) -> str | None: ...
    def guid(self, entry: str, obj: Mapping[str, Any], name: str) -> str: ...


@dataclass(frozen=True)
class Group:
    id: str
    display_name: str
    description: str | None
    security_enabled: bool
    mail_enabled: bool
    group_types: tuple[str, ...]
    members: tuple[str, ...]  # ids of users and groups (direct members)
    graph: Mapping[str, Any] | None = None  # the Graph group resource, without `members`


@dataclass(frozen=True)
class PermissionScope:
    """One of `api.oauth2PermissionScopes`: a delegated permission the API exposes."""
    id: str
    value: str
    type: str  # "User" (users may consent) or "Admin" (admin consent only)
    is_enabled: bool = True
    admin_consent_display_name: str | None = None
    admin_consent_description: str | None = None
    user_consent_display_name: str | None = None
    user_consent_description: str | None = None


@dataclass(frozen=True)
class AppRole:
    id: str
    value: str | None
    display_name: str | None
    allowed_member_types: tuple[str, ...]  # "User" (users and groups), "Application"
    is_enabled: bool = True
    description: str | None = None


@dataclass(frozen=True)
class ResourceAccess:
    """One `requiredResourceAccess` entry: the permissions an app statically asks of a resource."""
    resource_app_id: str
    scope_ids: tuple[str, ...]  # resourceAccess[] with type "Scope" (delegated)
    role_ids: tuple[str, ...]   # resourceAccess[] with type "Role" (application)


@dataclass(frozen=True)
class ServicePrincipal:
    id: str
    app_id: str
    app_role_assignment_required: bool = False


@dataclass(frozen=True)
class AppRoleAssignment:
    id: str
    principal_id: str
    principal_type: str  # User, Group, ServicePrincipal
    resource_id: str     # the resource's service principal id
    app_role_id: str


@dataclass(frozen=True)
class PermissionGrant:
    """A Graph oauth2PermissionGrant: delegated permissions a client holds on a resource."""
    id: str
    client_id: str        # the client's service principal id
    consent_type: str     # AllPrincipals (admin, tenant-wide) or Principal (one user)
    principal_id: str | None
    resource_id: str      # the resource's service principal id
    scopes: tuple[str, ...]


def entry_name(kind: str, index: int, obj: Any, key: str) -> str:
    label = obj.get(key) if isinstance(obj, dict) else None
    return f"{kind}[{index}] ({label})" if isinstance(label, str) else f"{kind}[{index}]"


def _array(reader: ReaderLike, entry: str, obj: Mapping[str, Any], name: str) -> list[Any]:
    value = obj.get(name, [])
    if value is None:
        return []
    if not isinstance(value, list):
        raise reader.error(entry, name, "must be an array")
    return value


array_field = _array   # for the other directory readers


def _bool(reader: ReaderLike, entry: str, obj: Mapping[str, Any], name: str,
          default: bool) -> bool:
    value = obj.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise reader.error(entry, name, "must be true or false")
    return value


def _claim_value(reader: ReaderLike, entry: str, obj: Mapping[str, Any], name: str) -> str | None:
    """A `value` that goes into a token: no spaces, at most 120 characters (Graph's rule)."""
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value or any(c.isspace() for c in value) \
            or len(value) > 120:
        raise reader.error(entry, name, "must be a string of 1 to 120 characters without spaces")
    return value


def _optional_string(reader: ReaderLike, entry: str, obj: Mapping[str, Any],
                     name: str) -> str | None:
    value = obj.get(name)
    if value is not None and not isinstance(value, str):
        raise reader.error(entry, name, "must be a string or null")
    return value


def read_group(reader: ReaderLike, index: int, obj: Any) -> Group:
    entry = entry_name("groups", index, obj, "displayName")
    if not isinstance(obj, dict):
        raise reader.error(entry, "", "must be a Graph group object")
    group_types = _array(reader, entry, obj, "groupTypes")
    if not all(isinstance(kind, str) for kind in group_types):
        raise reader.error(entry, "groupTypes", "must be an array of strings (e.g. [\"Unified\"])")
    members = []
    for position, member in enumerate(_array(reader, entry, obj, "members")):
        # Graph lists members as directoryObjects: accept those ({"id": ...}) or bare ids.
        value = member.get("id") if isinstance(member, dict) else member
        name = f"members[{position}]"
        members.append(reader.guid(entry, {name: value}, name))
    description = _optional_string(reader, entry, obj, "description")
    graph = {key: value for key, value in obj.items() if key != "members"}
    group_id = reader.guid(entry, obj, "id")
    graph["id"] = group_id
    return Group(id=group_id, display_name=reader.string(entry, obj, "displayName") or "",
                 description=description,
                 security_enabled=_bool(reader, entry, obj, "securityEnabled", True),
                 mail_enabled=_bool(reader, entry, obj, "mailEnabled", False),
                 group_types=tuple(group_types), members=tuple(members), graph=graph)


def _read_scalar_guid(reader: ReaderLike, entry: str, name: str, value: Any) -> str:
    return reader.guid(entry, {name: value}, name)


def read_api(reader: ReaderLike, entry: str, obj: Mapping[str, Any]) -> dict[str, Any]:
    """An application's authorization fields, as keyword arguments for `Application`."""
    uris = _array(reader, entry, obj, "identifierUris")
    for uri in uris:
        if not isinstance(uri, str) or not uri.strip() or any(c.isspace() for c in uri):
            raise reader.error(entry, "identifierUris", f"{uri!r} is not a URI")
    api = obj.get("api") or {}
    if not isinstance(api, dict):
        raise reader.error(entry, "api", "must be an object (oauth2PermissionScopes, "
                           "requestedAccessTokenVersion)")
    version = api.get("requestedAccessTokenVersion")
    if version not in (None, 1, 2) or isinstance(version, bool):
        raise reader.error(entry, "api.requestedAccessTokenVersion",
                           f"must be 1, 2 or null (got {version!r})")
    scopes = tuple(_read_permission_scope(reader, f"{entry}.api.oauth2PermissionScopes[{i}]", s)
                   for i, s in enumerate(_array(reader, entry, api, "oauth2PermissionScopes")))
    roles = tuple(_read_app_role(reader, f"{entry}.appRoles[{i}]", r)
                  for i, r in enumerate(_array(reader, entry, obj, "appRoles")))
    _unique(reader, entry, "api.oauth2PermissionScopes", [s.id for s in scopes], "id")
    _unique(reader, entry, "api.oauth2PermissionScopes", [s.value.lower() for s in scopes],
            "value")
    _unique(reader, entry, "appRoles", [r.id for r in roles], "id")
    _unique(reader, entry, "appRoles", [r.value for r in roles if r.value], "value")
    claims = obj.get("groupMembershipClaims")
    if claims is not None and claims not in GROUP_MEMBERSHIP_CLAIMS:
        raise reader.error(entry, "groupMembershipClaims",
                           f"must be one of {', '.join(GROUP_MEMBERSHIP_CLAIMS)} or null "
                           f"(got {claims!r})")
    required = tuple(_read_resource_access(reader, f"{entry}.requiredResourceAccess[{i}]", r)
                     for i, r in enumerate(_array(reader, entry, obj, "requiredResourceAccess")))
    optional = obj.get("optionalClaims") or {}
    access_claims = set()
    for index, claim in enumerate(_array(reader, entry, optional, "accessToken")
                                  if isinstance(optional, dict) else []):
        name = claim.get("name") if isinstance(claim, dict) else None
        if name not in SUPPORTED_OPTIONAL_ACCESS_TOKEN_CLAIMS:
            raise reader.error(entry, f"optionalClaims.accessToken[{index}].name",
                               f"must be one of {', '.join(SUPPORTED_OPTIONAL_ACCESS_TOKEN_CLAIMS)}"
                               f" (got {name!r})")
        access_claims.add(name)
    return {"identifier_uris": tuple(u.strip() for u in uris), "api_scopes": scopes,
            "access_token_optional_claims": frozenset(access_claims),
            "app_roles": roles, "requested_access_token_version": version or 1,
            "group_membership_claims": None if claims == "None" else claims,
            "required_resource_access": required}


def _unique(reader: ReaderLike, entry: str, name: str, values: list[str], key: str) -> None:
    seen: set[str] = set()
    for index, value in enumerate(values):
        if value in seen:
            raise reader.error(entry, f"{name}[{index}].{key}",
                               f"duplicates another entry ({value})")
        seen.add(value)


def _read_permission_scope(reader: ReaderLike, entry: str, obj: Any) -> PermissionScope:
    if not isinstance(obj, dict):
        raise reader.error(entry, "", "must be a permissionScope object (id, value, type)")
    kind = obj.get("type", "User")
    if kind not in ("User", "Admin"):
        raise reader.error(entry, "type", f"must be User or Admin (got {kind!r})")
    value = _claim_value(reader, entry, obj, "value")
    if value is None:
        raise reader.error(entry, "value", "is required (the name that goes into scp)")
    texts = {name: _optional_string(reader, entry, obj, name) for name in (
        "adminConsentDisplayName", "adminConsentDescription", "userConsentDisplayName",
        "userConsentDescription")}
    return PermissionScope(id=reader.guid(entry, obj, "id"), value=value, type=kind,
                           is_enabled=_bool(reader, entry, obj, "isEnabled", True),
                           admin_consent_display_name=texts["adminConsentDisplayName"],
                           admin_consent_description=texts["adminConsentDescription"],
                           user_consent_display_name=texts["userConsentDisplayName"],
                           user_consent_description=texts["userConsentDescription"])


def _read_app_role(reader: ReaderLike, entry: str, obj: Any) -> AppRole:
    if not isinstance(obj, dict):
        raise reader.error(entry, "", "must be an appRole object (id, value, allowedMemberTypes)")
    types = _array(reader, entry, obj, "allowedMemberTypes")
    if not types or any(kind not in ("User", "Application") for kind in types):
        raise reader.error(entry, "allowedMemberTypes",
                           "must be a non-empty array of \"User\" and/or \"Application\"")
    return AppRole(id=reader.guid(entry, obj, "id"),
                   value=_claim_value(reader, entry, obj, "value"),
                   display_name=_optional_string(reader, entry, obj, "displayName"),
                   allowed_member_types=tuple(types),
                   is_enabled=_bool(reader, entry, obj, "isEnabled", True),
                   description=_optional_string(reader, entry, obj, "description"))


def _read_resource_access(reader: ReaderLike, entry: str, obj: Any) -> ResourceAccess:
    if not isinstance(obj, dict):
        raise reader.error(entry, "", "must be an object with resourceAppId and resourceAccess")
    scopes: list[str] = []
    roles: list[str] = []
    for index, access in enumerate(_array(reader, entry, obj, "resourceAccess")):
        where = f"resourceAccess[{index}]"
        if not isinstance(access, dict) or access.get("type") not in ("Scope", "Role"):
            raise reader.error(entry, f"{where}.type", "must be \"Scope\" or \"Role\"")
        identifier = _read_scalar_guid(reader, entry, f"{where}.id", access.get("id"))
        (scopes if access["type"] == "Scope" else roles).append(identifier)
    return ResourceAccess(resource_app_id=reader.guid(entry, obj, "resourceAppId"),
                          scope_ids=tuple(scopes), role_ids=tuple(roles))


def read_service_principal(reader: ReaderLike, index: int, obj: Any) -> ServicePrincipal:
    entry = entry_name("servicePrincipals", index, obj, "appId")
    if not isinstance(obj, dict):
        raise reader.error(entry, "", "must be a Graph servicePrincipal object (id, appId)")
    return ServicePrincipal(id=reader.guid(entry, obj, "id"),
                            app_id=reader.guid(entry, obj, "appId"),
                            app_role_assignment_required=_bool(
                                reader, entry, obj, "appRoleAssignmentRequired", False))


def read_app_role_assignment(reader: ReaderLike, index: int, obj: Any) -> AppRoleAssignment:
    entry = entry_name("appRoleAssignments", index, obj, "principalDisplayName")
    if not isinstance(obj, dict):
        raise reader.error(entry, "", "must be a Graph appRoleAssignment object (principalId, "
                           "resourceId, appRoleId)")
    kind = obj.get("principalType")
    if kind is not None and kind not in PRINCIPAL_TYPES:
        raise reader.error(entry, "principalType",
                           f"must be one of {', '.join(PRINCIPAL_TYPES)} (got {kind!r})")
    principal = reader.guid(entry, obj, "principalId")
    resource = reader.guid(entry, obj, "resourceId")
    role = reader.guid(entry, obj, "appRoleId")
    return AppRoleAssignment(
        id=_object_id(reader, entry, obj, f"appRoleAssignment:{principal}:{resource}:{role}"),
        principal_id=principal, principal_type=kind or "", resource_id=resource,
        app_role_id=role)


def _object_id(reader: ReaderLike, entry: str, obj: dict[str, Any], seed: str) -> str:
    """The entry's `id`, or one derived from `seed` (the same file gives the same ids)."""
    identifier = obj.get("id")
    if identifier is not None and not isinstance(identifier, str):
        raise reader.error(entry, "id", "must be a string")
    return identifier or str(uuid.uuid5(uuid.NAMESPACE_URL, seed))


def read_permission_grant(reader: ReaderLike, index: int, obj: Any) -> PermissionGrant:
    entry = entry_name("oauth2PermissionGrants", index, obj, "id")
    if not isinstance(obj, dict):
        raise reader.error(entry, "", "must be a Graph oauth2PermissionGrant object (clientId, "
                           "consentType, resourceId, scope)")
    consent_type = obj.get("consentType")
    if consent_type not in ("AllPrincipals", "Principal"):
        raise reader.error(entry, "consentType",
                           f"must be AllPrincipals or Principal (got {consent_type!r})")
    principal = None
    if consent_type == "Principal":
        principal = reader.guid(entry, obj, "principalId")
    elif obj.get("principalId") is not None:
        raise reader.error(entry, "principalId", "must be null when consentType is AllPrincipals")
    scope = obj.get("scope")
    if not isinstance(scope, str) or not scope.split():
        raise reader.error(entry, "scope", "must be a space-separated list of permission values")
    client = reader.guid(entry, obj, "clientId")
    resource = reader.guid(entry, obj, "resourceId")
    return PermissionGrant(
        id=_object_id(reader, entry, obj, f"grant:{client}:{resource}:{principal}"),
        client_id=client, consent_type=consent_type, principal_id=principal,
        resource_id=resource, scopes=tuple(dict.fromkeys(scope.split())))
