"""The tokens Entra issues, claim by claim (entra-protocol.md §2): v2 ID tokens for the app,
v1-shaped access tokens for Microsoft Graph, `client_info`, and their lifetimes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
from collections.abc import Mapping
from typing import Any

from entra_emulator.directory import Application, User
from entra_emulator.errors import entra_error
from entra_emulator.jsonsafe import UnsafeJson
from entra_emulator.jsonsafe import loads as bounded_json_loads
from entra_emulator.keys import b64url
from entra_emulator.scopes import GRAPH_APP_ID, access_token_scp
from entra_emulator.state import (
    ACCESS_TOKEN_LIFETIME_RANGE,
    CODE_LIFETIME_SECONDS,
    ID_TOKEN_LIFETIME_SECONDS,
    REFRESH_TOKEN_LIFETIME_SECONDS,
    EmulatorState,
    random_token,
)

# appidacr / azpacr: how the client authenticated (0 public, 1 secret, 2 certificate).
CLIENT_AUTH_PUBLIC = "0"
CLIENT_AUTH_SECRET = "1"
CLIENT_AUTH_CERTIFICATE = "2"


def claims_request(params: Mapping[str, str]) -> dict[str, Any] | None:
    """The OIDC `claims` request parameter (at /authorize and /token) as a JSON object, read
    with bounds (jsonsafe.py). Not JSON, too large or deep, or not an object: AADSTS90100."""
    raw = params.get("claims")
    if not raw:
        return None
    try:
        claims = bounded_json_loads(raw)
    except UnsafeJson:
        raise entra_error("InvalidRequestParameter", name="claims") from None
    if not isinstance(claims, dict):
        raise entra_error("InvalidRequestParameter", name="claims")
    return claims


def check_claims(params: Mapping[str, str], found: Mapping[str, Any]) -> Mapping[str, Any]:
    """authorize.py's check of the `claims` parameter (it has no other use there yet)."""
    claims_request(params)
    return {}


def client_capabilities(params: Mapping[str, str]) -> list[str] | None:
    """MSAL's `claims` request {"access_token":{"xms_cc":{"values":["cp1"]}}} → `xms_cc`."""
    claims = claims_request(params)
    access_token = claims.get("access_token") if claims else None
    xms_cc = access_token.get("xms_cc") if isinstance(access_token, dict) else None
    values = xms_cc.get("values") if isinstance(xms_cc, dict) else None
    return [str(v) for v in values] if isinstance(values, list) else None


def access_token_lifetime(app: Application) -> int:
    """The app's configured lifetime, else a random 60–90 minutes as Entra gives."""
    configured = app.token_lifetimes.get("accessToken")
    return configured if configured else random.randint(*ACCESS_TOKEN_LIFETIME_RANGE)


def id_token_lifetime(app: Application) -> int:
    return app.token_lifetimes.get("idToken", ID_TOKEN_LIFETIME_SECONDS)


def refresh_token_lifetime(app: Application) -> int:
    return app.token_lifetimes.get("refreshToken", REFRESH_TOKEN_LIFETIME_SECONDS)


def code_lifetime(app: Application) -> int:
    return app.token_lifetimes.get("authorizationCode", CODE_LIFETIME_SECONDS)


def unique_token_id() -> str:
    """`uti`: Entra's 22-character token identifier."""
    return random_token(16)


def pairwise_subject(tenant_id: str, audience: str, object_id: str) -> str:
    """`sub` differs per app (pairwise): the same user looks different to each audience."""
    digest = hashlib.sha256(f"{tenant_id}|{audience}|{object_id}".encode()).digest()
    return b64url(digest)


def client_info(user: User, tenant_id: str) -> str:
    info = json.dumps({"uid": user.id, "utid": tenant_id}, separators=(",", ":"))
    return base64.urlsafe_b64encode(info.encode()).rstrip(b"=").decode("ascii")


def _puid(object_id: str) -> str:
    return hashlib.sha256(object_id.encode()).hexdigest()[:16].upper()


def _home_realm(tenant_id: str, app: Application) -> str:
    # `rh` is opaque to apps; Entra's starts "0.A" and encodes tenant and client.
    return "0.A" + b64url(hashlib.sha256(f"{tenant_id}|{app.app_id}".encode()).digest()[:24]) \
        + "."


