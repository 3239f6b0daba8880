"""Sign-out: `/{tenant}/oauth2/v2.0/logout` and the v1 `/{tenant}/oauth2/logout` that
`identity` ends up calling (it reads the v1 discovery document).

Both end the SSO session and clear its cookie, then redirect to `post_logout_redirect_uri`
(with `state`) when it is registered for an app that something vouches for, else show a
signed-out page (RFC 9700 §4.11.2: never an open redirector). What vouches for an app:
- the request names it: `client_id`;
- an `id_token_hint` whose signature checks out with the emulator's own keys names it (`aud`);
  a hint that does not verify is ignored, as if absent;
- the SSO session being ended signed in to it. That is how the web app and `identity` come
  back: their logout URLs carry neither client_id nor id_token_hint.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlencode, urlsplit, urlunsplit

import jwt
from flask import Blueprint, Response, redirect, request

from entra_emulator.authorize import SESSION_COOKIE
from entra_emulator.context import current_state, tenant_id_for
from entra_emulator.errors import EntraError
from entra_emulator.jsonsafe import UnsafeJson, check_jwt
from entra_emulator.pages import error_page, html_page, secure_page

if TYPE_CHECKING:
    from entra_emulator.state import Session

bp = Blueprint("logout", __name__)


def hinted_client_id(hint: str | None) -> str | None:
    """The audience of an ID token the emulator signed (expired is fine, as OIDC RP-Initiated
    Logout allows); None when there is no hint or it does not verify."""
    if not hint:
        return None
    keys = current_state().keys
    try:
        check_jwt(hint)
        kid = jwt.get_unverified_header(hint).get("kid")
        key = keys.public_key_for(kid) if isinstance(kid, str) else None
        if key is None:
            return None
        claims = jwt.decode(hint, key, algorithms=["RS256"],
                            options={"verify_exp": False, "verify_aud": False,
                                     "require": ["aud"]})
    except (jwt.PyJWTError, UnsafeJson):
        return None
    audience = claims.get("aud")
    return audience if isinstance(audience, str) else None


def session_client_ids(sid: str) -> set[str]:
    """The apps the SSO session `sid` signed in to: those holding a code issued in it (until
    the code is forgotten) or a refresh token from such a code.

    Read from the stores' records by their `sid` index. An app that got only a code, long
    expired, and no refresh token is no longer found; its sign-out then needs client_id or
    id_token_hint."""
    state = current_state()
    return state.codes.client_ids_for_session(sid) | \
        state.refresh_tokens.client_ids_for_session(sid)


def registered_logout_uri(uri: str | None, session: Session | None) -> str | None:
    """`uri` if it is a registered redirect URI of an app the request or the ending session
    vouches for (see the module's docstring)."""
    if not uri:
        return None
    client_ids = {request.values.get("client_id", ""),
                  hinted_client_id(request.values.get("id_token_hint"))}
    if session is not None:
        client_ids |= session_client_ids(session.sid)
    directory = current_state().directory
    for client_id in client_ids - {"", None}:
        app = directory.application(client_id)
        if app is not None and uri in app.redirect_uris:
            return uri
    return None


def _with_state(uri: str, state: str | None) -> str:
    if state is None:
        return uri
    parts = urlsplit(uri)
    encoded = urlencode({"state": state})
    return urlunsplit(parts._replace(query=f"{parts.query}&{encoded}" if parts.query
                                     else encoded))


def sign_out(tenant: str) -> Response:
    try:
        tenant_id_for(tenant)
    except EntraError as err:
        return error_page(err)
    ended = current_state().sessions.end(request.cookies.get(SESSION_COOKIE))
    target = registered_logout_uri(request.values.get("post_logout_redirect_uri"), ended)
    if target is not None:
        response = secure_page(redirect(_with_state(target, request.values.get("state")),
                                        code=302))
    else:
        response = html_page("signed_out.html")
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="Lax",
                           secure=request.is_secure)
    return response


@bp.route("/<tenant>/oauth2/v2.0/logout", methods=["GET", "POST"])
def logout_v2(tenant: str) -> Response:
    return sign_out(tenant)


@bp.route("/<tenant>/oauth2/logout", methods=["GET", "POST"])
def logout_v1(tenant: str) -> Response:
    return sign_out(tenant)
