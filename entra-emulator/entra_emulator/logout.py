"""Sign-out: `/{tenant}/oauth2/v2.0/logout` and the v1 `/{tenant}/oauth2/logout` that
`identity` ends up calling (it reads the v1 discovery document).

Both end the SSO session and clear its cookie, then redirect to `post_logout_redirect_uri`
(with `state`) when it is registered for the app, else show a signed-out page. An
unregistered URI is never redirected to (RFC 9700 §4.11.2).
"""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit, urlunsplit

import jwt
from flask import Blueprint, Response, redirect, request

from entra_emulator.authorize import SESSION_COOKIE
from entra_emulator.context import current_state, tenant_id_for
from entra_emulator.directory import Application
from entra_emulator.errors import EntraError
from entra_emulator.pages import error_page, html_page, secure_page

bp = Blueprint("logout", __name__)


def named_client_id() -> str | None:
    """The app signing out, if the request says: client_id, or id_token_hint's audience."""
    client_id = request.values.get("client_id")
    if client_id:
        return client_id
    hint = request.values.get("id_token_hint")
    if hint:
        try:
            audience = jwt.decode(hint, options={"verify_signature": False}).get("aud")
        except jwt.PyJWTError:
            return ""
        return audience if isinstance(audience, str) else ""
    return None


def registered_logout_uri(uri: str | None) -> str | None:
    """`uri` if it is a registered redirect URI of the signing-out app (of any app in the
    tenant when the request does not say which app, as identity's logout URL does not)."""
    if not uri:
        return None
    directory = current_state().directory
    client_id = named_client_id()
    if client_id is None:
        apps: list[Application] = list(directory.applications)
    else:
        app = directory.application(client_id)
        apps = [app] if app is not None else []
    return uri if any(uri in candidate.redirect_uris for candidate in apps) else None


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
    current_state().sessions.end(request.cookies.get(SESSION_COOKIE))
    target = registered_logout_uri(request.values.get("post_logout_redirect_uri"))
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
