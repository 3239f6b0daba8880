"""flask_entra: sign users in with the Microsoft identity platform (Entra ID) in any Flask app.

The `identity` package's Flask API (`identity.flask.Auth`), made secure::

    from flask import Flask
    from flask_entra import Auth

    app = Flask(__name__)
    app.config.update(SECRET_KEY="…", SESSION_TYPE="filesystem")
    auth = Auth(app, authority="https://login.microsoftonline.com/<tenant>",
                client_id="…", client_credential="…",
                redirect_uri="http://localhost:5000/getAToken")

    @app.route("/")
    @auth.login_required
    def index(*, context):
        return f"Hello {context['user']['name']}"

Where a sign-in begins and ends: views.py (login → the redirect URI → logout). What each
module owns: settings (options), provider (discovery, keys, the one JWT check), pending (the
sealed pending sign-in), session (the signed-in session, ended one way), tokens (MSAL, the token
cache, renewal), store (the records beside the sessions), errors (pages), hardening (opt-in
headers and log redaction), signals (signed_in, signed_out).
"""

from __future__ import annotations

import functools
import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from flask import (
    Flask,
    Response,
    after_this_request,
    current_app,
    redirect,
    request,
    url_for,
)
from flask import session as flask_session  # `session` names this package's module too
from flask.typing import ResponseReturnValue

from . import api, authorization, views
from .authorization import has_group_overage
from .errors import AuthError, register_error_pages
from .hardening import SecurityHeaders, install_log_redaction, sign_out_targets
from .outbound import OutboundSession
from .pending import PendingSignIns
from .provider import Provider, ProviderError
from .sealing import Sealer, SealError
from .session import (
    SESSION_KEY,
    configure_sessions,
    current_entry,
    load_signed_in_user,
    raise_if_store_down,
)
from .settings import (
    ConfigurationError,
    Settings,
    form_post_possible,
    load_settings,
    without_reserved,
)
from .signals import signed_in, signed_out
from .store import Store, StoreUnavailable
from .tokens import InteractionRequired, Tokens

__all__ = ["Auth", "AuthError", "ConfigurationError", "InteractionRequired", "ProviderError",
           "SecurityHeaders", "StoreUnavailable", "has_group_overage", "install_log_redaction",
           "sign_out_targets", "signed_in", "signed_out"]
__version__ = "0.2.0"

log = logging.getLogger(__name__)
# A claims challenge travels in the sealed pending-sign-in cookie, which must stay well under
# browsers' 4 KiB per cookie; real ones (CAE) are a few hundred characters.
MAX_CLAIMS_CHALLENGE_CHARS = 1024


@dataclass
class _AppState:
    """What init_app builds for one app, under app.extensions["flask_entra"]."""

    auth: Auth
    settings: Settings
    http: OutboundSession
    provider: Provider
    store: Store
    pending: PendingSignIns
    tokens: Tokens
    sign_out_sealer: Sealer


