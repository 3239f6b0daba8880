"""`/{tenant}/oauth2/v2.0/token`: the authorization code, refresh token and client credentials
grants, with client authentication by secret (post or basic) or certificate (private_key_jwt).

Checks run in Entra's order: the tenant, the grant type, the client, then the grant's own
material — a malformed code or refresh token is refused (9002313) before the client's
credential is looked at — then client authentication, then the grant's bindings. Errors are
Entra's JSON body with Entra's HTTP status (see errors.py); why these checks are hand-written
rather than Authlib's is explained in authorize.py.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn
from urllib.parse import unquote_plus

import jwt
from flask import Blueprint, Response, request

from entra_emulator.claims import (
    CLIENT_AUTH_CERTIFICATE,
    CLIENT_AUTH_SECRET,
    access_token_lifetime,
    app_access_token_claims,
    client_info,
    id_token_claims,
    refresh_token_lifetime,
    sign_access_token,
    sign_id_token,
    user_access_token_claims,
)
from entra_emulator.context import current_state, tenant_id_for
from entra_emulator.directory import Application, User
from entra_emulator.errors import EntraError, entra_error, error_json_response, json_response
from entra_emulator.scopes import (
    GRAPH_RESOURCE_ALIASES,
    granted_permissions,
    parse_scopes,
    response_scope,
    split_scope_string,
)
from entra_emulator.state import EmulatorState, RefreshGrant

bp = Blueprint("token", __name__)

JWT_BEARER_ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# Entra (Microsoft.IdentityModel) tolerates five minutes of clock skew on assertions.
ASSERTION_CLOCK_SKEW_SECONDS = 300


@dataclass(frozen=True)
class TokenRequest:
    params: Mapping[str, str]
    tenant_segment: str
    tenant_id: str
    app: Application

    def required(self, name: str) -> str:
        return required(self.params, name)


def required(params: Mapping[str, str], name: str) -> str:
    value = params.get(name, "")
    if not value.strip():
        raise entra_error("MissingRequiredParameter", name=name)
    return value


# ---------------------------------------------------------------------------------------------
# Client authentication
# ---------------------------------------------------------------------------------------------

def basic_credentials() -> tuple[str, str] | None:
    """client_secret_basic: base64(urlencode(id) ":" urlencode(secret)) (RFC 6749 §2.3.1)."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise entra_error("InvalidRequestParameter", name="Authorization") from None
    client_id, colon, secret = decoded.partition(":")
    if not colon:
        raise entra_error("InvalidRequestParameter", name="Authorization")
    return unquote_plus(client_id), unquote_plus(secret)


def requested_client_id(params: Mapping[str, str], basic: tuple[str, str] | None) -> str:
    client_id = params.get("client_id", "").strip()
    if basic is not None:
        if client_id and client_id.lower() != basic[0].strip().lower():
            raise entra_error("InvalidRequestParameter", name="client_id")
        client_id = client_id or basic[0].strip()
    if not client_id:
        raise entra_error("MissingRequiredParameter", name="client_id")
    return client_id


def authenticate_client(req: TokenRequest, basic: tuple[str, str] | None) -> str:
    """Verify the client's credential; returns how it authenticated (appidacr)."""
    assertion = req.params.get("client_assertion")
    if assertion:
        verify_client_assertion(req, assertion)
        return CLIENT_AUTH_CERTIFICATE
    secret = req.params.get("client_secret") or (basic[1] if basic else "")
    if not secret:
        raise entra_error("MissingClientCredential")
    verify_client_secret(req.app, secret)
    return CLIENT_AUTH_SECRET


def verify_client_secret(app: Application, secret: str) -> None:
    for credential in app.password_credentials:
        if hmac.compare_digest(credential.secret_text.encode(), secret.encode()):
            if credential.end is not None and credential.end < datetime.now(UTC):
                raise entra_error("InvalidClientSecretExpiredKeysProvided", app_id=app.app_id)
            return
    raise entra_error("InvalidClientSecret", app_id=app.app_id)


def _thumbprint(header: Mapping[str, Any], name: str) -> bytes | None:
    value = header.get(name)
    if not isinstance(value, str):
        return None
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        return None


def assertion_audiences(req: TokenRequest) -> list[str]:
    """The token endpoint URLs an assertion may name as its audience."""
    base = current_state().https_base
    segments = dict.fromkeys([req.tenant_segment, req.tenant_id,
                              current_state().directory.tenant.default_domain])
    return [f"{base}/{segment}/oauth2/{path}" for segment in segments
            for path in ("v2.0/token", "token")]