def id_token_claims(state: EmulatorState, *, app: Application, user: User, tenant_id: str,
                    permissions: frozenset[str], sid: str, nonce: str | None,
                    auth_time: int | None) -> dict[str, Any]:
    now = state.now()
    claims: dict[str, Any] = {
        "aud": app.app_id,
        "iss": state.issuer(tenant_id),
        "iat": now,
        "nbf": now,
        "exp": now + id_token_lifetime(app),
    }
    if auth_time is not None:
        claims["auth_time"] = auth_time
    claims["aio"] = random_token(48)
    if "email" in permissions and user.mail:
        claims["email"] = user.mail
    if "profile" in permissions:
        claims["name"] = user.display_name
    if nonce is not None:
        claims["nonce"] = nonce
    if "profile" in permissions:
        claims["oid"] = user.id
        claims["preferred_username"] = user.user_principal_name
    if "login_hint" in app.id_token_optional_claims:
        claims["login_hint"] = login_hint(tenant_id, user)
    claims["rh"] = _home_realm(tenant_id, app)
    claims["sid"] = sid
    claims["sub"] = pairwise_subject(tenant_id, app.app_id, user.id)
    claims["tid"] = tenant_id
    claims["uti"] = unique_token_id()
    claims["ver"] = "2.0"
    return claims


def login_hint(tenant_id: str, user: User) -> str:
    """Entra's login_hint optional claim: an opaque, stable value naming the account, for apps to
    send back as logout_hint (or login_hint) instead of a UPN."""
    return "O.C" + b64url(hashlib.sha256(f"{tenant_id}|{user.id}".encode()).digest())


def sign_id_token(state: EmulatorState, app: Application, claims: dict[str, Any]) -> str:
    # v2 ID tokens carry only typ, alg, kid; defects.py may make this one defective on purpose.
    return state.defects.sign_id_token(state, app.app_id, {}, claims)


def user_access_token_claims(state: EmulatorState, *, app: Application, user: User,
                             tenant_id: str, permissions: frozenset[str], sid: str,
                             lifetime: int, client_auth: str, ip_address: str | None,
                             client_capabilities: list[str] | None = None) -> dict[str, Any]:
    now = state.now()
    claims: dict[str, Any] = {
        "aud": GRAPH_APP_ID,
        "iss": state.v1_issuer(tenant_id),
        "iat": now,
        "nbf": now,
        "exp": now + lifetime,
        "acct": 0,
        "acr": "1",
        "aio": random_token(48),
        "amr": ["pwd"],
        "app_displayname": app.display_name,
        "appid": app.app_id,
        "appidacr": client_auth,
    }
    if user.surname:
        claims["family_name"] = user.surname
    if user.given_name:
        claims["given_name"] = user.given_name
    claims.update({
        "idtyp": "user",
        "ipaddr": ip_address or "127.0.0.1",
        "name": user.display_name,
        "oid": user.id,
        "platf": "3",
        "puid": _puid(user.id),
        "rh": _home_realm(tenant_id, app),
        "scp": access_token_scp(permissions),
        "sid": sid,
        "sub": pairwise_subject(tenant_id, GRAPH_APP_ID, user.id),
        "tenant_region_scope": "NA",
        "tid": tenant_id,
        "unique_name": user.user_principal_name,
        "upn": user.user_principal_name,
        "uti": unique_token_id(),
        "ver": "1.0",
    })
    if client_capabilities:
        claims["xms_cc"] = client_capabilities
    return claims


def app_access_token_claims(state: EmulatorState, *, app: Application, tenant_id: str,
                            lifetime: int, client_auth: str) -> dict[str, Any]:
    now = state.now()
    return {
        "aud": GRAPH_APP_ID,
        "iss": state.v1_issuer(tenant_id),
        "iat": now,
        "nbf": now,
        "exp": now + lifetime,
        "aio": random_token(48),
        "app_displayname": app.display_name,
        "appid": app.app_id,
        "appidacr": client_auth,
        "idp": state.v1_issuer(tenant_id),
        "idtyp": "app",
        "oid": app.service_principal_id,
        "rh": _home_realm(tenant_id, app),
        "sub": app.service_principal_id,
        "tenant_region_scope": "NA",
        "tid": tenant_id,
        "uti": unique_token_id(),
        "ver": "1.0",
    }


def sign_access_token(state: EmulatorState, claims: dict[str, Any]) -> str:
    # Graph tokens are v1 tokens: their header adds x5t and a `nonce` (entra-protocol.md §1.6).
    key = state.keys.current
    return state.keys.sign(claims, headers={"x5t": key.x5t, "nonce": random_token(32)}, key=key)