class Auth:
    """The extension. `Auth(app, **options)`, or `Auth(**options)` then `init_app(app)`.

    Options (keyword arguments, else `ENTRA_<NAME>` in app.config): client_id,
    client_credential (a secret, or MSAL's certificate dict), authority or oidc_authority (or
    b2c_tenant_name + b2c_signup_signin_user_flow, b2c_edit_profile_user_flow,
    b2c_reset_password_user_flow), redirect_uri, prompt, post_logout_view, scopes (asked for
    at every sign-in), response_mode
    ("form_post"), session_lifetime (s), session_idle_timeout (s), allowed_tenants (for
    common/organizations), backchannel_logout, ca_bundle, http_timeout, max_pending_sign_ins,
    blueprint_name ("identity").
    """

    def __init__(self, app: Flask | None = None, **options: Any) -> None:
        self._options = options
        # The scopes /login may ask for: the views' (login_required), the groups overage's,
        # and those declared with allow_scopes(); the same in every process.
        self._known_scopes: set[str] = {authorization.GROUPS_SCOPE}
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        settings = load_settings(self._options, app.config)
        if settings.redirect_uri and settings.response_mode == "form_post" and not (
                form_post_possible(settings)):
            log.warning("response_mode form_post needs an https (or localhost) redirect_uri; "
                        "using query.")
            settings = Settings(**{**settings.__dict__, "response_mode": "query"})
        secret_keys = _secret_keys(app)
        store = configure_sessions(app, settings)
        http = OutboundSession(settings.http_timeout, settings.ca_bundle)
        provider = Provider(http, settings.authority_url, settings.client_id,
                            generic_oidc=bool(settings.oidc_authority),
                            allowed_tenants=settings.allowed_tenants)
        app.extensions["flask_entra"] = _AppState(
            auth=self, settings=settings, http=http, provider=provider, store=store,
            pending=PendingSignIns(settings, secret_keys),
            tokens=Tokens(settings, provider, http, store, secret_keys),
            sign_out_sealer=Sealer(secret_keys, "sign-out"))
        if settings.redirect_uri:  # without one: a web API alone (token_required)
            app.register_blueprint(views.make_blueprint(settings.blueprint_name,
                                                        settings.redirect_path))
        if settings.backchannel_logout:
            from . import backchannel

            backchannel.init_app(app, settings)
        app.before_request(raise_if_store_down)
        app.before_request(_load_user)
        app.before_request(views.clean_sign_out_return)
        register_error_pages(app)
        app.register_error_handler(InteractionRequired, _sign_in_again)

    # -- identity's API ----------------------------------------------------------------------

    def login_required(self, function: Callable[..., Any] | None = None, /, *,
                       scopes: list[str] | None = None, roles: list[str] | None = None,
                       groups: list[str] | None = None) -> Any:
        """Decorate a view that needs a signed-in user (and, with `scopes`, an access token for
        them). The view is called with `context`: `user` (the ID token's claims) and, with
        scopes, `access_token`, `token_type`, `expires_in`, `scopes`. A signed-out visitor is
        sent to sign in and brought back; a scope not yet granted is asked for then. With
        `roles` (app roles) or `groups` (group object ids), the user needs one of each list,
        else a 403 page names what is missing (groups past Entra's overage are read from
        Graph)."""
        if function is None:
            return functools.partial(self.login_required, scopes=scopes, roles=roles,
                                     groups=groups)
        wanted = without_reserved(scopes)
        self._known_scopes.update(wanted)

        required_roles, required_groups = list(roles or ()), list(groups or ())

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> ResponseReturnValue:
            user = _user()
            if user is None:
                return _redirect_to_sign_in(wanted)
            authorization.require(user, required_roles, required_groups)
            context: dict[str, Any] = {"user": user}
            if wanted:
                result = _state().tokens.acquire(wanted)
                context.update(access_token=result["access_token"],
                               token_type=result.get("token_type", "Bearer"),
                               expires_in=result.get("expires_in", 300),
                               scopes=str(result.get("scope") or " ".join(wanted)).split())
            return function(*args, context=context, **kwargs)

        return wrapper

    def get_user(self) -> dict[str, Any] | None:
        """The signed-in user's ID token claims, or None."""
        return _user()

    def get_token_for_user(self, scopes: list[str], *, claims_challenge: str | None = None
                           ) -> dict[str, Any]:
        """MSAL's answer with an `access_token` for the signed-in user, or a dict with `error`
        ("interaction_required": send them to sign in, e.g. by raising InteractionRequired).
        The refresh token never leaves the server."""
        scopes = without_reserved(scopes)
        try:
            result = _state().tokens.acquire(list(scopes), claims_challenge)
        except InteractionRequired as exc:
            return {"error": "interaction_required", "error_description": exc.message}
        return {k: v for k, v in result.items() if k not in ("refresh_token", "id_token")}

    def get_groups(self) -> list[str]:
        """The signed-in user's group object ids, read from Graph past the overage (and then
        kept with the session); [] when signed out."""
        user = self.get_user()
        if user is None:
            return []
        return authorization.user_groups(user)

    # -- protecting a web API ------------------------------------------------------------------

    def token_required(self, function: Callable[..., Any] | None = None, /, *,
                       scopes: list[str] | None = None, roles: list[str] | None = None) -> Any:
        """Decorate an API view that takes bearer access tokens: delegated tokens need one of
        `scopes`, app-only tokens one of `roles`. See flask_entra.api."""
        return api.token_required(function, scopes=scopes, roles=roles)

    def acquire_token_on_behalf_of(self, context: dict[str, Any], scopes: list[str]
                                   ) -> dict[str, Any]:
        """In a token_required view: a token for `scopes` (e.g. Graph) on behalf of the caller;
        a dict with `error` when it cannot be had (e.g. consent_required)."""
        return api.acquire_token_on_behalf_of(context, list(scopes))

    def get_edit_profile_url(self) -> str | None:
        """B2C's edit-profile page for the signed-in user, or None without B2C."""
        settings = _state().settings
        if not settings.edit_profile_authority:
            return None
        return (f"{settings.edit_profile_authority}/oauth2/v2.0/authorize?" + urlencode({
            "client_id": settings.client_id, "response_type": "code", "scope": "openid",
            "redirect_uri": settings.redirect_uri, "state": views.NO_OP_STATE,
            "nonce": secrets.token_urlsafe(16)}))

    # -- beyond identity -----------------------------------------------------------------------

    def csrf_token(self) -> str:
        """The signed-in session's CSRF token, for a sign-out form on the app's own pages
        (`<input type="hidden" name="csrf_token">`, posted to url_for('identity.logout'))."""
        entry = current_entry()
        return entry["csrf"] if entry else ""

    def returned_from_sign_out(self) -> bool:
        """Whether this page is where this browser's sign-out just came back to."""
        cookie = request.cookies.get(views.sign_out_cookie())
        if not cookie:
            return False
        try:
            done = _state().sign_out_sealer.open(cookie, 60) == b"done"
        except SealError:
            return False
        if done:
            @after_this_request
            def forget(response: Response) -> Response:
                response.delete_cookie(views.sign_out_cookie(), path="/", httponly=True,
                                       secure=_state().settings.uses_https, samesite="Lax")
                return response
        return done

    def http_client(self, app: Flask | None = None) -> OutboundSession:
        """The requests session the extension calls the provider with (timeouts, the configured
        trust, never following redirects), for calling APIs with the user's tokens."""
        return (app or current_app).extensions["flask_entra"].http

    def allow_scopes(self, scopes: list[str] | tuple[str, ...]) -> None:
        """Scopes a sign-in may ask for besides those `login_required` names, e.g. ones a view
        passes to get_token_for_user: declared at start, so every process knows them (/login
        accepts no others)."""
        self._known_scopes.update(without_reserved(list(scopes)))

    def known_scopes_in(self, requested: str) -> list[str]:
        """The scopes of a sign-in request that the app's own views ask for; no others can be
        requested through /login."""
        return [s for s in dict.fromkeys(requested.split()) if s in self._known_scopes]