def verify_client_assertion(req: TokenRequest, assertion: str) -> None:
    """private_key_jwt with a registered certificate: PS256 + x5t#S256 or RS256 + x5t, as
    MSAL sends them (entra-protocol.md §1.3)."""
    if req.params.get("client_assertion_type") != JWT_BEARER_ASSERTION:
        raise entra_error("InvalidRequestParameter", name="client_assertion_type")
    try:
        header = jwt.get_unverified_header(assertion)
    except jwt.PyJWTError as problem:
        raise entra_error("InvalidJwtToken", reason=str(problem)) from None
    algorithm = header.get("alg")
    if algorithm not in ("PS256", "RS256"):
        raise entra_error("ClientAssertionInvalid",
                          reason=f"The client assertion's algorithm {algorithm!r} is not "
                                 "supported; use PS256 or RS256.")
    sha256, sha1 = _thumbprint(header, "x5t#S256"), _thumbprint(header, "x5t")
    credential = req.app.key_credential_for(sha1=sha1, sha256=sha256)
    if credential is None:
        used = (sha256 or sha1 or b"").hex().upper()
        raise entra_error("ClientAssertionInvalid", reason=(
            "The certificate with identifier used to sign the client assertion is not "
            f"registered on application. [Reason - The key was not found., Thumbprint of key "
            f"used by client: '{used}', Please visit the Azure Portal, Graph Explorer or "
            "directly use MS Graph to see configured keys for app Id "
            f"'{req.app.app_id}'. Review the documentation at https://aka.ms/certCreds.]"))
    try:
        claims = jwt.decode(assertion, credential.certificate.public_key(),
                            algorithms=[algorithm], audience=assertion_audiences(req),
                            leeway=ASSERTION_CLOCK_SKEW_SECONDS,
                            options={"require": ["aud", "exp", "iss", "sub"]})
    except jwt.InvalidSignatureError:
        raise entra_error("ClientAssertionInvalid",
                          reason="Client assertion failed signature validation.") from None
    except (jwt.ExpiredSignatureError, jwt.ImmatureSignatureError):
        raise entra_error("ClientAssertionNotInValidTimeRange") from None
    except jwt.InvalidAudienceError:
        raise entra_error("ClientAssertionAudienceMismatch") from None
    except jwt.PyJWTError as problem:
        raise entra_error("InvalidJwtToken", reason=str(problem)) from None
    if str(claims["iss"]).lower() != req.app.app_id or str(claims["sub"]).lower() != \
            req.app.app_id:
        raise entra_error("ClientAssertionAppIdMismatch")


# ---------------------------------------------------------------------------------------------
# Issuing user tokens (authorization code and refresh token grants)
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class UserGrant:
    """What a code or refresh token stands for."""

    app: Application
    user: User
    tenant_id: str
    granted: frozenset[str]
    sid: str
    auth_time: int
    include_auth_time: bool
    family: str


def requested_permissions(req: TokenRequest, grant_scope: str | None,
                          granted: frozenset[str]) -> tuple[str, frozenset[str]]:
    """The request's scope string (its own, else the grant's) and the permissions it names,
    which must be within what the user granted."""
    scope = req.params.get("scope") or grant_scope or " ".join(sorted(granted))
    scopes = parse_scopes(scope, current_state().directory.tenant.display_name)
    permissions = frozenset(granted_permissions(scopes))
    if not permissions <= granted | {"offline_access"}:
        raise entra_error("DelegationDoesNotExist", app_id=req.app.app_id,
                          app_name=req.app.display_name)
    return response_scope(scopes, granted), permissions


def client_capabilities(params: Mapping[str, str]) -> list[str] | None:
    """MSAL's `claims` request {"access_token":{"xms_cc":{"values":["cp1"]}}} → `xms_cc`."""
    raw = params.get("claims")
    if not raw:
        return None
    try:
        claims = json.loads(raw)
    except ValueError:
        raise entra_error("InvalidRequestParameter", name="claims") from None
    if not isinstance(claims, dict):
        raise entra_error("InvalidRequestParameter", name="claims")
    xms_cc = (claims.get("access_token") or {}).get("xms_cc") if isinstance(
        claims.get("access_token"), dict) else None
    values = xms_cc.get("values") if isinstance(xms_cc, dict) else None
    return [str(v) for v in values] if isinstance(values, list) else None


