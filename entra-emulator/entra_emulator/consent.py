"""Consent per resource (entra-authorization.md §3.2, §3.4): what a request asks for, what the
user (or an administrator) already granted, the consent page and its answer.

- Held permissions: what the user consented to for the app (the ConsentStore, per user, app
  and permission), plus the directory's `oauth2PermissionGrants` for the app: tenant-wide
  (`AllPrincipals`, an administrator's consent) and the user's own (`Principal`).
- `<resource>/.default` stands for the app's static permissions on that resource (its
  `requiredResourceAccess`; User.Read for Graph when none are listed) plus what is already
  held there (the .default expansion is [inferred] from the documented behaviour).
- The consent page asks only for what is not held yet (incremental consent), in each API's
  own words (`userConsentDisplayName`/`userConsentDescription`), grouped by API; `prompt=consent`
  asks for everything requested that an administrator has not granted.
- Admin-type permissions cannot be consented to by a user: the emulator's users are never
  administrators, so without an admin grant the answer is Entra's AADSTS90094 page.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from flask import Response, request

from entra_emulator.context import current_state
from entra_emulator.errors import entra_error
from entra_emulator.pages import html_page
from entra_emulator.scopes import (
    DEFAULT_DELEGATED_PERMISSIONS,
    GRAPH,
    GRAPH_APP_ID,
    GRAPH_DELEGATED_BY_ID,
    GRAPH_PERMISSIONS,
    OIDC_DESCRIPTIONS,
    OIDC_SCOPES,
    Resource,
    Scope,
    key_resource_id,
    key_value,
    permission_key,
)

if TYPE_CHECKING:
    from entra_emulator.directory import Application, Directory, User
    from entra_emulator.directory_authz import PermissionScope
    from entra_emulator.signin_state import PendingSignIn


def resource_by_id(directory: Directory, app_id: str | None) -> Resource | None:
    if app_id is None:
        return None
    return GRAPH if app_id == GRAPH_APP_ID else directory.application(app_id)


def admin_granted(directory: Directory, client_app_id: str,
                  user_id: str | None = None) -> set[str]:
    """Permission keys the directory's oauth2PermissionGrants give the client (for the user)."""
    client = directory.service_principal_for(client_app_id).id
    keys: set[str] = set()
    for grant in directory.oauth2_permission_grants:
        if grant.client_id != client or not (
                grant.consent_type == "AllPrincipals"
                or (user_id is not None and grant.principal_id == user_id)):
            continue
        principal = directory.service_principal_by_id(grant.resource_id)
        resource = resource_by_id(directory, principal.app_id if principal else None)
        for value in grant.scopes:
            if value.lower() in OIDC_SCOPES:
                keys.add(value.lower())
                continue
            found = resource.api_scope(value) if resource is not None else None
            if found is not None:
                keys.add(permission_key(resource, found.value))
    return keys


def held_permissions(client_app_id: str, user_id: str) -> frozenset[str]:
    """What the user and administrators granted the client, on every resource."""
    state = current_state()
    return state.consents.granted(user_id, client_app_id) | admin_granted(
        state.directory, client_app_id, user_id)


def static_permissions(directory: Directory, client: Application, resource: Resource) -> set[str]:
    """The client's `requiredResourceAccess` delegated permissions on `resource`."""
    values: list[str] = []
    for access in client.required_resource_access:
        if access.resource_app_id != resource.app_id:
            continue
        for scope_id in access.scope_ids:
            if resource.app_id == GRAPH_APP_ID:
                name = GRAPH_DELEGATED_BY_ID.get(scope_id)
            else:
                name = next((s.value for s in resource.api_scopes if s.id == scope_id), None)
            if name is not None:
                values.append(name)
    if not values and resource.app_id == GRAPH_APP_ID:
        values = list(DEFAULT_DELEGATED_PERMISSIONS)
    return {permission_key(resource, value) for value in values}


