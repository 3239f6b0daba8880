"""What a signed-in user may do: app roles and group membership, from the ID token's claims.

Past Entra's group limit the ID token carries no `groups` but an overage marker
(`_claim_names.groups`, or `hasgroups`); the groups are then read from Microsoft Graph
(`POST /me/getMemberGroups`, with GroupMember.Read.All, which an administrator grants) and kept
with the session. An overage is never read as "no groups": if Graph cannot answer, the page
fails closed with an error instead.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import current_app, g
from flask import session as flask_session

from .errors import AuthError
from .session import SESSION_KEY, current_entry

log = logging.getLogger(__name__)

GROUPS_SCOPE = "GroupMember.Read.All"
MAX_GROUPS = 11_000  # Graph's own limit for getMemberGroups


def require(claims: dict[str, Any], roles: list[str], groups: list[str]) -> None:
    """AuthError 403 naming what is missing unless the user has one of `roles` (when given) and
    is in one of `groups` (when given)."""
    if roles and not set(user_roles(claims)) & set(roles):
        raise AuthError(403, "Not allowed", "This page is for users with the app role "
                        f"{' or '.join(sorted(roles))}, which you do not have.",
                        hint="Ask an administrator to assign you the role in the app's "
                        "enterprise application (Users and groups).")
    if groups and not set(user_groups(claims)) & {group.lower() for group in groups}:
        raise AuthError(403, "Not allowed", "This page is for members of the group "
                        f"{' or '.join(sorted(groups))}, which you are not in.",
                        hint="Ask an administrator to add you to the group.")


def user_roles(claims: dict[str, Any]) -> list[str]:
    roles = claims.get("roles")
    return [r for r in roles if isinstance(r, str)] if isinstance(roles, list) else []


def has_group_overage(claims: dict[str, Any]) -> bool:
    names = claims.get("_claim_names")
    return (isinstance(names, dict) and "groups" in names) or claims.get("hasgroups") is True


def user_groups(claims: dict[str, Any]) -> list[str]:
    """The user's group object ids (lower case): from the token, or past the overage from Graph
    (once per session)."""
    groups = claims.get("groups")
    if isinstance(groups, list):
        return [str(group).lower() for group in groups]
    if not has_group_overage(claims):
        return []
    entry = current_entry() or {}
    if isinstance(entry.get("groups"), list):
        return entry["groups"]
    if "_flask_entra_groups" not in g:
        g._flask_entra_groups = _member_groups()
        flask_session[SESSION_KEY] = {**entry, "groups": g._flask_entra_groups}
    return g._flask_entra_groups


def _member_groups() -> list[str]:
    state = current_app.extensions["flask_entra"]
    result = state.tokens.acquire([GROUPS_SCOPE])  # may send the user to consent
    url = f"{state.settings.graph_endpoint}/me/getMemberGroups"
    try:
        response = state.http.post(url, json={"securityEnabledOnly": False}, headers={
            "Authorization": f"Bearer {result['access_token']}"})
        body = response.json() if response.ok else None
    except (OSError, ValueError) as exc:  # requests' errors are OSErrors; bad JSON ValueError
        log.warning("Graph getMemberGroups failed: %s", exc.__class__.__name__)
        body = None
    values = body.get("value") if isinstance(body, dict) else None
    if not isinstance(values, list) or len(values) > MAX_GROUPS:
        raise AuthError(503, "Your groups could not be read", "You are in more groups than the "
                        "sign-in token can list, and Microsoft Graph did not say which.",
                        hint="Try again in a moment.", retry_after=10)
    return [str(value).lower() for value in values if isinstance(value, str)]
