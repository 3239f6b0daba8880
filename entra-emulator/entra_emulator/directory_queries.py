"""Queries over the directory's groups, app-role assignments and permission grants, and the
check that every reference in the file names something that exists."""

from __future__ import annotations

import uuid
from functools import cached_property
from typing import TYPE_CHECKING, Any

from entra_emulator.directory_authz import (
    DEFAULT_ACCESS_ROLE_ID,
    GRAPH_APP_ID,
    AppRoleAssignment,
    Group,
    PermissionGrant,
    ReaderLike,
    ServicePrincipal,
    entry_name,
)

if TYPE_CHECKING:
    from entra_emulator.directory import Directory


def graph_service_principal_id() -> str:
    """Microsoft Graph's service principal in the tenant, unless the file declares one."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"servicePrincipal:{GRAPH_APP_ID}"))


class DirectoryAccess:
    """Group, app-role and consent queries, mixed into `Directory`."""

    users: tuple[Any, ...]
    applications: tuple[Any, ...]
    groups: tuple[Group, ...]
    service_principals: tuple[ServicePrincipal, ...]
    app_role_assignments: tuple[AppRoleAssignment, ...]
    oauth2_permission_grants: tuple[PermissionGrant, ...]

    def group(self, group_id: Any) -> Group | None:
        if not isinstance(group_id, str):
            return None
        return self._groups_by_id.get(group_id.lower())

    @cached_property
    def _groups_by_id(self) -> dict[str, Group]:
        return {g.id: g for g in self.groups}

    @cached_property
    def _parents(self) -> dict[str, list[Group]]:
        parents: dict[str, list[Group]] = {}
        for group in self.groups:
            for member in group.members:
                parents.setdefault(member, []).append(group)
        return parents

    def direct_groups(self, principal_id: str) -> list[Group]:
        """The groups `principal_id` (a user or a group) is a direct member of, in file order."""
        return list(self._parents.get(principal_id.lower(), []))

    def transitive_groups(self, principal_id: str) -> list[Group]:
        """Every group reached through memberships, nested groups included (cycle-safe)."""
        found: dict[str, Group] = {}
        pending = [principal_id.lower()]
        while pending:
            for group in self._parents.get(pending.pop(), []):
                if group.id not in found:
                    found[group.id] = group
                    pending.append(group.id)
        order = self._group_order
        return sorted(found.values(), key=lambda group: order[group.id])

    @cached_property
    def _group_order(self) -> dict[str, int]:
        return {group.id: index for index, group in enumerate(self.groups)}

    # --- service principals ------------------------------------------------------------
    def service_principal_by_id(self, sp_id: str) -> ServicePrincipal | None:
        wanted = sp_id.lower()
        for principal in self._all_service_principals:
            if principal.id == wanted:
                return principal
        return None

    def service_principal_for(self, app_id: str) -> ServicePrincipal:
        """The resource's (or client's) service principal; Graph's included."""
        wanted = app_id.lower()
        for principal in self._all_service_principals:
            if principal.app_id == wanted:
                return principal
        return ServicePrincipal(id=str(uuid.uuid5(uuid.NAMESPACE_URL,
                                                  f"servicePrincipal:{wanted}")), app_id=wanted)

    @cached_property
    def _all_service_principals(self) -> list[ServicePrincipal]:
        declared = {sp.app_id: sp for sp in self.service_principals}
        principals = list(self.service_principals)
        for app in self.applications:
            if app.app_id not in declared:
                principals.append(ServicePrincipal(id=app.service_principal_id, app_id=app.app_id))
        if GRAPH_APP_ID not in declared:
            principals.append(ServicePrincipal(id=graph_service_principal_id(),
                                               app_id=GRAPH_APP_ID))
        return principals

    # --- app roles ------------------------------------------------------------------------
    def assignments_to(self, resource_app_id: str) -> list[AppRoleAssignment]:
        resource = self.service_principal_for(resource_app_id).id
        return [a for a in self.app_role_assignments if a.resource_id == resource]

    def user_is_assigned(self, resource_app_id: str, user_id: str) -> bool:
        """Whether the user holds any assignment (default access included), directly or
        through a group it is a direct member of: what appRoleAssignmentRequired demands."""
        principals = {user_id.lower()} | {g.id for g in self.direct_groups(user_id)}
        return any(a.principal_id in principals for a in self.assignments_to(resource_app_id))

    def client_is_assigned(self, resource_app_id: str, client_app_id: str) -> bool:
        client = self.service_principal_for(client_app_id).id
        return any(a.principal_id == client for a in self.assignments_to(resource_app_id))

    def user_role_ids(self, resource_app_id: str, user_id: str) -> list[str]:
        """App-role ids assigned to the user on the resource, directly or through a group the
        user is a *direct* member of (Graph: a group assignment covers its direct members)."""
        principals = {user_id.lower()} | {g.id for g in self.direct_groups(user_id)}
        return [a.app_role_id for a in self.assignments_to(resource_app_id)
                if a.principal_id in principals]

    def client_role_ids(self, resource_app_id: str, client_app_id: str) -> list[str]:
        """App-role ids (application permissions) assigned to the client's service principal."""
        client = self.service_principal_for(client_app_id).id
        return [a.app_role_id for a in self.assignments_to(resource_app_id)
                if a.principal_id == client]

    # --- delegated consent by grants -----------------------------------------------------------
    def granted_scopes(self, client_app_id: str, resource_app_id: str,
                       user_id: str | None = None) -> set[str]:
        """Scope values the client holds on the resource through oauth2PermissionGrants:
        tenant-wide (AllPrincipals) grants, plus the user's own (Principal) grants."""
        client = self.service_principal_for(client_app_id).id
        resource = self.service_principal_for(resource_app_id).id
        granted: set[str] = set()
        for grant in self.oauth2_permission_grants:
            if grant.client_id != client or grant.resource_id != resource:
                continue
            if grant.consent_type == "AllPrincipals" or (
                    user_id is not None and grant.principal_id == user_id.lower()):
                granted.update(grant.scopes)
        return granted


