"""Access tokens for the directory's own APIs (entra-authorization.md §3.3).

The resource's `api.requestedAccessTokenVersion` picks the format, whatever endpoint issued it:
`null`/`1` → v1 (`iss` https://sts.windows.net/{tid}/, `aud` the App ID URI or GUID the request
named, `appid`/`appidacr`, `unique_name`/`upn`, header `x5t` + `kid`), `2` → v2 (`iss`
{authority}/{tid}/v2.0, `aud` the API's appId, `azp`/`azpacr`, `preferred_username`, header
`kid`). `scp` holds the short values granted on that API; `roles` and `groups` follow the
resource's registration (roles_groups.py). Signed with the emulator's keys, like every token.

App-only tokens (client credentials) carry `roles` (the client's application permissions) and
no `scp`; `oid` = `sub` = the client's service principal; `idtyp: "app"` when the API asks for
that optional claim (user tokens get it only with `include_user_token`, which the emulator does
not offer). The app-only v2 shape is inferred from the documented rules.
"""

from __future__ import annotations

from typing import Any

from entra_emulator.claims import _home_realm, _puid, pairwise_subject, unique_token_id
from entra_emulator.directory import Application, User
from entra_emulator.roles_groups import client_roles, merge_claims, user_authorization_claims
from entra_emulator.scopes import access_token_scp
from entra_emulator.state import EmulatorState, random_token


def audience(resource: Application, requested_resource: str) -> str:
    """v2: the appId. v1: the resource as the request named it (an App ID URI or the GUID)."""
    if resource.requested_access_token_version == 2:
        return resource.app_id
    return requested_resource.rstrip("/") if requested_resource else resource.app_id


def _common(state: EmulatorState, resource: Application, requested_resource: str,
            tenant_id: str, lifetime: int) -> dict[str, Any]:
    now = state.now()
    v2 = resource.requested_access_token_version == 2
    return {
        "aud": audience(resource, requested_resource),
        "iss": state.issuer(tenant_id) if v2 else state.v1_issuer(tenant_id),
        "iat": now,
        "nbf": now,
        "exp": now + lifetime,
    }


def api_user_claims(state: EmulatorState, *, client: Application, resource: Application,
                    requested_resource: str, user: User, tenant_id: str,
                    permissions: frozenset[str], sid: str, lifetime: int, client_auth: str,
                    ip_address: str | None,
                    client_capabilities: list[str] | None = None) -> dict[str, Any]:
    claims = _common(state, resource, requested_resource, tenant_id, lifetime)
    scp = access_token_scp(permissions, resource.app_id)
    if resource.requested_access_token_version == 2:
        claims.update({
            "aio": random_token(48),
            "azp": client.app_id,
            "azpacr": client_auth,
            "name": user.display_name,
            "oid": user.id,
            "preferred_username": user.user_principal_name,
            "rh": _home_realm(tenant_id, client),
        })
    else:
        claims.update({"acr": "1", "aio": random_token(48), "amr": ["pwd"],
                       "appid": client.app_id, "appidacr": client_auth})
        if user.surname:
            claims["family_name"] = user.surname
        if user.given_name:
            claims["given_name"] = user.given_name
        claims.update({"ipaddr": ip_address or "127.0.0.1", "name": user.display_name,
                       "oid": user.id, "puid": _puid(user.id),
                       "rh": _home_realm(tenant_id, client)})
    if scp:
        claims["scp"] = scp
    claims["sid"] = sid
    claims["sub"] = pairwise_subject(tenant_id, resource.app_id, user.id)
    claims["tid"] = tenant_id
    if resource.requested_access_token_version != 2:
        claims["unique_name"] = user.user_principal_name
        claims["upn"] = user.user_principal_name
    claims["uti"] = unique_token_id()
    claims["ver"] = "2.0" if resource.requested_access_token_version == 2 else "1.0"
    if client_capabilities:
        claims["xms_cc"] = client_capabilities
    extra = user_authorization_claims(state.directory, resource, user, tenant_id)
    return merge_claims(claims, extra)


def api_app_claims(state: EmulatorState, *, client: Application, resource: Application,
                   requested_resource: str, tenant_id: str, lifetime: int,
                   client_auth: str) -> dict[str, Any]:
    claims = _common(state, resource, requested_resource, tenant_id, lifetime)
    v2 = resource.requested_access_token_version == 2
    if v2:
        claims.update({"aio": random_token(48), "azp": client.app_id, "azpacr": client_auth})
    else:
        claims.update({"aio": random_token(48), "appid": client.app_id,
                       "appidacr": client_auth, "idp": state.v1_issuer(tenant_id)})
    if "idtyp" in resource.access_token_optional_claims:
        claims["idtyp"] = "app"
    claims.update({"oid": client.service_principal_id, "rh": _home_realm(tenant_id, client)})
    roles = client_roles(state.directory, resource, client.app_id)
    if roles:
        claims["roles"] = roles
    claims.update({"sub": client.service_principal_id, "tid": tenant_id,
                   "uti": unique_token_id(), "ver": "2.0" if v2 else "1.0"})
    return claims


def sign_api_token(state: EmulatorState, resource: Application, claims: dict[str, Any]) -> str:
    """v1 headers add `x5t` (no `nonce`: only Graph's tokens have one); v2 carry `kid` only."""
    key = state.keys.current
    headers = {} if resource.requested_access_token_version == 2 else {"x5t": key.x5t}
    return state.keys.sign(claims, headers=headers, key=key)
