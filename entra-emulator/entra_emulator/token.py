"""`/{tenant}/oauth2/v2.0/token`: the authorization code, refresh token and client credentials
grants, with client authentication by secret (post or basic) or certificate (private_key_jwt,
see client_auth.py).

Checks run in Entra's order: the tenant, the grant type, the client, then the grant's own
material — a malformed code or refresh token is refused (9002313) before the client's
credential is looked at — then client authentication, then the grant's bindings. Every
parameter is checked before a code or refresh token is spent, so a refused request leaves it
usable. Errors are
Entra's JSON body with Entra's HTTP status (see errors.py); why these checks are hand-written
rather than Authlib's is explained in authorize.py.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn

from flask import Blueprint, Response, request

from entra_emulator.api_tokens import api_app_claims, api_user_claims, sign_api_token
from entra_emulator.claims import (
    access_token_lifetime,
    app_access_token_claims,
    client_capabilities,
    client_info,
    id_token_claims,
    refresh_token_lifetime,
    sign_access_token,
    sign_id_token,
    user_access_token_claims,
)
from entra_emulator.client_auth import (
    TokenRequest,
    authenticate_client,
    authenticate_for_family,
    authenticate_for_redirect,
    basic_credentials,
    new_family,
    refuse_two_methods,
    requested_client_id,
    required,
)
from entra_emulator.consent import expand, held_permissions
from entra_emulator.context import current_state, tenant_id_for
from entra_emulator.directory import Application, User
from entra_emulator.errors import EntraError, entra_error, error_json_response, json_response
from entra_emulator.roles_groups import client_roles, merge_claims, user_authorization_claims
from entra_emulator.scopes import (
    GRAPH,
    GRAPH_APP_ID,
    Resource,
    key_resource_id,
    parse_scopes,
    resolve_resource,
    resources_of,
    response_scope,
    split_scope_string,
)
from entra_emulator.state import EmulatorState, RefreshGrant

bp = Blueprint("token", __name__)


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


@dataclass(frozen=True)
class Requested:
    """What a code or refresh token request asks for."""

    scope: str                  # the response's `scope`
    permissions: frozenset[str]
    resource: Resource          # Graph when only OIDC scopes are named
    named_as: str               # the resource as the request named it (a v1 token's `aud`)


def requested_permissions(req: TokenRequest, grant_scope: str | None,
                          granted: frozenset[str]) -> Requested:
    """The request's scope string (its own, else the grant's) and the permissions it names,
    which must be within what the user granted, on one resource."""
    scope = req.params.get("scope") or grant_scope or _one_resource(granted)
    scopes = parse_scopes(scope, current_state().directory)
    resources = resources_of(scopes)
    if len(resources) > 1:
        # entra-authorization.md §3.1: one resource per token request. Refused with the wire
        # capture's AADSTS28000 (the docs' 700022 stays for client credentials).
        raise entra_error("MultipleResourcesInScope",
                          scope=" ".join(s.requested for s in scopes if s.resource))
    permissions = expand(scopes, req.app, granted)
    if not permissions <= granted | {"offline_access"}:
        raise entra_error("DelegationDoesNotExist", app_id=req.app.app_id,
                          app_name=req.app.display_name)
    named = next((s for s in scopes if s.resource is not None), None)
    return Requested(scope=response_scope(scopes, granted), permissions=permissions,
                     resource=resources[0] if resources else GRAPH,
                     named_as=named.requested.rpartition("/")[0] if named else "")


def _one_resource(granted: frozenset[str]) -> str:
    """A scope string for a request that sent none: the grant's OIDC scopes and permissions on
    one resource (Graph's when it has some)."""
    resources = {key_resource_id(key) for key in granted} - {None}
    chosen = GRAPH_APP_ID if GRAPH_APP_ID in resources or not resources else min(resources)
    return " ".join(sorted(key for key in granted
                           if key_resource_id(key) in (None, chosen)))


def issue_user_tokens(req: TokenRequest, grant: UserGrant, requested: Requested, *,
                      nonce: str | None, client_auth: str,
                      with_refresh_token: bool) -> tuple[dict[str, Any], str]:
    """The token response body (Entra's key order) and the access token's `uti`."""
    state = current_state()
    lifetime = access_token_lifetime(grant.app)
    resource = requested.resource
    if resource.app_id == GRAPH_APP_ID:
        access_claims = user_access_token_claims(
            state, app=grant.app, user=grant.user, tenant_id=grant.tenant_id,
            permissions=grant.granted, sid=grant.sid, lifetime=lifetime,
            client_auth=client_auth, ip_address=request.remote_addr,
            client_capabilities=req.client_capabilities)
        access_token = sign_access_token(state, access_claims)
    else:
        access_claims = api_user_claims(
            state, client=grant.app, resource=resource, requested_resource=requested.named_as,
            user=grant.user, tenant_id=grant.tenant_id, permissions=grant.granted,
            sid=grant.sid, lifetime=lifetime, client_auth=client_auth,
            ip_address=request.remote_addr, client_capabilities=req.client_capabilities)
        access_token = sign_api_token(state, resource, access_claims)
    body: dict[str, Any] = {
        "token_type": "Bearer",
        "scope": requested.scope,
        "expires_in": lifetime,
        "ext_expires_in": lifetime,
        "access_token": access_token,
    }
    if with_refresh_token:
        now = state.clock.now()
        body["refresh_token"] = state.refresh_tokens.issue(RefreshGrant(
            family=grant.family, client_id=grant.app.app_id, user_id=grant.user.id,
            tenant_id=grant.tenant_id, granted=grant.granted, sid=grant.sid,
            auth_time=grant.auth_time, include_auth_time=grant.include_auth_time,
            issued_at=now, expires_at=now + refresh_token_lifetime(grant.app)))
    if "openid" in requested.permissions:
        claims = id_token_claims(
            state, app=grant.app, user=grant.user, tenant_id=grant.tenant_id,
            permissions=grant.granted, sid=grant.sid, nonce=nonce,
            auth_time=grant.auth_time if grant.include_auth_time else None)
        # roles and groups about the client: its app roles, its groupMembershipClaims (§2.1).
        claims = merge_claims(claims, user_authorization_claims(
            state.directory, grant.app, grant.user, grant.tenant_id))
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
    client_auth = authenticate_for_redirect(req, basic, record.redirect_uri)
    if record.client_id != req.app.app_id:
        raise entra_error("InvalidGrant", reason="The code was issued to another client.")
    redirect_uri = req.required("redirect_uri")
    if redirect_uri != record.redirect_uri:
        raise entra_error("CodeRedirectUriMismatch", redirect_uri=redirect_uri,
                          code_redirect_uri=record.redirect_uri)
    verify_code_verifier(req.params.get("code_verifier"), record.code_challenge,
                         record.code_challenge_method)
    requested: Requested | None = None
    try:   # before the code is spent: a request refused for its scope leaves it usable
        requested = requested_permissions(req, record.scope, record.granted)
    except EntraError:
        if not record.redeemed:
            raise   # a reuse is answered (and punished) just below
    # The family is recorded with the redemption itself, so a concurrent reuse on any worker
    # cannot miss it.
    family = new_family(client_auth)
    record, first_use = state.codes.redeem(code, family)
    if record is None:   # forgotten meanwhile (long expired)
        raise entra_error("MalformedRequest")
    if not first_use:
        # RFC 6749 §4.1.2: revoke what the first redemption issued.
        families, utis = state.codes.mark_reused(code)
        for issued in families:
            state.refresh_tokens.revoke_family(issued)
        state.revoked_access_tokens.update(utis)
        raise entra_error("CodeAlreadyRedeemed")
    if state.clock.now() > record.expires_at:
        raise entra_error("ExpiredOrRevokedGrant")
    grant = UserGrant(app=req.app, user=_user_of(record.user_id), tenant_id=record.tenant_id,
                      granted=record.granted, sid=record.sid, auth_time=record.auth_time,
                      include_auth_time=record.include_auth_time, family=family)
    assert requested is not None   # only a reuse (refused above) gets here without one
    body, uti = issue_user_tokens(
        req, grant, requested, nonce=record.nonce, client_auth=client_auth,
        with_refresh_token="offline_access" in record.granted)
    if state.codes.add_access_token(code, uti):   # the code came back meanwhile
        state.revoked_access_tokens.update([uti])
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
    client_auth = authenticate_for_family(req, basic, found.family)
    if found.client_id != req.app.app_id:
        raise entra_error("InvalidGrant", reason="The refresh token was issued to another "
                                                 "client.")
    if found.used or found.revoked:
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
    # Administrators' grants (the directory's oauth2PermissionGrants) count as consent too.
    granted = found.granted | held_permissions(req.app.app_id, found.user_id)
    requested = requested_permissions(req, _one_resource(found.granted), granted)
    record, usable = state.refresh_tokens.use(token)  # atomic: of two concurrent uses, one wins
    if record is None:   # forgotten meanwhile (expired)
        raise entra_error("MalformedRequest")
    if not usable:
        refuse_reused_refresh_token(state, record)
    grant = UserGrant(app=req.app, user=_user_of(record.user_id), tenant_id=record.tenant_id,
                      granted=granted, sid=record.sid, auth_time=record.auth_time,
                      include_auth_time=record.include_auth_time, family=record.family)
    body, _ = issue_user_tokens(req, grant, requested, nonce=None, client_auth=client_auth,
                                with_refresh_token=True)
    return body


def client_credentials_grant(req: TokenRequest, basic: tuple[str, str] | None) -> dict[str, Any]:
    state = current_state()
    client_auth = authenticate_client(req, basic)
    scopes = split_scope_string(req.required("scope"))
    resource: Resource | None = None
    for scope in scopes:
        named, slash, name = scope.rpartition("/")
        if not slash or name != ".default":
            raise entra_error("ClientCredentialsScopeWithoutDefault", scope=scope)
        resource, _ = resolve_resource(state.directory, scope)
    if len(scopes) > 1:
        raise entra_error("InvalidMultipleResourcesScope", scope=" ".join(scopes))
    if resource is None:
        raise entra_error("MissingRequiredParameter", name="scope")
    lifetime = access_token_lifetime(req.app)
    if resource.app_id == GRAPH_APP_ID:
        claims = app_access_token_claims(state, app=req.app, tenant_id=req.tenant_id,
                                         lifetime=lifetime, client_auth=client_auth)
        roles = client_roles(state.directory, GRAPH, req.app.app_id)
        access_token = sign_access_token(state, merge_claims(
            claims, {"roles": roles} if roles else {}))
    else:
        principal = state.directory.service_principal_for(resource.app_id)
        if principal.app_role_assignment_required and not state.directory.client_is_assigned(
                resource.app_id, req.app.app_id):
            raise entra_error("EntitlementGrantsNotFoundApplication", client_id=req.app.app_id,
                              resource=named)
        access_token = sign_api_token(state, resource, api_app_claims(
            state, client=req.app, resource=resource, requested_resource=named,
            tenant_id=req.tenant_id, lifetime=lifetime, client_auth=client_auth))
    # No scope, refresh_token or id_token here, as Entra answers this grant.
    return {"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime,
            "access_token": access_token}


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
    refuse_two_methods(params, basic)
    client_id = requested_client_id(params, basic)
    app = current_state().directory.application(client_id)
    if app is None:
        raise entra_error("UnauthorizedClient_DoesNotMatchRequest", app_id=client_id,
                          tenant=tenant_segment)
    return grant(TokenRequest(params, tenant_segment, tenant_id, app,
                              client_capabilities=client_capabilities(params)), basic)


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


# The grants and endpoints of public clients join GRANTS and this blueprint (and the pages
# authorize.py's) on import: the password grant and user realm, the device code flow.
from entra_emulator import device_code, device_login, password_grant  # noqa: E402, F401
