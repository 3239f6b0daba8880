"""Scopes as Entra reads them: OIDC scopes, Microsoft Graph permissions and `/.default`.

A bare permission (`User.Read`) means Microsoft Graph, as does the fully qualified form
(`https://graph.microsoft.com/User.Read`). Responses echo scopes in the form the app asked for
(identity compares them literally), without `offline_access` (entra-protocol.md §0.7).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from entra_emulator.errors import entra_error

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
    "Directory.Read.All": "Read directory data",
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
class Scope:
    requested: str     # exactly as the app wrote it
    permission: str    # canonical name: "openid", "User.Read", ".default"
    is_graph: bool


def split_scope_string(value: str | None) -> list[str]:
    return list(dict.fromkeys((value or "").split()))


def parse_scope(requested: str, tenant_name: str) -> Scope:
    lowered = requested.lower()
    if lowered in OIDC_SCOPES:
        return Scope(requested, lowered, is_graph=False)
    resource, slash, name = requested.rpartition("/")
    if slash and resource.rstrip("/").lower() not in GRAPH_RESOURCE_ALIASES:
        raise entra_error("InvalidResourceServicePrincipalNotFound", resource=resource,
                          tenant_name=tenant_name)
    if name == ".default" and slash:
        return Scope(requested, ".default", is_graph=True)
    canonical = _PERMISSION_BY_LOWER.get(name.lower())
    if canonical is None:
        raise entra_error("InvalidScope", scope=requested)
    return Scope(requested, canonical, is_graph=True)


def parse_scopes(value: str | None, tenant_name: str) -> list[Scope]:
    return [parse_scope(item, tenant_name) for item in split_scope_string(value)]


def granted_permissions(scopes: Iterable[Scope]) -> set[str]:
    """The permissions a set of requested scopes asks the user to grant (`.default` expanded)."""
    granted: set[str] = set()
    for scope in scopes:
        if scope.permission == ".default":
            granted.update(DEFAULT_DELEGATED_PERMISSIONS)
        else:
            granted.add(scope.permission)
    return granted


def response_scope(scopes: Iterable[Scope], granted: Iterable[str]) -> str:
    """The token response's `scope`: the requested form, minus offline_access; `.default`
    is answered with the permissions it stands for, as Entra does."""
    words: list[str] = []
    for scope in scopes:
        if scope.permission == "offline_access":
            continue
        if scope.permission == ".default":
            words.extend(p for p in sorted(granted) if p not in OIDC_SCOPES)
        else:
            words.append(scope.requested)
    return " ".join(dict.fromkeys(words))


def access_token_scp(granted: Iterable[str]) -> str:
    """The `scp` claim of a Graph token: every granted permission but offline_access."""
    names = {p for p in granted if p != "offline_access" and p != ".default"}
    return " ".join(sorted(names, key=str.lower))


def consent_lines(permissions: Iterable[str]) -> list[str]:
    """The consent page's sentences, as Entra words them. User.Read already says "sign you
    in and read your profile", so openid and profile add nothing beside it."""
    chosen = set(permissions)
    lines = [GRAPH_PERMISSIONS[name] for name in GRAPH_PERMISSIONS if name in chosen]
    folded = {"openid", "profile"} if "User.Read" in chosen else set()
    lines += [OIDC_DESCRIPTIONS[name] for name in OIDC_SCOPES
              if name in chosen and name not in folded]
    return lines
