"""`/{tenant}/oauth2/v2.0/authorize`: the sign-in and consent pages (consent.py), and the code
they lead to.

The request is read (authorize_request.py) by a list of small named checks, in the order
Entra applies them. The first three (tenant, client, redirect URI) fail with Entra's error
page, because until the redirect URI is known to belong to the app, redirecting would make us
an open redirector (RFC 9700 §4.11.2). Every later failure goes back to the app's redirect
URI with `state`.

Why hand-written and not Authlib's AuthorizationServer: Entra's behaviour is the product
here. Its AADSTS codes and texts, which failures are pages and which are redirects, the order
of the checks (e.g. a malformed code is refused before the client secret is checked), and
parameters such as `client_info` and `session_state` do not map onto Authlib's RFC-generic
errors and grant classes; overriding nearly every hook would be harder to read than the
checks themselves.
"""

from __future__ import annotations

import hmac
from dataclasses import replace

from flask import Blueprint, Response, request

# The request is read in authorize_request.py; its names are this module's too.
from entra_emulator.authorize_request import (  # noqa: F401
    ERROR_PAGE_CHECKS,
    ERROR_REDIRECT_CHECKS,
    AuthorizationRequest,
    ErrorRedirect,
    read_authorization_request,
    with_response_issuer,
)
from entra_emulator.claims import client_info, code_lifetime
from entra_emulator.consent import (
    consent_page,
    expand,
    held_permissions,
    refuse_admin_only,
    submit_consent,
    to_ask,
)
from entra_emulator.context import current_state
from entra_emulator.directory import User
from entra_emulator.errors import EntraError, entra_error
from entra_emulator.pages import error_page, html_page, respond_to_app, secure_page
from entra_emulator.signin_binding import browser_binding, is_same_browser
from entra_emulator.state import AuthorizationCode, PendingSignIn, Session

bp = Blueprint("authorize", __name__)

SESSION_COOKIE = "ESTSAUTH"   # the name of Entra's own SSO session cookie


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


def check_assignment(req: AuthorizationRequest, user: User) -> None:
    """appRoleAssignmentRequired on the client's service principal: the user (or a group it is
    a direct member of) must hold an assignment, else AADSTS50105 on Entra's error page."""
    directory = current_state().directory
    principal = directory.service_principal_for(req.client.app_id)
    if principal.app_role_assignment_required and not directory.user_is_assigned(
            req.client.app_id, user.id):
        raise entra_error("EntitlementGrantsNotFound", upn=user.user_principal_name,
                          app_id=req.client.app_id, app_name=req.client.display_name)


def emits_auth_time(req: AuthorizationRequest) -> bool:
    # OIDC Core: auth_time is required when max_age was sent; Entra adds it for prompt=login.
    return req.max_age is not None or "login" in req.prompt


# ---------------------------------------------------------------------------------------------
# Steps of the flow
# ---------------------------------------------------------------------------------------------

def session_from_cookie() -> Session | None:
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
        pending = pending or state.pending.start(req, browser=browser_binding())
        return sign_in_page(pending)
    check_assignment(req, user)
    held = held_permissions(req.client.app_id, user.id)
    permissions = expand(req.scopes, req.client, held)
    consent_done = pending is not None and pending.consented
    ask = to_ask(permissions, held, "consent" in req.prompt, req.client.app_id, user.id)
    if not consent_done and (ask or "consent" in req.prompt):
        if "none" in req.prompt:
            raise ErrorRedirect.of(
                entra_error("DelegationDoesNotExist", error="consent_required",
                            app_id=req.client.app_id, app_name=req.client.display_name), req)
        refuse_admin_only(ask)   # a user cannot grant these: AADSTS90094
        pending = pending or state.pending.start(req, browser=browser_binding())
        pending = state.pending.update(pending, consent_for_session=session.sid, to_ask=ask)
        return consent_page(pending, user)
    if pending is not None:
        state.pending.finish(pending.ctx)
    return issue_code(req, session, user, permissions)


def issue_code(req: AuthorizationRequest, session: Session, user: User,
               permissions: frozenset[str]) -> Response:
    state = current_state()
    now = state.clock.now()
    record = AuthorizationCode(
        client_id=req.client.app_id, redirect_uri=req.redirect_uri, user_id=user.id,
        scope=req.scope, granted=permissions, nonce=req.nonce,
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


def _with_session_cookie(response: Response, cookie: str) -> Response:
    response.set_cookie(SESSION_COOKIE, cookie, httponly=True, samesite="Lax",
                        secure=request.is_secure, path="/")
    return response


def pending_from_form() -> PendingSignIn:
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
    return continue_flow(req, session_from_cookie(), None)


@bp.post("/<tenant>/login")
def sign_in(tenant: str) -> Response:
    state = current_state()
    pending = pending_from_form()
    if not is_same_browser(pending.browser):   # login CSRF: see signin_binding.py
        raise entra_error("FlowTokenNotBoundToBrowser")
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
    # Stored only if the flow goes on to the consent page (which stores the sign-in with its
    # own changes); a flow that ends here with the code deletes it anyway.
    pending = replace(pending, signed_in_session=session.sid)
    return _with_session_cookie(continue_flow(pending.request, session, pending), cookie)


@bp.post("/<tenant>/consent")
def consent(tenant: str) -> Response:
    return submit_consent()   # consent.py