def issue_user_tokens(req: TokenRequest, grant: UserGrant, *, scope: str,
                      permissions: frozenset[str], nonce: str | None, client_auth: str,
                      with_refresh_token: bool) -> tuple[dict[str, Any], str]:
    """The token response body (Entra's key order) and the access token's `uti`."""
    state = current_state()
    lifetime = access_token_lifetime(grant.app)
    access_claims = user_access_token_claims(
        state, app=grant.app, user=grant.user, tenant_id=grant.tenant_id,
        permissions=grant.granted, sid=grant.sid, lifetime=lifetime, client_auth=client_auth,
        ip_address=request.remote_addr, client_capabilities=client_capabilities(req.params))
    body: dict[str, Any] = {
        "token_type": "Bearer",
        "scope": scope,
        "expires_in": lifetime,
        "ext_expires_in": lifetime,
        "access_token": sign_access_token(state, access_claims),
    }
    if with_refresh_token:
        now = state.clock.now()
        body["refresh_token"] = state.refresh_tokens.issue(RefreshGrant(
            family=grant.family, client_id=grant.app.app_id, user_id=grant.user.id,
            tenant_id=grant.tenant_id, granted=grant.granted, sid=grant.sid,
            auth_time=grant.auth_time, include_auth_time=grant.include_auth_time,
            issued_at=now, expires_at=now + refresh_token_lifetime(grant.app)))
    if "openid" in permissions:
        claims = id_token_claims(
            state, app=grant.app, user=grant.user, tenant_id=grant.tenant_id,
            permissions=grant.granted, sid=grant.sid, nonce=nonce,
            auth_time=grant.auth_time if grant.include_auth_time else None)
        body["id_token"] = sign_id_token(state, grant.app, claims)
    if req.params.get("client_info") == "1":
        body["client_info"] = client_info(grant.user, grant.tenant_id)
    return body, access_claims["uti"]


def _user_of(user_id: str) -> User:
    user = current_state().directory.user_by_id(user_id)
    if user is None:   # deleted from the directory since
        raise entra_error("InvalidGrant", reason="The user no longer exists.")
    return user


# ---------------------------------------------------------------------------------------------
# The grants
# ---------------------------------------------------------------------------------------------

def verify_code_verifier(verifier: str | None, challenge: str | None,
                         method: str | None) -> None:
    if challenge is None:
        # RFC 9700 §4.8.2: a verifier without a challenge is a PKCE downgrade attempt.
        if verifier is not None:
            raise entra_error("CodeVerifierMismatch")
        return
    if not verifier:
        raise entra_error("CodeVerifierMismatch")
    if method == "S256":
        digest = hashlib.sha256(verifier.encode("ascii", "replace")).digest()
        computed = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
    else:
        computed = verifier
    if not hmac.compare_digest(computed.encode(), challenge.encode()):
        raise entra_error("CodeVerifierMismatch")


def authorization_code_grant(req: TokenRequest, basic: tuple[str, str] | None) -> dict[str, Any]:
    state = current_state()
    code = req.required("code")
    record = state.codes.find(code)
    if record is None:
        raise entra_error("MalformedRequest")
    client_auth = authenticate_client(req, basic)
    if record.client_id != req.app.app_id:
        raise entra_error("InvalidGrant", reason="The code was issued to another client.")
    redirect_uri = req.required("redirect_uri")
    if redirect_uri != record.redirect_uri:
        raise entra_error("CodeRedirectUriMismatch", redirect_uri=redirect_uri,
                          code_redirect_uri=record.redirect_uri)
    verify_code_verifier(req.params.get("code_verifier"), record.code_challenge,
                         record.code_challenge_method)
    record, first_use = state.codes.redeem(code)
    if record is None:   # forgotten meanwhile (long expired)
        raise entra_error("MalformedRequest")
    if not first_use:
        # RFC 6749 §4.1.2: revoke what the first redemption issued.
        for family in record.issued_families:
            state.refresh_tokens.revoke_family(family)
        state.revoked_access_tokens.update(record.issued_access_tokens)
        raise entra_error("CodeAlreadyRedeemed")
    if state.clock.now() > record.expires_at:
        raise entra_error("ExpiredOrRevokedGrant")
    scope, permissions = requested_permissions(req, record.scope, record.granted)
    grant = UserGrant(app=req.app, user=_user_of(record.user_id), tenant_id=record.tenant_id,
                      granted=record.granted, sid=record.sid, auth_time=record.auth_time,
                      include_auth_time=record.include_auth_time, family=str(uuid.uuid4()))
    # Recorded before the tokens exist, so a concurrent reuse cannot miss the family.
    record.issued_families.append(grant.family)
    body, uti = issue_user_tokens(
        req, grant, scope=scope, permissions=permissions, nonce=record.nonce,
        client_auth=client_auth, with_refresh_token="offline_access" in record.granted)
    record.issued_access_tokens.append(uti)
    return body


def refuse_reused_refresh_token(state: EmulatorState, record: RefreshGrant) -> NoReturn:
    """A rotated-out refresh token came back: someone holds a copy. End the whole family
    (RFC 9700 §4.14.2)."""
    state.refresh_tokens.revoke_family(record.family)
    raise entra_error("InvalidGrant", reason="The refresh token has already been used or "
                                             "was revoked.")


