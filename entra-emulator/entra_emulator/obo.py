"""The on-behalf-of grant (`grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`,
`requested_token_use=on_behalf_of`): a middle-tier API trades the access token it was called
with (the assertion) for a token to a downstream API, for the same user
(entra-authorization.md §4).

Checks, in this order (each refusal is Entra's code; the texts are Entra's where captured):
1. `requested_token_use`, `assertion` and `scope` are present;
2. the client authenticates: OBO is for confidential clients only (AADSTS7000218 without a
   credential) — before anything is said about the assertion;
3. the assertion is a JWT signed by one of the emulator's published keys, RS256, issued by this
   tenant (else AADSTS50013), not revoked, and current (AADSTS500133; 5 minutes of skew);
4. its audience is the calling app, by client id or one of its identifierUris (AADSTS500131);
5. it is a user's token: app-only tokens are refused (AADSTS7000114), as is anything without
   `scp` (an ID token, say) [inferred];
6. the downstream scopes name one resource, and the middle tier holds consent for them, from the
   user or a tenant-wide (admin) grant (else AADSTS65001 with `suberror: consent_required`).

The answer is what the code and refresh grants issue: the downstream resource's access token in
its format (Graph: v1), with the original user, the middle tier as the client and `scp` its
granted downstream scopes; a refresh token with offline_access; an ID token with openid. One
assertion may be redeemed again and again (unlike a code) [inferred from MSAL, which never
caches OBO results in Python].
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import jwt

from entra_emulator import consent
from entra_emulator import token as token_endpoint
from entra_emulator.client_auth import TokenRequest, authenticate_client
from entra_emulator.context import current_state
from entra_emulator.directory import Application, User
from entra_emulator.errors import EntraError, entra_error
from entra_emulator.jsonsafe import UnsafeJson, check_jwt
from entra_emulator.scopes import OIDC_SCOPES, split_scope_string
from entra_emulator.state import EmulatorState

JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ON_BEHALF_OF = "on_behalf_of"
# Microsoft.IdentityModel's default clock skew.
ASSERTION_CLOCK_SKEW_SECONDS = 300


# ---------------------------------------------------------------------------------------------
# The assertion
# ---------------------------------------------------------------------------------------------

def _invalid(reason: str) -> EntraError:
    return entra_error("InvalidAssertion", reason=reason)


def _entra_time(seconds: float) -> str:
    """Entra's timestamps in 500133's text: 2021-05-31T10:43:54.0000000Z."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")


def signed_claims(state: EmulatorState, assertion: str) -> dict[str, Any]:
    """The assertion's claims, if one of the emulator's published keys signed it (RS256)."""
    try:
        check_jwt(assertion)
        header = jwt.get_unverified_header(assertion)
    except (jwt.PyJWTError, UnsafeJson):
        raise _invalid("Assertion is malformed: it is not a JWS compact serialization.") \
            from None
    kid = header.get("kid")
    key = state.keys.public_key_for(kid) if isinstance(kid, str) else None
    if header.get("alg") != "RS256" or key is None:
        raise _invalid(f"Assertion failed signature validation. [Reason - The key was not "
                       f"found., Key id used by client: '{kid}']")
    try:
        # Lifetime is checked below against the emulator's clock, which tests may move.
        return jwt.decode(assertion, key, algorithms=["RS256"],
                          options={"verify_aud": False, "verify_exp": False,
                                   "verify_nbf": False, "verify_iat": False,
                                   "verify_iss": False})
    except jwt.InvalidSignatureError:
        raise _invalid("Assertion failed signature validation. [Reason - The provided "
                       "signature value did not match the expected signature value.]") from None
    except jwt.PyJWTError as problem:
        raise _invalid(f"Assertion is malformed: {problem}.") from None


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def require_issued_here(state: EmulatorState, claims: Mapping[str, Any]) -> None:
    tenant_id = state.directory.tenant_id
    if claims.get("tid") != tenant_id or claims.get("iss") not in (
            state.v1_issuer(tenant_id), state.issuer(tenant_id)):
        raise _invalid(f"Assertion issuer '{claims.get('iss')}' is not valid for tenant "
                       f"'{tenant_id}'.")
    if state.access_token_revoked(claims):
        raise _invalid("Assertion has been revoked.")