def expand(scopes: Iterable[Scope], client: Application, held: Iterable[str]) -> frozenset[str]:
    """The permission keys a request names, each `.default` replaced by what it stands for."""
    held = set(held)
    directory = current_state().directory
    keys: set[str] = set()
    for scope in scopes:
        if not scope.is_default or scope.resource is None:
            keys.add(scope.permission)
            continue
        keys |= static_permissions(directory, client, scope.resource)
        keys |= {key for key in held if key_resource_id(key) == scope.resource.app_id
                 and key_value(key) != ".default"}
    return frozenset(keys)


def permission_scope(key: str) -> PermissionScope | None:
    resource = resource_by_id(current_state().directory, key_resource_id(key))
    return resource.api_scope(key_value(key)) if resource is not None else None


def admin_only(keys: Iterable[str]) -> list[str]:
    """The permissions among `keys` only an administrator may grant."""
    return sorted(key for key in keys if (found := permission_scope(key)) is not None
                  and found.type == "Admin")


def to_ask(requested: frozenset[str], held: frozenset[str], prompt_consent: bool,
           client_app_id: str, user_id: str) -> frozenset[str]:
    """What the consent page must ask for: everything not held, or with prompt=consent
    everything requested that an administrator has not granted."""
    if prompt_consent:
        return requested - admin_granted(current_state().directory, client_app_id, user_id)
    return requested - held


def refuse_admin_only(keys: Iterable[str]) -> None:
    if admin_only(keys):
        raise entra_error("AdminConsentRequired")


# ---------------------------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------------------------

def consent_sections(keys: Iterable[str]) -> list[dict[str, Any]]:
    """The page's sentences grouped by API: Graph (with the OIDC scopes) in Entra's words, the
    directory's APIs in their own (`userConsentDisplayName`, `userConsentDescription`)."""
    chosen = set(keys)
    directory = current_state().directory
    sections: list[dict[str, Any]] = []
    graph_lines = [{"title": GRAPH_PERMISSIONS[name], "description": None}
                   for name in GRAPH_PERMISSIONS if name in chosen]
    # User.Read already says "sign you in and read your profile": openid, profile add nothing.
    folded = {"openid", "profile"} if "User.Read" in chosen else set()
    graph_lines += [{"title": OIDC_DESCRIPTIONS[name], "description": None}
                    for name in OIDC_SCOPES if name in chosen and name not in folded]
    if graph_lines:
        sections.append({"api": GRAPH.display_name, "lines": graph_lines})
    for app in directory.applications:
        lines = []
        for scope in app.api_scopes:
            if permission_key(app, scope.value) in chosen:
                lines.append({"title": scope.user_consent_display_name
                              or scope.admin_consent_display_name or scope.value,
                              "description": scope.user_consent_description
                              or scope.admin_consent_description})
        if lines:
            sections.append({"api": app.display_name, "lines": lines})
    return sections


def consent_page(pending: PendingSignIn, user: User) -> Response:
    req = pending.request
    return html_page(
        "consent.html", ctx=pending.ctx, app_name=req.client.display_name, user=user,
        sections=consent_sections(pending.to_ask or ()),
        action=f"/{req.tenant_segment}/consent")


def submit_consent() -> Response:
    """The consent form's answer: remember the grant and continue the sign-in."""
    from entra_emulator import authorize as flow  # the flow module imports this one

    state = current_state()
    pending = flow.pending_from_form()
    req = pending.request
    session = flow.session_from_cookie()
    user = state.directory.user_by_id(session.user_id) if session else None
    if session is None or user is None or pending.consent_for_session != session.sid:
        return flow.sign_in_page(pending)
    decision = request.form.get("decision")
    if decision == "cancel":
        state.pending.finish(pending.ctx)
        raise flow.ErrorRedirect.of(entra_error("UserDeclinedConsent"), req)
    if decision != "accept":
        return consent_page(pending, user)
    requested = expand(req.scopes, req.client, held_permissions(req.client.app_id, user.id))
    refuse_admin_only(requested - held_permissions(req.client.app_id, user.id))
    state.consents.grant(user.id, req.client.app_id, set(requested))
    pending = state.pending.update(pending, consented=True)
    return flow.continue_flow(req, session, pending)