def refresh_token_grant(req: TokenRequest, basic: tuple[str, str] | None) -> dict[str, Any]:
    state = current_state()
    token = req.required("refresh_token")
    found = state.refresh_tokens.find(token)
    if found is None:
        raise entra_error("MalformedRequest")
    client_auth = authenticate_client(req, basic)
    if found.client_id != req.app.app_id:
        raise entra_error("InvalidGrant", reason="The refresh token was issued to another "
                                                 "client.")
    if found.used or state.refresh_tokens.is_revoked(found.family):
        refuse_reused_refresh_token(state, found)
    # A request refused for its expiry or its scope must not spend the token: check both before
    # it is marked used.
    if state.clock.now() > found.expires_at:
        issued = datetime.fromtimestamp(found.issued_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        inactive = f"{int(state.clock.now() - found.issued_at)} seconds"
        raise entra_error("ExpiredOrRevokedGrantInactiveToken", issued=issued,
                          inactive=inactive)
    # Entra's refresh tokens are not bound to the scopes of the sign-in they came from: any
    # scope the user has consented to for the app may be asked for (entra-protocol.md §1.3).
    # The quickstart relies on it: it signs in with OIDC scopes, then refreshes for User.Read.
    granted = found.granted | state.consents.granted(found.user_id, req.app.app_id)
    scope, permissions = requested_permissions(req, None, granted)
    record, usable = state.refresh_tokens.use(token)  # atomic: of two concurrent uses, one wins
    if record is None:   # forgotten meanwhile (expired)
        raise entra_error("MalformedRequest")
    if not usable:
        refuse_reused_refresh_token(state, record)
    grant = UserGrant(app=req.app, user=_user_of(record.user_id), tenant_id=record.tenant_id,
                      granted=granted, sid=record.sid, auth_time=record.auth_time,
                      include_auth_time=record.include_auth_time, family=record.family)
    body, _ = issue_user_tokens(req, grant, scope=scope, permissions=permissions, nonce=None,
                                client_auth=client_auth, with_refresh_token=True)
    return body


def client_credentials_grant(req: TokenRequest, basic: tuple[str, str] | None) -> dict[str, Any]:
    state = current_state()
    client_auth = authenticate_client(req, basic)
    scopes = split_scope_string(req.required("scope"))
    resources: set[str] = set()
    for scope in scopes:
        resource, slash, name = scope.rpartition("/")
        if not slash or name != ".default":
            raise entra_error("ClientCredentialsScopeWithoutDefault", scope=scope)
        if resource.rstrip("/").lower() not in GRAPH_RESOURCE_ALIASES:
            raise entra_error("InvalidResourceServicePrincipalNotFound", resource=resource,
                              tenant_name=state.directory.tenant.display_name)
        resources.add(resource.rstrip("/").lower())
    if len(scopes) > 1:
        raise entra_error("InvalidMultipleResourcesScope", scope=" ".join(scopes))
    lifetime = access_token_lifetime(req.app)
    claims = app_access_token_claims(state, app=req.app, tenant_id=req.tenant_id,
                                     lifetime=lifetime, client_auth=client_auth)
    # No scope, refresh_token or id_token here, as Entra answers this grant.
    return {"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime,
            "access_token": sign_access_token(state, claims)}


GRANTS = {
    "authorization_code": authorization_code_grant,
    "refresh_token": refresh_token_grant,
    "client_credentials": client_credentials_grant,
}


# ---------------------------------------------------------------------------------------------
# The endpoint
# ---------------------------------------------------------------------------------------------

def handle_token_request(tenant_segment: str) -> dict[str, Any]:
    if request.method != "POST":
        raise entra_error("BadResourceRequestInvalidRequest", method=request.method)
    tenant_id = tenant_id_for(tenant_segment)
    # A plain dict of each parameter's first value (what MultiDict.get returns): a MultiDict
    # builds an HTTP exception for every absent key it is asked for, several per request here.
    params = request.form.to_dict()
    grant_type = required(params, "grant_type")
    grant = GRANTS.get(grant_type)
    if grant is None:
        raise entra_error("UnsupportedGrantType", grant_type=grant_type)
    basic = basic_credentials()
    client_id = requested_client_id(params, basic)
    app = current_state().directory.application(client_id)
    if app is None:
        raise entra_error("UnauthorizedClient_DoesNotMatchRequest", app_id=client_id,
                          tenant=tenant_segment)
    return grant(TokenRequest(params, tenant_segment, tenant_id, app), basic)


@bp.route("/<tenant>/oauth2/v2.0/token", methods=["GET", "POST"])
def token(tenant: str) -> Response:
    injected = current_state().faults.intercept("token")
    if injected is not None:
        return injected
    try:
        body = handle_token_request(tenant)
    except EntraError as err:
        return error_json_response(err)
    return json_response(body)