def _state() -> _AppState:
    return current_app.extensions["flask_entra"]


def _user() -> dict[str, Any] | None:
    """The signed-in user's claims, from the session entry the before_request hook loaded (and
    end_session removes)."""
    entry = current_entry()
    return entry["claims"] if entry else None


def _load_user() -> None:
    if load_signed_in_user(_state().settings) is not None:
        # Its page shows the sign-out form, whose target (the provider) the CSP must list
        # (hardening.sign_out_targets): read at most every 30 s while the provider is down.
        _state().provider.metadata_if_available()


def _redirect_to_sign_in(scopes: list[str]) -> Response:
    name = _state().settings.blueprint_name
    args: dict[str, str] = {"next": request.script_root + request.full_path.rstrip("?")}
    if scopes:
        args["scope"] = " ".join(scopes)
    return redirect(url_for(f"{name}.login", **args), 302)


def _sign_in_again(exc: InteractionRequired) -> ResponseReturnValue:
    """A view needs the user at the provider again: keep a claims challenge with the session
    (so the sign-in asks for it), then send the browser to sign in and come back here."""
    if exc.claims_challenge and current_entry() is not None:
        if _usable_claims_challenge(exc.claims_challenge):
            flask_session[SESSION_KEY] = {**(current_entry() or {}),
                                          "claims_challenge": exc.claims_challenge}
        else:  # never truncated into invalid JSON: a plain sign-in instead
            log.warning("Ignoring a claims challenge that is too long or not JSON")
    if request.method != "GET":
        return views.render_error(AuthError(401, "Please sign in again", exc.message,
                                            offer_sign_in=True))
    return _redirect_to_sign_in(exc.scopes)


def _usable_claims_challenge(challenge: str) -> bool:
    if len(challenge) > MAX_CLAIMS_CHALLENGE_CHARS:
        return False
    try:
        return isinstance(json.loads(challenge), dict)
    except ValueError:
        return False


def _secret_keys(app: Flask) -> list[str]:
    """SECRET_KEY, then Flask's SECRET_KEY_FALLBACKS (still opened: key rotation)."""
    if not app.secret_key:
        log.warning("SECRET_KEY is not set: using a random key, so sign-ins in progress and "
                    "sessions' tokens do not survive a restart and are not shared between "
                    "processes. Set SECRET_KEY.")
        app.secret_key = secrets.token_hex(32)
    fallbacks = app.config.get("SECRET_KEY_FALLBACKS") or []
    return [str(app.secret_key), *(str(k) for k in fallbacks)]
