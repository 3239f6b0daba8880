"""Scopes as Entra reads them: OIDC scopes, Microsoft Graph permissions, the directory's own
APIs and `/.default`.

A bare permission (`User.Read`) means Microsoft Graph, as does the fully qualified form
(`https://graph.microsoft.com/User.Read`). A directory application's scope is named by any of
its `identifierUris` (`api://<appId>/ToDoList.Read`) or its bare appId (`<appId>/ToDoList.Read`)
(entra-authorization.md §3.1). Responses echo scopes in the form the app asked for (identity
compares them literally), without `offline_access` (entra-protocol.md §0.7).

Permissions are keyed as the consent store keeps them: OIDC and Graph permissions by their
name (`openid`, `User.Read`), a directory API's as `<appId>/<value>` (`.default` likewise).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

from entra_emulator.directory_authz import AppRole, PermissionScope
from entra_emulator.errors import entra_error

if TYPE_CHECKING:
    from entra_emulator.directory import Application, Directory

GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
GRAPH_RESOURCE = "https://graph.microsoft.com"
GRAPH_RESOURCE_ALIASES = (GRAPH_RESOURCE, GRAPH_APP_ID)

OIDC_SCOPES = ("openid", "profile", "email", "offline_access")

# Delegated Graph permissions we know, with the words the consent page shows for them.
GRAPH_PERMISSIONS: dict[str, str] = {
    "User.Read": "Sign you in and read your profile",
    "User.ReadWrite": "Read and update your profile",
    "User.ReadBasic.All": "Read all users' basic profiles",
    "User.Read.All": "Read all users' full profiles",
    "Mail.Read": "Read your mail",
    "Mail.ReadWrite": "Read and write access to your mail",
    "Mail.Send": "Send mail as you",
    "Calendars.Read": "Read your calendars",
    "Calendars.ReadWrite": "Have full access to your calendars",
    "Contacts.Read": "Read your contacts",
    "Files.Read": "Read your files",
    "Files.ReadWrite": "Have full access to your files",
    "People.Read": "Read your relevant people list",
    "Presence.Read": "Read your presence information",
    "Tasks.ReadWrite": "Create, read, update, and delete your tasks and task lists",
    "Group.Read.All": "Read all groups",
    "GroupMember.Read.All": "Read group memberships",
    "Directory.Read.All": "Read directory data",
}
# Graph's delegated permissions: id (as in requiredResourceAccess) and who may consent
# ("Admin": only an administrator, through a tenant-wide grant). Ids from Graph's
# published permissions reference.
GRAPH_DELEGATED: dict[str, tuple[str, str]] = {
    "User.Read": ("e1fe6dd8-ba31-4d61-89e7-88639da4683d", "User"),
    "User.ReadWrite": ("b4e74841-8e56-480b-be8b-910348b18b4c", "User"),
    "User.ReadBasic.All": ("b340eb25-3456-403f-be2f-af7a0d370277", "User"),
    "User.Read.All": ("a154be20-db9c-4678-8ab7-66f6cc099a59", "Admin"),
    "Mail.Read": ("570282fd-fa5d-430d-a7fd-fc8dc98a9dca", "User"),
    "Mail.ReadWrite": ("024d486e-b451-40bb-833d-3e66d98c5c73", "User"),
    "Mail.Send": ("e383f46e-2787-4529-855e-0e479a3ffac0", "User"),
    "Calendars.Read": ("465a38f9-76ea-45b9-9f34-9e8b0d4b0b42", "User"),
    "Calendars.ReadWrite": ("1ec239c2-d7c9-4623-a91a-a9775856bb36", "User"),
    "Contacts.Read": ("ff74d97f-43af-4b68-9f2a-b77ee6968c5d", "User"),
    "Files.Read": ("10465720-29dd-4523-a11a-6a75c743c9d9", "User"),
    "Files.ReadWrite": ("5c28f0bf-8a70-41f1-8ab2-9032436ddb65", "User"),
    "People.Read": ("ba47897c-39ec-4d83-8086-ee8256fa737d", "User"),
    "Presence.Read": ("76bc735e-aecd-4a1d-8b4c-2b915deabb79", "User"),
    "Tasks.ReadWrite": ("2219042f-cab5-40cc-b0d2-16b1540b4c5f", "User"),
    "Group.Read.All": ("5f8c59db-677d-491f-a6b8-5f174b11ec1d", "Admin"),
    "GroupMember.Read.All": ("bc024368-1153-4739-b217-4326f2e966d0", "Admin"),
    "Directory.Read.All": ("06da0dbc-49e2-44d2-8312-53f166ab848a", "Admin"),
}
GRAPH_DELEGATED_BY_ID = {ident: name for name, (ident, _) in GRAPH_DELEGATED.items()}
# Graph's application permissions (app roles), by id, for appRoleAssignments to Graph.
GRAPH_APP_ROLES: dict[str, str] = {
    "df021288-bdef-4463-88db-98f22de89214": "User.Read.All",
    "98830695-27a2-44f7-8c18-0c3ebc9698f6": "GroupMember.Read.All",
    "5b567255-7703-4780-807c-7be8301ae99b": "Group.Read.All",
    "7ab1d382-f21e-4acd-a863-ba3e13f7da61": "Directory.Read.All",
}
_PERMISSION_BY_LOWER = {name.lower(): name for name in GRAPH_PERMISSIONS}
# What a delegated `https://graph.microsoft.com/.default` grants: the app's static
# permissions, which for an app registered with the portal's defaults is User.Read.
DEFAULT_DELEGATED_PERMISSIONS = ("User.Read",)

OIDC_DESCRIPTIONS = {
    "openid": "Sign you in",
    "profile": "View your basic profile",
    "email": "View your email address",
    "offline_access": "Maintain access to data you have given it access to",
}




@dataclass(frozen=True)
class GraphResource:
    """Microsoft Graph as a resource, shaped like the directory's applications where token and
    consent code reads them."""
    app_id: str = GRAPH_APP_ID
    display_name: str = "Microsoft Graph"
    identifier_uris: tuple[str, ...] = (GRAPH_RESOURCE,)
    requested_access_token_version: int = 1
    group_membership_claims: str | None = None
    access_token_optional_claims: frozenset[str] = frozenset()

    def api_scope(self, value: str) -> PermissionScope | None:
        name = _PERMISSION_BY_LOWER.get(value.lower())
        if name is None:
            return None
        identifier, kind = GRAPH_DELEGATED.get(name, ("", "User"))
        return PermissionScope(id=identifier or name, value=name, type=kind,
                               user_consent_display_name=GRAPH_PERMISSIONS[name],
                               admin_consent_display_name=GRAPH_PERMISSIONS[name])

    @property
    def api_scopes(self) -> tuple[PermissionScope, ...]:
        return tuple(s for s in (self.api_scope(name) for name in GRAPH_PERMISSIONS) if s)

    @property
    def app_roles(self) -> tuple[AppRole, ...]:
        return tuple(AppRole(id=ident, value=value, display_name=value,
                             allowed_member_types=("Application",))
                     for ident, value in GRAPH_APP_ROLES.items())

    def app_role(self, role_id: str) -> AppRole | None:
        return next((r for r in self.app_roles if r.id == role_id), None)


GRAPH = GraphResource()
Resource = Union["Application", GraphResource]


@dataclass(frozen=True)
class Scope:
    requested: str     # exactly as the app wrote it
    permission: str    # the key: "openid", "User.Read", ".default", "<appId>/ToDoList.Read"
    is_graph: bool
    resource: Resource | None = None   # None for the OIDC scopes
    value: str = ""                     # the short name that goes into scp: "ToDoList.Read"

    @property
    def resource_app_id(self) -> str | None:
        return self.resource.app_id if self.resource is not None else None

    @property
    def is_default(self) -> bool:
        return self.value == ".default"


def split_scope_string(value: str | None) -> list[str]:
    return list(dict.fromkeys((value or "").split()))


def resolve_resource(directory: Directory | None, scope: str) -> tuple[Resource | None, str]:
    """The resource a scope string names and the permission's value there: `(GRAPH,
    "User.Read")`, `(<Todo API application>, "ToDoList.Read")`, `(app, ".default")`; OIDC scopes
    give `(None, "openid")`. Unknown resources are AADSTS500011, unknown or disabled
    permissions AADSTS70011."""
    lowered = scope.lower()
    if lowered in OIDC_SCOPES:
        return None, lowered
    resource_name, slash, name = scope.rpartition("/")
    if not slash:
        resource: Resource | None = GRAPH
    else:
        resource = _resource_named(directory, resource_name)
        if resource is None:
            tenant = directory.tenant.display_name if directory is not None else ""
            raise entra_error("InvalidResourceServicePrincipalNotFound", resource=resource_name,
                              tenant_name=tenant)
    if name == ".default" and slash:
        return resource, ".default"
    permission = resource.api_scope(name)
    if permission is None or not permission.is_enabled:
        raise entra_error("InvalidScope", scope=scope)
    return resource, permission.value


def _resource_named(directory: Directory | None, name: str) -> Resource | None:
    wanted = name.rstrip("/").lower()
    if wanted in GRAPH_RESOURCE_ALIASES:
        return GRAPH
    if directory is None:
        return None
    for app in directory.applications:
        if wanted == app.app_id or any(uri.rstrip("/").lower() == wanted
                                       for uri in app.identifier_uris):
            return app
    return None


def permission_key(resource: Resource | None, value: str) -> str:
    if resource is None or resource.app_id == GRAPH_APP_ID:
        return value
    return f"{resource.app_id}/{value}"


def key_resource_id(permission: str) -> str | None:
    """The appId of the resource a permission key belongs to (None for the OIDC scopes)."""
    if permission in OIDC_SCOPES:
        return None
    app_id, slash, _ = permission.rpartition("/")
    return app_id if slash else GRAPH_APP_ID


def key_value(permission: str) -> str:
    return permission.rpartition("/")[2]


def parse_scope(requested: str, directory: Directory | None) -> Scope:
    resource, value = resolve_resource(directory, requested)
    if resource is None:
        return Scope(requested, value, is_graph=False)
    return Scope(requested, permission_key(resource, value),
                 is_graph=resource.app_id == GRAPH_APP_ID, resource=resource, value=value)


def parse_scopes(value: str | None, directory: Directory | None) -> list[Scope]:
    return [parse_scope(item, directory) for item in split_scope_string(value)]


def resources_of(scopes: Iterable[Scope]) -> list[Resource]:
    """The distinct resources a request names (OIDC scopes name none), in request order."""
    found: dict[str, Resource] = {}
    for scope in scopes:
        if scope.resource is not None:
            found.setdefault(scope.resource.app_id, scope.resource)
    return list(found.values())


def granted_permissions(scopes: Iterable[Scope]) -> set[str]:
    """The permission keys a request names, `.default` left as is (see consent.py)."""
    return {scope.permission for scope in scopes}


def response_scope(scopes: Iterable[Scope], granted: Iterable[str]) -> str:
    """The token response's `scope`: the requested form, minus offline_access; `.default`
    is answered with the permissions it stands for (those granted on its resource), as Entra
    does."""
    granted = set(granted)
    scopes = list(scopes)
    # The OIDC scopes are Graph's permissions: a token for another API does not list them
    # ([inferred]: captures of API token responses show the API's scopes alone).
    other_api = any(s.resource is not None and not s.is_graph for s in scopes)
    words: list[str] = []
    for scope in scopes:
        if scope.permission == "offline_access" or (other_api and scope.resource is None):
            continue
        if scope.is_default:
            resource_id = scope.resource_app_id
            words.extend(_full_name(scope, key) for key in sorted(granted)
                         if key not in OIDC_SCOPES and key_resource_id(key) == resource_id
                         and key_value(key) != ".default")
        else:
            words.append(scope.requested)
    return " ".join(dict.fromkeys(words))


def _full_name(scope: Scope, key: str) -> str:
    if scope.is_graph:
        return key_value(key)
    # The resource as the request named it, with the granted value.
    return scope.requested.rpartition("/")[0] + "/" + key_value(key)


def access_token_scp(granted: Iterable[str], resource_app_id: str = GRAPH_APP_ID) -> str:
    """The `scp` claim: the short values granted on the resource. Graph tokens also carry the
    OIDC scopes but offline_access, as Entra's do."""
    names = set()
    for key in granted:
        if key == "offline_access" or key_value(key) == ".default":
            continue
        owner = key_resource_id(key)
        if owner == resource_app_id or (owner is None and resource_app_id == GRAPH_APP_ID):
            names.add(key_value(key))
    return " ".join(sorted(names, key=str.lower))
