"""The sign-in's routes, in the order they happen (blueprint `identity` by default):

  GET  <prefix>/login          seal a new MSAL auth-code flow in a cookie, 302 to the provider
  POST|GET <redirect URI path> the provider's answer: match it to this browser's pending sign-in,
                               redeem the code into a throw-away cache, validate the ID token,
                               and only then start a session (new id); 303 to where it began
  GET  <prefix>/logout         a one-button confirmation page (a GET never signs out)
  POST <prefix>/logout         with its CSRF token: end the session here, then at the provider

`<prefix>` is the folder of the redirect URI's path, as in the `identity` package.
"""

from __future__ import annotations

import hmac
import logging
import posixpath
import re
import time
import unicodedata
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

from flask import (
    Blueprint,
    Response,
    after_this_request,
    current_app,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from .errors import AuthError, from_oauth_error, render_error
from .pending import PendingError, PendingSignIn, new_pending
from .provider import ENTRA_TENANT_TEMPLATE, ProviderError, TokenError, provider_calls
from .sealing import SealError
from .session import current_entry, end_session, start_session
from .settings import without_reserved
from .signals import signed_in, signed_out

log = logging.getLogger(__name__)

# The provider's answer is a code, a state and a few short values: a few KiB at most. Bodies
# past this are refused (413) before they are read (checklist J2).
MAX_FORM_BYTES = 16 * 1024
MAX_PARAMETER_CHARS = 8 * 1024
MAX_NEXT_CHARS = 2048
MAX_SCOPE_CHARS = 1024
SIGN_OUT_COOKIE = "entra-signout"
SIGN_OUT_SECONDS = 600  # how long the provider's sign-out pages may take
NO_OP_STATE = "identity.web.no_op"  # B2C profile edits come back with it: nothing to redeem


def make_blueprint(name: str, redirect_path: str) -> Blueprint:
    bp = Blueprint(name, __name__, template_folder="templates")
    prefix = posixpath.dirname(redirect_path).rstrip("/")
    bp.add_url_rule(f"{prefix}/login", "login", login, methods=["GET"])
    bp.add_url_rule(redirect_path, "auth_response", authorization_response,
                    methods=["GET", "POST"])
    bp.add_url_rule(f"{prefix}/logout", "logout", logout, methods=["GET", "POST"])
    # Errors on these routes (a body too large, a wrong method) get the extension's page.
    bp.register_error_handler(HTTPException, lambda exc: render_error(AuthError(
        exc.code or 500, exc.name, exc.description or "")))
    return bp


def _state() -> Any:
    return current_app.extensions["flask_entra"]


# --------------------------------------------------------------------------------------------
# GET /login
# --------------------------------------------------------------------------------------------

def login() -> ResponseReturnValue:
    state = _state()
    next_path = safe_next_path(request.args.get("next"))
    # A view's scopes (incremental consent) alone, else the app's sign-in scopes: a token
    # request may name one resource only (Entra: AADSTS28000), and the refresh token gets the
    # other resources' tokens later.
    scopes = (state.auth.known_scopes_in(request.args.get("scope", "")[:MAX_SCOPE_CHARS])
              or list(state.settings.scopes))
    entry = current_entry()
    metadata = state.provider.metadata()  # fails early, with a clear page, if it is down
    app = state.tokens.msal_app()
    with provider_calls(state.settings.authority_url):
        flow = app.initiate_auth_code_flow(
            scopes, redirect_uri=state.settings.redirect_uri,
            response_mode=state.settings.response_mode, prompt=state.settings.prompt,
            claims_challenge=(entry or {}).get("claims_challenge"))
    pending = new_pending(
        flow, parse_qs(urlsplit(flow["auth_uri"]).query)["nonce"][0], next_path,
        metadata.issuer, metadata.iss_parameter_supported,
        previous_session=session.sid if entry else None)  # type: ignore[attr-defined]
    response = redirect(flow["auth_uri"], 302)
    state.pending.remember(pending, request, response)
    return response


# --------------------------------------------------------------------------------------------
# The redirect URI
# --------------------------------------------------------------------------------------------

def authorization_response() -> ResponseReturnValue:
    state = _state()
    params = response_parameters()
    if params.get("state") == NO_OP_STATE:
        return redirect(request.script_root + "/", 303)
    pending = take_pending(params.get("state", ""))
    check_response_issuer(params, pending)
    if params.get("error"):
        raise from_oauth_error(params["error"], params.get("error_description", ""))
    if not params.get("code"):
        raise AuthError(400, "Sign-in failed", "The identity provider's response has no "
                        "authorization code.", offer_sign_in=True)
    # Single use, across processes and instances: of two deliveries of one response (a double
    # submit, a replay) only the first redeems the code. The one record an anonymous client can
    # cause: only for a response with a code whose sealed cookie opened (so at most one per
    # token request made), and gone with the pending sign-in's lifetime (store.claim_once).
    if not state.store.claim_once("sign-in:" + pending.state, pending.expires_at):
        raise AuthError(400, "Sign-in already completed", "This sign-in response was already "
                        "used.", hint="Start the sign-in again.", offer_sign_in=True)
    app = state.tokens.msal_app()  # an empty, throw-away cache: see redeem_code
    result = redeem_code(app, pending, params)
    try:
        claims = state.provider.verify_id_token(result["id_token"], nonce=pending.nonce)
    except TokenError as exc:
        raise id_token_refused(exc) from None
    accounts = app.get_accounts()
    # A new session id (no fixation, checklist E1); this browser's earlier sign-in ends, and its
    # user's session data does not carry over to this one.
    signed_in_before = current_entry() is not None
    earlier = {pending.previous_session,
               session.sid if signed_in_before else None} - {None}  # type: ignore[attr-defined]
    current_app.session_interface.regenerate(session)  # type: ignore[attr-defined]
    if signed_in_before:
        session.clear()
    for sid in earlier:
        end_session(sid)
    # The token cache first: if it cannot be stored, no session starts.
    state.tokens.save_cache(session.sid, app.token_cache,  # type: ignore[attr-defined]
                            time.time() + state.settings.session_lifetime)
    start_session(claims, accounts[0]["home_account_id"] if accounts else "")
    try:
        signed_in.send(current_app._get_current_object(), user=claims)  # type: ignore[attr-defined]
    except Exception:
        end_session()  # a receiver refused the sign-in (or failed): no half-started session
        raise
    return redirect(pending.next_path, 303)


def response_parameters() -> dict[str, str]:
    """The response's parameters: the form body for form_post (refused past MAX_FORM_BYTES
    before it is read), else the query string; each value bounded."""
    source = bounded_form() if request.method == "POST" else request.args
    params = {key: source.get(key, "") for key in list(source)[:32]}
    if any(len(value) > MAX_PARAMETER_CHARS for value in params.values()):
        raise AuthError(400, "Sign-in failed", "The identity provider's response is malformed "
                        "(a parameter is too long).", offer_sign_in=True)
    return params


def bounded_form() -> Any:
    """The form body, refused (413) past MAX_FORM_BYTES before more is read. Also without a
    Content-Length (chunked): Werkzeug then stops reading at the limit, but would parse what it
    read as if it were the whole body."""
    request.max_content_length = MAX_FORM_BYTES
    request.max_form_memory_size = MAX_FORM_BYTES
    form = request.form
    if request.content_length is None and getattr(request.stream, "is_exhausted", False):
        raise RequestEntityTooLarge()
    return form


def take_pending(state: str) -> PendingSignIn:
    """This browser's pending sign-in for `state`; its cookie is deleted whatever happens."""
    pendings = _state().pending

    @after_this_request
    def forget(response: Response) -> Response:
        if 0 < len(state) <= 256:
            pendings.forget(state, response)
        return response

    try:
        return pendings.take(state, request)
    except PendingError as exc:
        raise AuthError(400, "No sign-in in progress", "The identity provider's response "
                        f"cannot be matched to a sign-in started in this browser: {exc}.",
                        hint="It may have been used already, have expired (after 10 minutes), "
                        "or have been started in another browser or with cookies blocked. Sign "
                        "in again.", offer_sign_in=True) from None


def check_response_issuer(params: dict[str, str], pending: PendingSignIn) -> None:
    """RFC 9207 mix-up defence: an `iss` in the response must be the expected issuer."""
    issuer = params.get("iss")
    if issuer is None:
        if pending.iss_required:
            raise AuthError(400, "Sign-in failed", "The identity provider's response lacks the "
                            "iss parameter it promises to send.", offer_sign_in=True)
        return
    expected = re.escape(pending.issuer).replace(
        re.escape(ENTRA_TENANT_TEMPLATE), "[0-9a-fA-F-]{36}")
    if not re.fullmatch(expected, issuer):
        raise AuthError(400, "Sign-in failed", "The response comes from another issuer than "
                        "the one this sign-in was sent to.", offer_sign_in=True)


def redeem_code(app: Any, pending: PendingSignIn, params: dict[str, str]) -> dict[str, Any]:
    """Redeem the code with MSAL into the app's empty cache (MSAL caches tokens before its own
    nonce check, and before ours, so nothing is kept unless every check passes)."""
    state = _state()
    try:
        with provider_calls(state.settings.authority_url):
            result = app.acquire_token_by_auth_code_flow(pending.flow, params)
    except RuntimeError:  # MSAL's own nonce check (it raises before ours sees the token)
        raise id_token_refused(TokenError("the ID token's nonce is not the one this sign-in "
                                          "sent")) from None
    except ValueError:  # MSAL's state or scope check
        raise AuthError(400, "Sign-in failed", "The sign-in response failed validation.",
                        offer_sign_in=True) from None
    if "error" in result:
        log.warning("Token endpoint refused the code: %s", str(result.get("error"))[:100])
        raise from_oauth_error(result["error"], result.get("error_description", ""))
    if not result.get("id_token"):
        raise AuthError(502, "Sign-in failed", "The identity provider returned no ID token.",
                        offer_sign_in=True)
    requested = set(without_reserved(pending.flow.get("scope")))
    granted = set(str(result.get("scope", "")).split())
    if result.get("scope") and requested - granted:
        raise AuthError(403, "Permissions not granted", "The identity provider did not grant "
                        f"every permission this page needs: {' '.join(sorted(requested - granted))}"
                        ".", offer_sign_in=True)
    return result


def id_token_refused(exc: TokenError) -> AuthError:
    log.warning("ID token rejected: %s", exc)
    return AuthError(400, "Sign-in failed", "The identity provider's ID token failed "
                     "validation, so the sign-in was refused.", detail=f"Reason: {exc}.",
                     offer_sign_in=True)


# --------------------------------------------------------------------------------------------
# /logout
# --------------------------------------------------------------------------------------------

def logout() -> ResponseReturnValue:
    state = _state()
    entry = current_entry()
    if entry is None:
        return redirect(request.script_root + "/", 303)
    if request.method == "GET":
        body = render_template("flask_entra/logout.html", csrf_token=entry["csrf"],
                               logout_url=url_for(f"{state.settings.blueprint_name}.logout"),
                               home_url=request.script_root + "/")
        return body, 200, {"Cache-Control": "no-store"}
    sent = bounded_form().get("csrf_token", "")
    if not hmac.compare_digest(sent.encode(), entry["csrf"].encode()):
        raise AuthError(400, "Sign-out not confirmed", "The sign-out request did not come from "
                        "this app's sign-out button, so you are still signed in.",
                        hint="Use the Sign out button to sign out.")
    claims = entry["claims"]
    end_session()
    signed_out.send(current_app._get_current_object(), user=claims)  # type: ignore[attr-defined]
    sign_out_state = state.sign_out_sealer.seal(b"pending").decode()
    response = redirect(provider_logout_url(claims.get("login_hint"), sign_out_state), 303)
    # The provider sends the browser back with this state; the cookie tells that it is this
    # browser's sign-out coming back. Lax: the return is a top-level navigation.
    response.set_cookie(sign_out_cookie(), sign_out_state, max_age=SIGN_OUT_SECONDS, path="/",
                        httponly=True, secure=state.settings.uses_https, samesite="Lax")
    return response


def provider_logout_url(logout_hint: str | None, sign_out_state: str) -> str:
    """RP-initiated logout at the provider, or straight back if it has none. No id_token_hint:
    it would put the ID token (personal data) in a URL and the provider's logs; Entra takes the
    login_hint claim as logout_hint instead (never the UPN), a generic provider client_id."""
    state = _state()
    settings = state.settings
    if settings.post_logout_view is not None:
        back = url_for(settings.post_logout_view.__name__, _external=True)
    else:
        back = request.url_root
    try:
        endpoint = state.provider.metadata().end_session_endpoint
    except ProviderError:
        endpoint = ""
    params = {"post_logout_redirect_uri": back, "state": sign_out_state}
    if not endpoint:
        return f"{back}?{urlencode({'state': sign_out_state})}"
    if settings.oidc_authority:
        params["client_id"] = settings.client_id
    if isinstance(logout_hint, str) and logout_hint:
        params["logout_hint"] = logout_hint
    return f"{endpoint}{'&' if '?' in endpoint else '?'}{urlencode(params)}"


def sign_out_cookie() -> str:
    """The sign-out state's cookie: `__Host-` under https, so no sibling subdomain plants one."""
    return ("__Host-" if _state().settings.uses_https else "") + SIGN_OUT_COOKIE


def clean_sign_out_return() -> ResponseReturnValue | None:
    """before_request: the provider's return from this browser's sign-out (its state, its
    cookie) is sent on to the same page without `?state=…` in the address bar, marked done so
    that page can say "signed out" (Auth.returned_from_sign_out). Any other request, or another
    state, is left alone (checklist F3)."""
    name = sign_out_cookie()
    if name not in request.cookies or request.method != "GET":
        return None
    expected = request.cookies[name]
    sent = request.args.get("state", "")
    if not sent or len(sent) > 1024 or not hmac.compare_digest(sent.encode(), expected.encode()):
        return None
    state = _state()
    try:
        state.sign_out_sealer.open(sent, SIGN_OUT_SECONDS)
    except SealError:
        return None
    response = redirect(request.script_root + request.path, 303)
    response.set_cookie(name, state.sign_out_sealer.seal(b"done").decode(),
                        max_age=60, path="/", httponly=True, secure=state.settings.uses_https,
                        samesite="Lax")
    return response


# --------------------------------------------------------------------------------------------
# Small rules
# --------------------------------------------------------------------------------------------

def safe_next_path(value: str | None) -> str:
    """Where to go after sign-in: a path on this site, else "/". Checks the value as given and
    URL-decoded (control characters removed), so `//host`, `/\\host`, `/%2F%2Fhost`,
    `/%09/host`, schemes and absolute URLs all fall back to "/" (RFC 9700 4.11.1)."""
    if not value or len(value) > MAX_NEXT_CHARS:
        return "/"
    decoded = value
    for _ in range(3):  # undo double encoding too
        decoded = unquote(decoded)
    for candidate in (value, _without_control_characters(decoded)):
        if not _is_local_path(candidate):
            return "/"
    if value != _without_control_characters(value):
        return "/"
    return value


def _is_local_path(value: str) -> bool:
    if not value.startswith("/") or value[1:2] in ("/", "\\") or "\\" in value:
        return False
    parts = urlsplit(value)
    return not parts.scheme and not parts.netloc


def _without_control_characters(value: str) -> str:
    return "".join(c for c in value if unicodedata.category(c)[0] != "C")