def check_references(reader: ReaderLike, directory: Directory) -> tuple[AppRoleAssignment, ...]:
    """Refuse references to nothing; returns the assignments with principalType filled in."""
    from entra_emulator.scopes import GRAPH_APP_ROLES, GRAPH_DELEGATED

    users = {user.id for user in directory.users}
    groups = {group.id for group in directory.groups}
    apps = {app.app_id: app for app in directory.applications}
    for index, group in enumerate(directory.groups):
        for position, member in enumerate(group.members):
            if member not in users and member not in groups:
                raise reader.error(entry_name("groups", index, {"displayName": group.display_name},
                                              "displayName"), f"members[{position}]",
                                   f"no user or group has id {member}")
    for index, principal in enumerate(directory.service_principals):
        if principal.app_id not in apps and principal.app_id != GRAPH_APP_ID:
            raise reader.error(f"servicePrincipals[{index}] ({principal.app_id})", "appId",
                               "no application has this appId (nor is it Microsoft Graph's)")
    for index, app in enumerate(directory.applications):
        entry = entry_name("applications", index, {"displayName": app.display_name},
                           "displayName")
        for position, access in enumerate(app.required_resource_access):
            where = f"requiredResourceAccess[{position}]"
            if access.resource_app_id == GRAPH_APP_ID:
                continue  # Graph has hundreds of permissions; we know only some of them
            resource = apps.get(access.resource_app_id)
            if resource is None:
                raise reader.error(entry, f"{where}.resourceAppId",
                                   f"no application has appId {access.resource_app_id}")
            known = {s.id for s in resource.api_scopes} | {r.id for r in resource.app_roles}
            for identifier in access.scope_ids + access.role_ids:
                if identifier not in known:
                    raise reader.error(entry, f"{where}.resourceAccess", f"{identifier} is not "
                                       f"a permission scope or app role of {resource.display_name}")
    by_sp = {directory.service_principal_for(app_id).id: app_id
             for app_id in [*apps, GRAPH_APP_ID]}
    assignments = []
    for index, assignment in enumerate(directory.app_role_assignments):
        entry = f"appRoleAssignments[{index}]"
        if assignment.principal_id in users:
            kind = "User"
        elif assignment.principal_id in groups:
            kind = "Group"
        elif assignment.principal_id in by_sp:
            kind = "ServicePrincipal"
        else:
            raise reader.error(entry, "principalId", f"no user, group or service principal has "
                               f"id {assignment.principal_id}")
        if assignment.principal_type and assignment.principal_type != kind:
            raise reader.error(entry, "principalType", f"is {assignment.principal_type} but "
                               f"{assignment.principal_id} is a {kind}")
        resource_app_id = by_sp.get(assignment.resource_id)
        if resource_app_id is None:
            raise reader.error(entry, "resourceId", f"no service principal has id "
                               f"{assignment.resource_id} (the resource's service principal id, "
                               "not its appId)")
        if assignment.app_role_id != DEFAULT_ACCESS_ROLE_ID:
            member_type = "Application" if kind == "ServicePrincipal" else "User"
            if resource_app_id == GRAPH_APP_ID:
                allowed = assignment.app_role_id in GRAPH_APP_ROLES and kind == "ServicePrincipal"
            else:
                role = next((r for r in apps[resource_app_id].app_roles
                             if r.id == assignment.app_role_id), None)
                allowed = role is not None and member_type in role.allowed_member_types
            if not allowed:
                raise reader.error(entry, "appRoleId", f"{assignment.app_role_id} is not an app "
                                   f"role of the resource open to {member_type} members")
        assignments.append(AppRoleAssignment(
            id=assignment.id, principal_id=assignment.principal_id, principal_type=kind,
            resource_id=assignment.resource_id, app_role_id=assignment.app_role_id))
    for index, grant in enumerate(directory.oauth2_permission_grants):
        entry = entry_name("oauth2PermissionGrants", index, {"id": grant.id}, "id")
        if grant.client_id not in by_sp or by_sp[grant.client_id] == GRAPH_APP_ID:
            raise reader.error(entry, "clientId", f"no application's service principal has id "
                               f"{grant.client_id}")
        resource_app_id = by_sp.get(grant.resource_id)
        if resource_app_id is None:
            raise reader.error(entry, "resourceId", f"no service principal has id "
                               f"{grant.resource_id}")
        if grant.principal_id is not None and grant.principal_id not in users:
            raise reader.error(entry, "principalId", f"no user has id {grant.principal_id}")
        known = ({name.lower() for name in GRAPH_DELEGATED} | {"openid", "profile", "email",
                                                               "offline_access"}
                 if resource_app_id == GRAPH_APP_ID else
                 {s.value.lower() for s in apps[resource_app_id].api_scopes})
        for value in grant.scopes:
            if value.lower() not in known:
                raise reader.error(entry, "scope", f"{value!r} is not a delegated permission of "
                                   "the resource")
    return tuple(assignments)
