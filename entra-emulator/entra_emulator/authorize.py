"""`/{tenant}/oauth2/v2.0/authorize`: the sign-in and consent pages, and the code they lead to.

The request is read by a list of small named checks, in the order Entra applies them. The
first three (tenant, client, redirect URI) fail with Entra's error page, because until the
redirect URI is known to belong to the app, redirecting would make us an open redirector
(RFC 9700 §4.11.2). Every later failure goes back to the app's redirect URI with `state`.

Why hand-written and not Authlib's AuthorizationServer: Entra's behaviour is the product
here. Its AADSTS codes and texts, which failures are pages and which are redirects, the order
of the checks (e.g. a malformed code is refused before the client secret is checked), and
parameters such as `client_info` and `session_state` do not map onto Authlib's RFC-generic
errors and grant classes; overriding nearly every hook would be harder to read than the
checks themselves.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from flask import Blueprint, Response, request

from entra_emulator.claims import client_info, code_lifetime
from entra_emulator.context import current_state, tenant_id_for
from entra_emulator.directory import Application, User
from entra_emulator.errors import EntraError, entra_error, redirect_error_params
from entra_emulator.pages import error_page, html_page, respond_to_app, secure_page
from entra_emulator.request_limits import (
    ERROR_PAGE_LIMITS,
    ERROR_REDIRECT_LIMITS,
    check_lengths,
    over_limit,
)
from entra_emulator.scopes import Scope, consent_lines, granted_permissions, parse_scopes
from entra_emulator.state import AuthorizationCode, PendingSignIn, Session

bp = Blueprint("authorize", __name__)

SESSION_COOKIE = "ESTSAUTH"   # the name of Entra's own SSO session cookie
RESPONSE_MODES = ("query", "fragment", "form_post")
PROMPTS = ("login", "none", "consent", "select_account")
PKCE_METHODS = ("S256", "plain")
# RFC 7636 §4.2: a challenge is 43 to 128 characters of the unreserved set.
CODE_CHALLENGE = re.compile(r"[A-Za-z0-9\-._~]{43,128}")


@dataclass(frozen=True)
class AuthorizationRequest:
    tenant_segment: str
    tenant_id: str
    client: Application
    redirect_uri: str
    response_mode: str
    scope: str
    scopes: tuple[Scope, ...]
    state: str | None
    nonce: str | None
    prompt: frozenset[str]
    login_hint: str | None
    max_age: int | None
    code_challenge: str | None
    code_challenge_method: str | None
    client_info: bool
    hinted_user_id: str | None   # the user named by id_token_hint

    @property
    def permissions(self) -> set[str]:
        return granted_permissions(self.scopes)


class ErrorRedirect(Exception):
    """A failure reported to the app at its (already verified) redirect URI."""

    def __init__(self, err: EntraError, redirect_uri: str, response_mode: str,
                 state: str | None, *, client_id: str, tenant_id: str) -> None:
        super().__init__(err.message)
        self.err, self.redirect_uri = err, redirect_uri
        self.response_mode, self.state = response_mode, state
        self.client_id, self.tenant_id = client_id, tenant_id

    @classmethod
    def of(cls, err: EntraError, req: AuthorizationRequest) -> ErrorRedirect:
        """The failure of a request whose every parameter was already read."""
        return cls(err, req.redirect_uri, req.response_mode, req.state,
                   client_id=req.client.app_id, tenant_id=req.tenant_id)

    def response(self) -> Response:
        params = redirect_error_params(self.err)
        if self.state is not None:
            params["state"] = self.state
        return respond_to_app(self.redirect_uri, self.response_mode,
                              with_response_issuer(params, self.client_id, self.tenant_id))


def with_response_issuer(params: dict[str, str], client_id: str,
                         tenant_id: str) -> dict[str, str]:
    """RFC 9207: the authorization response names its issuer (`iss`), when the emulator is
    configured to send it or a defect for the client says otherwise (see defects.py)."""
    state = current_state()
    issuer = state.defects.response_issuer(client_id, state.issuer(tenant_id))
    return params if issuer is None else {**params, "iss": issuer}


# ---------------------------------------------------------------------------------------------
# The checks. Each reads its parameter(s), given what the earlier checks found, and returns
# what it found (named as in AuthorizationRequest), or raises EntraError.
# ---------------------------------------------------------------------------------------------

Found = Mapping[str, Any]


def check_tenant(params: Mapping[str, str], found: Found) -> Found:
    return {"tenant_id": tenant_id_for(found["tenant_segment"])}


def check_client(params: Mapping[str, str], found: Found) -> Found:
    client_id = params.get("client_id", "").strip()
    if not client_id:
        raise entra_error("MissingRequiredParameter", name="client_id")
    app = current_state().directory.application(client_id)
    if app is None:
        raise entra_error("UnauthorizedClient_DoesNotMatchRequest", app_id=client_id,
                          tenant=found["tenant_segment"])
    return {"client": app}


def check_redirect_uri(params: Mapping[str, str], found: Found) -> Found:
    """Exact match against the registered URIs; omitted is fine only when one is registered."""
    app: Application = found["client"]
    redirect_uri = params.get("redirect_uri")
    if not app.redirect_uris:
        raise entra_error("NoReplyAddressRegistered")
    if redirect_uri is None:
        if len(app.redirect_uris) == 1:
            return {"redirect_uri": app.redirect_uris[0]}
        raise entra_error("NoReplyAddressProvided")
    if redirect_uri not in app.redirect_uris:
        raise entra_error("InvalidReplyTo", redirect_uri=redirect_uri, app_id=app.app_id)
    return {"redirect_uri": redirect_uri}


def check_response_mode(params: Mapping[str, str], found: Found) -> Found:
    mode = params.get("response_mode") or "query"
    if mode not in RESPONSE_MODES:
        raise entra_error("UnsupportedResponseMode", response_mode=mode)
    return {"response_mode": mode}


def check_response_type(params: Mapping[str, str], found: Found) -> Found:
    response_type = params.get("response_type")
    if not response_type:
        raise entra_error("MissingRequiredParameter", name="response_type")
    # The hybrid and implicit flows need the app's implicit grant settings; we offer code only.
    if response_type.split() != ["code"]:
        raise entra_error("UnsupportedResponseType")
    return {}


def check_scope(params: Mapping[str, str], found: Found) -> Found:
    scope = params.get("scope", "")
    if not scope.strip():
        raise entra_error("MissingRequiredParameter", name="scope")
    tenant_name = current_state().directory.tenant.display_name
    return {"scope": scope, "scopes": tuple(parse_scopes(scope, tenant_name))}


def check_pkce(params: Mapping[str, str], found: Found) -> Found:
    challenge = params.get("code_challenge")
    method = params.get("code_challenge_method")
    if challenge is None:
        if method is not None:
            raise entra_error("MissingRequiredParameter", name="code_challenge")
        return {"code_challenge": None, "code_challenge_method": None}
    if not CODE_CHALLENGE.fullmatch(challenge):
        raise entra_error("InvalidCodeChallengeSize")
    # Without a method the challenge is plain (RFC 7636 §4.3).
    method = method or "plain"
    if method not in PKCE_METHODS:
        raise entra_error("InvalidRequestParameter", name="code_challenge_method")
    return {"code_challenge": challenge, "code_challenge_method": method}


def check_prompt(params: Mapping[str, str], found: Found) -> Found:
    prompt = frozenset(params.get("prompt", "").split())
    if not prompt <= set(PROMPTS) or ("none" in prompt and len(prompt) > 1):
        raise entra_error("UnsupportedPrompt")
    return {"prompt": prompt}


def check_max_age(params: Mapping[str, str], found: Found) -> Found:
    value = params.get("max_age")
    if value is None or value == "":
        return {"max_age": None}
    if not value.isdigit():
        raise entra_error("InvalidRequestParameter", name="max_age")
    return {"max_age": int(value)}


def check_id_token_hint(params: Mapping[str, str], found: Found) -> Found:
    """An ID token we issued to this app names the user expected (expired ones are fine)."""
    hint = params.get("id_token_hint")
    if not hint:
        return {"hinted_user_id": None}
    state = current_state()
    try:
        kid = jwt.get_unverified_header(hint).get("kid")
        key = state.keys.public_key_for(kid) if isinstance(kid, str) else None
        if key is None:
            raise jwt.InvalidTokenError("signed with an unknown key")
        claims = jwt.decode(hint, key, algorithms=["RS256"], audience=found["client"].app_id,
                            issuer=state.issuer(found["tenant_id"]),
                            options={"verify_exp": False, "require": ["oid"]})
    except jwt.PyJWTError as problem:
        raise entra_error("InvalidJwtToken", reason=f"id_token_hint: {problem}") from None
    return {"hinted_user_id": str(claims["oid"])}


Check = Callable[[Mapping[str, str], Found], Found]

# Until the redirect URI is known to be the app's, a failure is Entra's error page.
ERROR_PAGE_CHECKS: tuple[Check, ...] = (check_tenant, check_client, check_redirect_uri)

# Then failures go back to the app at that redirect URI, with `state`.
ERROR_REDIRECT_CHECKS: tuple[Check, ...] = (
    check_response_mode, check_response_type, check_scope, check_pkce, check_prompt,
    check_max_age, check_id_token_hint,
)


def read_authorization_request(params: Mapping[str, str],
                               tenant_segment: str) -> AuthorizationRequest:
    """Raises EntraError (show the error page) or ErrorRedirect (tell the app)."""
    found: dict[str, Any] = {"tenant_segment": tenant_segment}
    # An oversized request is refused before any check reads it (AADSTS90015).
    check_lengths(params, ERROR_PAGE_LIMITS)
    for check in ERROR_PAGE_CHECKS:
        found.update(check(params, found))
    # An oversized state is not echoed back in the error redirect.
    state = None if over_limit(params, "state") else params.get("state")
    try:
        check_lengths(params, ERROR_REDIRECT_LIMITS)
    except EntraError as err:   # answered in the query: response_mode is not read yet
        raise ErrorRedirect(err, found["redirect_uri"], "query", state,
                            client_id=found["client"].app_id,
                            tenant_id=found["tenant_id"]) from None
    for check in ERROR_REDIRECT_CHECKS:
        try:
            found.update(check(params, found))
        except EntraError as err:
            # Until response_mode is read (and when it is what failed), answer in the query.
            raise ErrorRedirect(err, found["redirect_uri"], found.get("response_mode", "query"),
                                state, client_id=found["client"].app_id,
                                tenant_id=found["tenant_id"]) from None
    return AuthorizationRequest(
        **found, state=state, nonce=params.get("nonce"),
        login_hint=params.get("login_hint") or None,
        client_info=params.get("client_info") == "1")


# ---------------------------------------------------------------------------------------------
# What the request needs from the user
# ---------------------------------------------------------------------------------------------

def needs_sign_in(req: AuthorizationRequest, session: Session,
                  signed_in_during_flow: bool) -> bool:
    """Whether the SSO session cannot answer this request (no session is checked before)."""
    if signed_in_during_flow:
        return False
    if req.prompt & {"login", "select_account"}:
        return True
    if req.max_age is not None and current_state().now() - session.auth_time > req.max_age:
        return True
    return _hinted_user_differs(req, session)


def _hinted_user_differs(req: AuthorizationRequest, session: Session) -> bool:
    if req.hinted_user_id is not None and req.hinted_user_id != session.user_id:
        return True
    if req.login_hint:
        hinted = current_state().directory.user_by_username(req.login_hint)
        return hinted is None or hinted.id != session.user_id
    return False


def needs_consent(req: AuthorizationRequest, user: User) -> bool:
    if "consent" in req.prompt:
        return True
    granted = current_state().consents.granted(user.id, req.client.app_id)
    return not req.permissions <= granted


def emits_auth_time(req: AuthorizationRequest) -> bool:
    # OIDC Core: auth_time is required when max_age was sent; Entra adds it for prompt=login.
    return req.max_age is not None or "login" in req.prompt


# ---------------------------------------------------------------------------------------------
# Steps of the flow
# ---------------------------------------------------------------------------------------------

def _session_from_cookie() -> Session | None:
    return current_state().sessions.get(request.cookies.get(SESSION_COOKIE))


def continue_flow(req: AuthorizationRequest, session: Session | None,
                  pending: PendingSignIn | None) -> Response:
    """Show the next page the request needs, or issue the code."""
    state = current_state()
    signed_in_during_flow = pending is not None and pending.signed_in_session is not None \
        and session is not None and pending.signed_in_session == session.sid
    user = state.directory.user_by_id(session.user_id) if session is not None else None
    # (A session whose user has left the directory counts as no session.)
    if session is None or user is None or needs_sign_in(req, session, signed_in_during_flow):
        if "none" in req.prompt:
            raise ErrorRedirect.of(entra_error("UserInformationNotProvided"), req)
        pending = pending or state.pending.start(req)
        return sign_in_page(pending)
    consent_done = pending is not None and pending.consented
    if not consent_done and needs_consent(req, user):
        if "none" in req.prompt:
            raise ErrorRedirect.of(
                entra_error("DelegationDoesNotExist", error="consent_required",
                            app_id=req.client.app_id, app_name=req.client.display_name), req)
        pending = pending or state.pending.start(req)
        pending = state.pending.update(pending, consent_for_session=session.sid)
        return consent_page(pending, user)
    if pending is not None:
        state.pending.finish(pending.ctx)
    return issue_code(req, session, user)


def issue_code(req: AuthorizationRequest, session: Session, user: User) -> Response:
    state = current_state()
    now = state.clock.now()
    record = AuthorizationCode(
        client_id=req.client.app_id, redirect_uri=req.redirect_uri, user_id=user.id,
        scope=req.scope, granted=frozenset(req.permissions), nonce=req.nonce,
        code_challenge=req.code_challenge, code_challenge_method=req.code_challenge_method,
        sid=session.sid, auth_time=session.auth_time, include_auth_time=emits_auth_time(req),
        tenant_id=req.tenant_id, issued_at=now, expires_at=now + code_lifetime(req.client))
    params = {"code": state.codes.issue(record)}
    if req.client_info:
        params["client_info"] = client_info(user, req.tenant_id)
    if req.state is not None:
        params["state"] = req.state
    params["session_state"] = session.session_state
    return respond_to_app(req.redirect_uri, req.response_mode,
                          with_response_issuer(params, req.client.app_id, req.tenant_id))


def sign_in_page(pending: PendingSignIn, *, username: str | None = None,
                 error: str | None = None) -> Response:
    req: AuthorizationRequest = pending.request
    state = current_state()
    if username is None:
        username = req.login_hint or ""
        if not username and req.hinted_user_id:
            hinted = state.directory.user_by_id(req.hinted_user_id)
            username = hinted.user_principal_name if hinted else ""
    return html_page(
        "signin.html", ctx=pending.ctx, app_name=req.client.display_name,
        tenant_name=state.directory.tenant.display_name,
        pick_account="select_account" in req.prompt, username=username, error=error,
        users=state.directory.users, action=f"/{req.tenant_segment}/login")


def consent_page(pending: PendingSignIn, user: User) -> Response:
    req: AuthorizationRequest = pending.request
    return html_page(
        "consent.html", ctx=pending.ctx, app_name=req.client.display_name, user=user,
        lines=consent_lines(req.permissions), action=f"/{req.tenant_segment}/consent")


def _with_session_cookie(response: Response, cookie: str) -> Response:
    response.set_cookie(SESSION_COOKIE, cookie, httponly=True, samesite="Lax",
                        secure=request.is_secure, path="/")
    return response


def _pending_from_form() -> PendingSignIn:
    pending = current_state().pending.get(request.form.get("ctx"))
    if pending is None:
        raise entra_error("FlowTokenExpired")
    return pending


# ---------------------------------------------------------------------------------------------
# Views
# ---------------------------------------------------------------------------------------------

@bp.after_request
def _page_headers(response: Response) -> Response:
    return secure_page(response)


@bp.errorhandler(EntraError)
def _show_error_page(err: EntraError) -> Response:
    return error_page(err)


@bp.errorhandler(ErrorRedirect)
def _tell_the_app(failure: ErrorRedirect) -> Response:
    return failure.response()


@bp.route("/<tenant>/oauth2/v2.0/authorize", methods=["GET", "POST"])
def authorize(tenant: str) -> Response:
    params = request.form if request.method == "POST" else request.args
    req = read_authorization_request(params, tenant)
    return continue_flow(req, _session_from_cookie(), None)


@bp.post("/<tenant>/login")
def sign_in(tenant: str) -> Response:
    state = current_state()
    pending = _pending_from_form()
    username = request.form.get("username", "").strip()
    password = request.form.get("password", "")
    user = state.directory.user_by_username(username)
    if user is None:
        message = ("This username may be incorrect. Make sure you typed it correctly. "
                   "Otherwise, contact your admin." if username else "Enter a valid email "
                   "address, phone number, or Skype name.")
        return sign_in_page(pending, username=username, error=message)
    if not hmac.compare_digest(password.encode(), user.password.encode()):
        return sign_in_page(pending, username=username,
                            error="Your account or password is incorrect. If you don't "
                                  "remember your password, reset it now.")
    state.sessions.end(request.cookies.get(SESSION_COOKIE))
    cookie, session = state.sessions.create(user, auth_time=state.now())
    pending = state.pending.update(pending, signed_in_session=session.sid)
    return _with_session_cookie(continue_flow(pending.request, session, pending), cookie)


@bp.post("/<tenant>/consent")
def consent(tenant: str) -> Response:
    state = current_state()
    pending = _pending_from_form()
    req: AuthorizationRequest = pending.request
    session = _session_from_cookie()
    user = state.directory.user_by_id(session.user_id) if session else None
    if session is None or user is None or pending.consent_for_session != session.sid:
        return sign_in_page(pending)
    decision = request.form.get("decision")
    if decision == "cancel":
        state.pending.finish(pending.ctx)
        raise ErrorRedirect.of(entra_error("UserDeclinedConsent"), req)
    if decision != "accept":
        return consent_page(pending, user)
    state.consents.grant(user.id, req.client.app_id, req.permissions)
    pending = state.pending.update(pending, consented=True)
    return continue_flow(req, session, pending)