def require_current(state: EmulatorState, claims: Mapping[str, Any]) -> None:
    now = state.clock.now()
    expires, not_before = _number(claims, "exp"), _number(claims, "nbf")
    if expires is None:
        raise _invalid("Assertion is malformed: it has no expiry ('exp').")
    if now > expires + ASSERTION_CLOCK_SKEW_SECONDS or (
            not_before is not None and now < not_before - ASSERTION_CLOCK_SKEW_SECONDS):
        raise entra_error("AssertionNotWithinValidTimeRange", now=_entra_time(now),
                          expires=_entra_time(expires))


def audience_matches(app: Application, audience: Any) -> bool:
    """The client id (any case) or one of its identifierUris (trailing `/` or not)."""
    if not isinstance(audience, str):
        return False
    if audience.strip().lower() == app.app_id:
        return True
    # Compared as written: a differently-cased App ID URI does not match [V-rec: an
    # AADSTS500131 report fixed by lowercasing the registered URI].
    return audience.rstrip("/") in {uri.rstrip("/") for uri in app.identifier_uris}


def require_audience(app: Application, claims: Mapping[str, Any]) -> None:
    audience = claims.get("aud")
    if not audience_matches(app, audience):
        raise entra_error("AssertionAudienceMismatch", audience=audience, app_id=app.app_id,
                          app_name=app.display_name)


def require_user_token(state: EmulatorState, app: Application,
                       claims: Mapping[str, Any]) -> User:
    scp = claims.get("scp")
    if claims.get("idtyp") == "app" or (not isinstance(scp, str) and "roles" in claims):
        raise entra_error("ApplicationOnBehalfOfNotAllowed", app_id=app.app_id)
    if not isinstance(scp, str):
        raise _invalid("Assertion is not an access token for a user (it has no 'scp').")
    user = state.directory.user_by_id(claims.get("oid"))
    if user is None:
        raise entra_error("InvalidGrant", reason="The user no longer exists.")
    return user


def verified_assertion(state: EmulatorState, app: Application,
                       assertion: str) -> tuple[dict[str, Any], User]:
    claims = signed_claims(state, assertion)
    require_issued_here(state, claims)
    require_current(state, claims)
    require_audience(app, claims)
    return claims, require_user_token(state, app, claims)


# ---------------------------------------------------------------------------------------------
# The grant
# ---------------------------------------------------------------------------------------------

def consented_permissions(req: TokenRequest, user: User) -> frozenset[str]:
    """What the middle tier may ask for this user: the user's own consent to it and the
    directory's grants (an administrator's, tenant-wide), on every resource (consent.py); and
    the OIDC scopes it asks for, which need no consent here [inferred]."""
    oidc = {s.lower() for s in split_scope_string(req.params.get("scope"))
            if s.lower() in OIDC_SCOPES}
    return frozenset(consent.held_permissions(req.app.app_id, user.id) | oidc)


def on_behalf_of_grant(req: TokenRequest, basic: tuple[str, str] | None) -> dict[str, Any]:
    state = current_state()
    if req.required("requested_token_use") != ON_BEHALF_OF:
        raise entra_error("InvalidRequestParameter", name="requested_token_use")
    req.required("assertion")
    req.required("scope")
    client_auth = authenticate_client(req, basic)   # confidential clients only: 7000218
    claims, user = verified_assertion(state, req.app, req.params["assertion"])
    granted = consented_permissions(req, user)
    # One downstream resource, within what is granted (else AADSTS65001 consent_required).
    requested = token_endpoint.requested_permissions(req, None, granted)
    sid = claims.get("sid")
    grant = token_endpoint.UserGrant(
        app=req.app, user=user, tenant_id=state.directory.tenant_id, granted=granted,
        sid=sid if isinstance(sid, str) else str(uuid.uuid4()), auth_time=state.now(),
        include_auth_time=False, family=str(uuid.uuid4()))
    body, _ = token_endpoint.issue_user_tokens(
        req, grant, requested, nonce=None, client_auth=client_auth,
        with_refresh_token="offline_access" in requested.permissions)
    return body


# The token endpoint dispatches on grant_type; app.py imports this module so it is registered.
token_endpoint.GRANTS[JWT_BEARER_GRANT] = on_behalf_of_grant
