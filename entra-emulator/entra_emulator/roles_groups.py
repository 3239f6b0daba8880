"""The `roles` and `groups` claims (entra-authorization.md §2), and Entra's groups overage.

- `roles`: the values of the app roles the principal holds on the app the claim is about: in
  an ID token the client, in a delegated access token the resource, in an app-only token the
  application permissions granted to the client. A user holds a role directly or through a
  group it is a *direct* member of (a group assignment covers its direct members, §1.2).
  Default-access assignments (the all-zero role id) and disabled or value-less roles add nothing.
- `groups`: per the `groupMembershipClaims` of the app the token is shaped by (the client's for
  ID tokens, the resource's for access tokens, §2.1): `SecurityGroup` → the security groups the
  user belongs to, nested ones included; `All` → every group; `ApplicationGroup` → the groups
  assigned to that app that the user is a direct member of; `DirectoryRole` → no groups (the
  emulator keeps no directory roles, so no `wids` either). Only users get group claims.
- Past 200 groups (Entra's JWT limit, nested included) `groups` is left out and the overage
  names where to look instead (§2.5): `_claim_names` {"groups": "src1"} and `_claim_sources`
  with the Azure AD Graph `getMemberObjects` URL. That URL form is captured in v1 tokens; that
  v2 tokens carry the same one is inferred (the reference's choice).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from entra_emulator.directory import Directory, User
    from entra_emulator.scopes import Resource

GROUPS_LIMIT_JWT = 200


def _role_values(resource: Resource, role_ids: Iterable[str], member_type: str) -> list[str]:
    values: list[str] = []
    for role_id in role_ids:
        role = resource.app_role(role_id)
        if role is not None and role.is_enabled and role.value \
                and member_type in role.allowed_member_types and role.value not in values:
            values.append(role.value)
    return values


def user_roles(directory: Directory, resource: Resource, user: User) -> list[str]:
    """The user's app roles on `resource`, directly or through its direct groups."""
    return _role_values(resource, directory.user_role_ids(resource.app_id, user.id), "User")


def client_roles(directory: Directory, resource: Resource, client_app_id: str) -> list[str]:
    """The application permissions (app roles) the client's service principal holds."""
    return _role_values(resource, directory.client_role_ids(resource.app_id, client_app_id),
                        "Application")


def group_ids(directory: Directory, setting: str | None, app_id: str, user: User) -> list[str]:
    """The group ids `groupMembershipClaims` = `setting` of app `app_id` puts in a token."""
    if setting == "ApplicationGroup":
        assigned = {a.principal_id for a in directory.assignments_to(app_id)
                    if a.principal_type == "Group"}
        return [g.id for g in directory.direct_groups(user.id) if g.id in assigned]
    if setting == "SecurityGroup":
        return [g.id for g in directory.transitive_groups(user.id) if g.security_enabled]
    if setting == "All":
        return [g.id for g in directory.transitive_groups(user.id)]
    return []   # None, "None", "DirectoryRole"


def groups_claims(directory: Directory, setting: str | None, app_id: str, user: User,
                  tenant_id: str) -> dict[str, Any]:
    """`groups`, or past the limit the overage claims, or nothing (claims only with values)."""
    ids = group_ids(directory, setting, app_id, user)
    if not ids:
        return {}
    if len(ids) > GROUPS_LIMIT_JWT:
        endpoint = f"https://graph.windows.net/{tenant_id}/users/{user.id}/getMemberObjects"
        return {"_claim_names": {"groups": "src1"},
                "_claim_sources": {"src1": {"endpoint": endpoint}}}
    return {"groups": ids}


def user_authorization_claims(directory: Directory, app: Resource, user: User,
                              tenant_id: str) -> dict[str, Any]:
    """`roles` and `groups` (or the overage) about `user` for `app`: the client for an ID
    token, the resource for a delegated access token."""
    extra: dict[str, Any] = groups_claims(directory, app.group_membership_claims, app.app_id,
                                          user, tenant_id)
    roles = user_roles(directory, app, user)
    if roles:
        extra["roles"] = roles
    return extra


def merge_claims(claims: dict[str, Any], extra: dict[str, Any], *,
                 fixed: int = 5) -> dict[str, Any]:
    """`claims` with `extra` placed in alphabetical order after the first `fixed` claims
    (aud, iss, iat, nbf, exp come first in Entra's tokens, the rest roughly alphabetically)."""
    if not extra:
        return claims
    items = list(claims.items())
    head, tail = items[:fixed], items[fixed:]
    for name, value in extra.items():
        position = next((i for i, (key, _) in enumerate(tail) if key > name), len(tail))
        tail.insert(position, (name, value))
    return dict(head + tail)
