"""Sign-in and sign-out, in the order they happen:

  GET  /login             remember where to return, send the browser to the identity provider
  GET|POST <REDIRECT_URI>  the provider's answer: check it, redeem the code, validate the ID token,
                          and only then start a session (new id) and 303 to a clean URL
  GET  /logout            a confirmation form (a GET never signs out)
  POST /logout            with its CSRF token: end the session here, then at the provider

and what the pages use: current_user(), login_required; their access tokens come from
tokens.get_access_token().

Where things live: a pending sign-in (MSAL's flow: state, nonce, PKCE verifier) is a server-side
record keyed by its `state`, single use, bound to the browser by a short-lived cookie. Tokens live
in one MSAL token cache per session, encrypted, in the server-side session; the cookie holds only
an id.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import logging
import os
import re
import secrets
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import msal
import requests
from cachelib.base import BaseCache
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import (
    Blueprint,
    Response,
    after_this_request,
    current_app,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.typing import ResponseReturnValue
from msal.authority import WELL_KNOWN_AUTHORITY_HOSTS
from msal.exceptions import MsalServiceError

from . import backchannel, sessions
from .config import Settings
from .errors import STORE_UNAVAILABLE, AppError, from_oauth_error
from .oidc import ENTRA_TENANT_TEMPLATE, IdTokenError, Provider, ProviderError, unreachable

log = logging.getLogger(__name__)
bp = Blueprint("auth", __name__)

SIGN_IN_TTL_SECONDS = 600  # how long a started sign-in may take
SIGN_IN_LOCK_SECONDS = 5  # taking a pending sign-in is a read and a delete
BINDING_COOKIE = "signin_binding"
SIGN_OUT_STATE_COOKIE = "signout_state"
SIGN_OUT_STATE_SECONDS = 600  # how long the provider's sign-out pages may take
SIGN_IN_KEY_PREFIX = "signin:"

# Session keys
USER = "user"
ID_TOKEN_CLAIMS = "id_token_claims"
TOKEN_CACHE = "token_cache"
ACCOUNT_ID = "home_account_id"
CSRF_TOKEN = "csrf_token"
SIGNED_IN_AT = sessions.SIGNED_IN_AT  # the stored session expires SESSION_LIFETIME after it
LAST_SEEN = sessions.LAST_SEEN  # the session's last request, recorded at most once a minute
PENDING_CLAIMS = "pending_claims_challenge"

class SignInRequired(Exception):
    """Raised where a page needs a (fresh) sign-in; answered with a sign-in page or redirect."""

    def __init__(self, message: str, *, claims_challenge: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.claims_challenge = claims_challenge


# --------------------------------------------------------------------------------------------
# The per-process identity services: MSAL apps, pending sign-ins, sealed token caches.
# --------------------------------------------------------------------------------------------

class Identity:
    def __init__(self, settings: Settings, http: requests.Session, provider: Provider,
                 records: BaseCache) -> None:
        self.settings = settings
        self.http = http
        self.provider = provider
        self.records = records
        # MSAL keeps discovery documents and throttling state here; one dict per process so the
        # MSAL apps below share them and never re-fetch discovery.
        self.http_cache: dict = {}
        host = urlsplit(settings.authority_url).hostname
        # Instance discovery asks login.microsoftonline.com about the host: only meaningful (and
        # only reachable) for Microsoft's own hosts.
        self._instance_discovery = None if host in WELL_KNOWN_AUTHORITY_HOSTS else False
        self._cipher = AESGCM(HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"webapp token cache",
        ).derive(settings.secret_key.encode()))
        self._idle_apps: list[msal.ConfidentialClientApplication] = []
        self._idle_lock = threading.Lock()

    # MSAL binds a token cache to an app when building it, and building an app per request costs
    # more than the whole cached-token lookup (~0.1 ms, mostly a failed optional import). So apps
    # are pooled: a request borrows one, loads its session's cache *contents* into the app's cache
    # object, and gives it back emptied. An app serves one request at a time, so users never see
    # each other's tokens, whatever the server's threading model.

    def borrow(self, sealed_cache: bytes | None = None) -> msal.ConfidentialClientApplication:
        """An MSAL app whose token cache holds the given sealed cache (or nothing).
        Raises SessionUnreadable if the sealed cache cannot be opened."""
        contents = self.unseal(sealed_cache) if sealed_cache else ""
        with self._idle_lock:
            app = self._idle_apps.pop() if self._idle_apps else None
        if app is None:
            app = self._new_app()
        app.token_cache.deserialize(contents)
        app.token_cache.has_state_changed = False
        return app

    def give_back(self, app: msal.ConfidentialClientApplication) -> None:
        app.token_cache.deserialize("")
        with self._idle_lock:
            self._idle_apps.append(app)

    @contextlib.contextmanager
    def borrowed(self, sealed_cache: bytes | None = None
                 ) -> Iterator[msal.ConfidentialClientApplication]:
        app = self.borrow(sealed_cache)
        try:
            yield app
        finally:
            self.give_back(app)

    def _new_app(self) -> msal.ConfidentialClientApplication:
        with provider_calls(self.settings.authority_url):
            return msal.ConfidentialClientApplication(
                self.settings.client_id,
                client_credential=self.settings.client_credential,
                authority=self.settings.authority or None,
                oidc_authority=self.settings.oidc_authority or None,
                http_client=self.http,
                http_cache=self.http_cache,
                instance_discovery=self._instance_discovery,
                token_cache=msal.SerializableTokenCache(),
            )

    def seal(self, serialized_cache: str) -> bytes:
        """A serialized token cache, encrypted and authenticated (AES-GCM): sessions may sit in a
        shared store."""
        nonce = os.urandom(12)
        return nonce + self._cipher.encrypt(nonce, serialized_cache.encode(), b"token cache")

    def unseal(self, sealed: bytes) -> str:
        try:
            return self._cipher.decrypt(sealed[:12], sealed[12:], b"token cache").decode()
        except (InvalidTag, ValueError, TypeError):
            # SECRET_KEY changed, or the stored entry was altered.
            raise SessionUnreadable() from None


class SessionUnreadable(Exception):
    """The session's token cache cannot be decrypted."""


@contextlib.contextmanager
def provider_calls(url: str) -> Iterator[None]:
    """Turn network and MSAL failures while talking to the provider into a ProviderError."""
    try:
        yield
    except requests.RequestException as exc:
        raise unreachable(url, exc) from None
    except MsalServiceError:
        raise ProviderError("The identity provider answered with a server error.",
                            url=url) from None
    except ValueError as exc:
        if "authority" not in str(exc).lower():
            raise
        raise ProviderError("The identity provider's OpenID configuration could not be read.",
                            url=url, hint="Check AUTHORITY: the tenant may not exist.") from None


def identity() -> Identity:
    return current_app.extensions["webapp"].identity


# --------------------------------------------------------------------------------------------
# GET /login
# --------------------------------------------------------------------------------------------

@bp.get("/login")
def login() -> ResponseReturnValue:
    settings = identity().settings
    next_path = safe_next_path(request.args.get("next"))
    binding = request.cookies.get(BINDING_COOKIE, "")
    if not re.fullmatch(r"[A-Za-z0-9_-]{43}", binding):
        binding = secrets.token_urlsafe(32)
    # A signed-in browser starting over: remember its session so a successful sign-in ends it
    # even when the provider's form_post arrives without the (Lax) session cookie.
    previous_session_id = session.sid if session else None
    claims_challenge = session.get(PENDING_CLAIMS) if session else None

    auth_uri = start_sign_in(next_path, binding, previous_session_id, claims_challenge)
    if claims_challenge:
        # It now travels in the pending sign-in. Left behind (the session busy renewing), it
        # only asks for the same claims once more at the next sign-in.
        with contextlib.suppress(sessions.SessionBusy):
            update_stored_session({PENDING_CLAIMS: None}, wait=0)

    response = redirect(auth_uri, 302)
    form_post = settings.response_mode == "form_post"
    response.set_cookie(
        BINDING_COOKIE, binding, max_age=SIGN_IN_TTL_SECONDS, path="/", httponly=True,
        # form_post arrives as a cross-site POST, which carries only SameSite=None cookies, which
        # browsers accept only when Secure (allowed on http://localhost). The session cookie stays
        # Lax. With query responses Lax is enough.
        secure=settings.uses_https or form_post, samesite="None" if form_post else "Lax")
    return response


def start_sign_in(next_path: str, binding: str, previous_session_id: str | None,
                  claims_challenge: str | None) -> str:
    """Create the pending sign-in (MSAL flow: fresh state, nonce, PKCE S256) and store it."""
    ident = identity()
    metadata = ident.provider.metadata()  # fails early, with a clear page, if the provider is down
    with ident.borrowed() as app:
        flow = app.initiate_auth_code_flow(
            list(ident.settings.scopes), redirect_uri=ident.settings.redirect_uri,
            response_mode=ident.settings.response_mode, claims_challenge=claims_challenge)
    record = {
        "flow": flow,
        "binding": _digest(binding),
        "next": next_path,
        # The nonce exactly as sent (MSAL sends a hash of the one it keeps in the flow).
        "nonce": parse_qs(urlsplit(flow["auth_uri"]).query)["nonce"][0],
        "issuer": metadata.issuer,
        "iss_parameter_required": metadata.iss_parameter_supported,
        "previous_session_id": previous_session_id,
    }
    ident.records.set(SIGN_IN_KEY_PREFIX + flow["state"], record, timeout=SIGN_IN_TTL_SECONDS)
    return flow["auth_uri"]


# --------------------------------------------------------------------------------------------
# GET|POST <REDIRECT_URI path>, registered by create_app
# --------------------------------------------------------------------------------------------

def authorization_response() -> ResponseReturnValue:
    params = authorization_response_params()
    record = take_pending_sign_in(params)
    check_response_issuer(params, record)
    if params.get("error"):
        raise from_oauth_error(params["error"], params.get("error_description", ""))
    if not params.get("code"):
        raise AppError(400, "Sign-in failed", "The identity provider's response has no "
                       "authorization code.", offer_sign_in=True)
    result, serialized_cache, account_id = redeem_code(record, params)
    claims = validate_id_token(result, record)
    start_session(claims, serialized_cache, account_id, record)
    return redirect(record["next"], 303)


def authorization_response_params() -> dict[str, str]:
    """The response's parameters: the form body for form_post, else the query string."""
    source = request.form if request.method == "POST" else request.args
    return {key: source.get(key, "") for key in source}


def take_pending_sign_in(params: dict[str, str]) -> dict[str, Any]:
    """Find the sign-in this response answers, check this browser started it, and consume it."""
    state = params.get("state", "")
    if not state or len(state) > 256:
        raise AppError(400, "No sign-in in progress", "The identity provider's response carries "
                       "no valid state, so it cannot be matched to a sign-in started here.",
                       offer_sign_in=True)
    key = SIGN_IN_KEY_PREFIX + state
    # Under a lock, so that of two simultaneous deliveries of one response only one redeems it
    # (the provider would revoke the tokens of a code redeemed twice).
    with current_app.session_interface.lock(key, SIGN_IN_LOCK_SECONDS):
        return consume_pending_sign_in(key)


def consume_pending_sign_in(key: str) -> dict[str, Any]:
    records = identity().records
    record = records.get(key)
    if record is None:
        raise AppError(400, "No sign-in in progress", "No sign-in started here is waiting for "
                       "this response.",
                       hint="It may have been used already, have expired (after 10 minutes), or "
                       "have been started before the server restarted or on another instance that "
                       "does not share the session store. Sign in again.", offer_sign_in=True)
    binding = request.cookies.get(BINDING_COOKIE, "")
    if not hmac.compare_digest(_digest(binding), record["binding"]):
        # Not consumed: the browser that started it may still complete it.
        raise AppError(400, "Sign-in started elsewhere", "This response belongs to a sign-in "
                       "started in another browser (or with cookies blocked).",
                       hint="Start the sign-in again in this browser, with cookies enabled.",
                       offer_sign_in=True)
    records.delete(key)  # single use: a replayed response finds nothing
    return record


def check_response_issuer(params: dict[str, str], record: dict[str, Any]) -> None:
    """RFC 9207 mix-up defence: an `iss` in the response must be the expected issuer."""
    issuer = params.get("iss")
    if issuer is None:
        if record["iss_parameter_required"]:
            raise AppError(400, "Sign-in failed", "The identity provider's response lacks the "
                           "iss parameter it promises to send.", offer_sign_in=True)
        return
    expected = re.escape(record["issuer"]).replace(
        re.escape(ENTRA_TENANT_TEMPLATE), "[0-9a-fA-F-]{36}")
    if not re.fullmatch(expected, issuer):
        raise AppError(400, "Sign-in failed", "The response comes from another issuer than the "
                       "one this sign-in was sent to.", offer_sign_in=True)


def redeem_code(record: dict[str, Any], params: dict[str, str]
                ) -> tuple[dict[str, Any], str, str]:
    """Redeem the code with MSAL into an empty, throw-away cache (MSAL caches tokens before its
    own nonce check, and before ours, so nothing reaches the session unless all checks pass).
    Returns MSAL's result, that cache serialized, and the signed-in account's id."""
    ident = identity()
    with ident.borrowed() as app:
        try:
            with provider_calls(ident.settings.authority_url):
                result = app.acquire_token_by_auth_code_flow(record["flow"], params)
        except RuntimeError:
            # MSAL's own nonce check (it raises before our validation gets the token).
            raise id_token_refused(IdTokenError(
                "the ID token's nonce is not the one this sign-in sent")) from None
        except ValueError:
            # MSAL's state check; cannot differ here since the record was found by state.
            raise AppError(400, "Sign-in failed", "The sign-in response failed validation.",
                           offer_sign_in=True) from None
        accounts = app.get_accounts()
        serialized_cache = app.token_cache.serialize()
    if "error" in result:
        log.warning("Token endpoint refused the code: %s", result.get("error"))
        raise from_oauth_error(result["error"], result.get("error_description", ""))
    if not result.get("id_token"):
        raise AppError(502, "Sign-in failed", "The identity provider returned no ID token.",
                       offer_sign_in=True)
    return result, serialized_cache, accounts[0]["home_account_id"] if accounts else ""


def validate_id_token(result: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    try:
        return identity().provider.validate_id_token(result["id_token"], nonce=record["nonce"])
    except IdTokenError as exc:
        raise id_token_refused(exc) from None


def id_token_refused(exc: IdTokenError) -> AppError:
    log.warning("ID token rejected: %s", exc)
    return AppError(400, "Sign-in failed", "The identity provider's ID token failed validation, "
                    "so the sign-in was refused.", detail=f"Reason: {exc}.", offer_sign_in=True)


def start_session(claims: dict[str, Any], serialized_cache: str, account_id: str,
                  record: dict[str, Any]) -> None:
    """A new session id for the signed-in user (no fixation); older sessions of this browser end."""
    for older in {session.sid if session else None, record.get("previous_session_id")} - {None}:
        destroy_stored_session(older)
    current_app.session_interface.regenerate(session)
    session.clear()
    # Indexed first: if that fails, the session stays empty and nothing is saved.
    backchannel.remember_session(claims, session.sid)  # so a logout token can end it
    session[USER] = user_from_claims(claims)
    session[ID_TOKEN_CLAIMS] = claims
    session[TOKEN_CACHE] = identity().seal(serialized_cache)
    session[ACCOUNT_ID] = account_id
    session[CSRF_TOKEN] = secrets.token_urlsafe(32)
    session[SIGNED_IN_AT] = session[LAST_SEEN] = int(time.time())


def destroy_stored_session(session_id: str) -> None:
    """Delete a stored session (token cache included), for good: a token renewal in progress
    cannot write it back after (sessions.SignInBoundSessions), so no lock is needed, and a page,
    a sign-in or a sign-out never waits for a renewal on a slow provider."""
    current_app.session_interface.delete_now(session_id)


def user_from_claims(claims: dict[str, Any]) -> dict[str, str]:
    return {
        "name": str(claims.get("name") or claims.get("preferred_username") or "there"),
        "username": str(claims.get("preferred_username") or ""),
        "iss": claims["iss"],
        "sub": claims["sub"],
    }


# --------------------------------------------------------------------------------------------
# /logout
# --------------------------------------------------------------------------------------------

@bp.get("/logout")
def logout_confirmation() -> ResponseReturnValue:
    if not current_user():
        return redirect(url_for("views.index"), 303)
    return render_template("logout.html")


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    if not current_user():
        return redirect(url_for("views.index"), 303)
    expected = session.get(CSRF_TOKEN) or secrets.token_urlsafe(32)  # never matches ""
    if not hmac.compare_digest(request.form.get("csrf_token", "").encode(), expected.encode()):
        raise AppError(400, "Sign-out not confirmed", "The sign-out request did not come from "
                       "this app's sign-out button, so you are still signed in.",
                       hint="Use the Sign out button to sign out.")
    # Entra's logout_hint is the login_hint claim, never a UPN (which would also put personal
    # data in a URL).
    logout_hint = session.get(ID_TOKEN_CLAIMS, {}).get("login_hint")
    end_signed_in_session()
    state = secrets.token_urlsafe(32)
    response = redirect(provider_logout_url(logout_hint, state), 303)
    # The provider sends the browser back with this state; the cookie tells it is this
    # browser's sign-out coming back (returned_from_sign_out). Lax: the return is a top-level
    # navigation.
    response.set_cookie(SIGN_OUT_STATE_COOKIE, state, max_age=SIGN_OUT_STATE_SECONDS, path="/",
                        httponly=True, secure=identity().settings.uses_https, samesite="Lax")
    return response


def provider_logout_url(logout_hint: str | None, state: str) -> str:
    """RP-initiated logout at the provider, or home if it has no end_session_endpoint. No
    id_token_hint: it would put the ID token (personal data) in a URL, browser history and the
    provider's logs; Entra uses logout_hint instead, and a generic provider gets client_id."""
    ident = identity()
    try:
        endpoint = ident.provider.metadata().end_session_endpoint
    except ProviderError:
        endpoint = ""
    if not endpoint:
        return url_for("views.index", state=state)  # back home at once, as the provider would
    params = {"post_logout_redirect_uri": ident.settings.post_logout_redirect_uri,
              "state": state}
    if ident.settings.oidc_authority:
        params["client_id"] = ident.settings.client_id
    if logout_hint:
        params["logout_hint"] = logout_hint
    return f"{endpoint}{'&' if '?' in endpoint else '?'}{urlencode(params)}"


def returned_from_sign_out() -> bool:
    """Whether this request is the provider sending the browser back after its sign-out (to
    post_logout_redirect_uri, with the state that sign-out sent). Only then does the page say
    "signed out"; a missing or other state changes nothing else (checklist F3)."""
    # `in`, not .get(): werkzeug's .get() raises and catches a KeyError for a missing cookie,
    # which costs every visit to the home page.
    if SIGN_OUT_STATE_COOKIE not in request.cookies:
        return False
    expected = request.cookies[SIGN_OUT_STATE_COOKIE]

    @after_this_request
    def forget_state(response: Response) -> Response:
        response.delete_cookie(SIGN_OUT_STATE_COOKIE, path="/", httponly=True,
                               secure=identity().settings.uses_https, samesite="Lax")
        return response

    state = request.args.get("state", "")
    return bool(expected) and hmac.compare_digest(state.encode(), expected.encode())


# --------------------------------------------------------------------------------------------
# What pages use
# --------------------------------------------------------------------------------------------

def current_user() -> dict[str, str] | None:
    """The signed-in user, or None. A session ends SESSION_LIFETIME after sign-in, or after
    SESSION_IDLE_TIMEOUT without a request, whatever the tokens' lifetimes."""
    user = session.get(USER)
    if user is None:
        return None
    settings = identity().settings
    now = time.time()
    signed_in_at = session.get(SIGNED_IN_AT, 0)
    idle = now - session.get(LAST_SEEN, signed_in_at)
    if now - signed_in_at > settings.session_lifetime or idle > settings.session_idle_timeout:
        end_signed_in_session()
        return None
    if idle > sessions.ACTIVITY_RECORD_SECONDS and "activity_recorded" not in g:
        g.activity_recorded = True
        with contextlib.suppress(sessions.SessionBusy):  # a renewal right now: activity enough
            update_stored_session({LAST_SEEN: int(now)}, wait=0)
    return user


def end_signed_in_session() -> None:
    """Sign out here: the stored session first, for good (a renewal in another tab must not write
    it back when done), then this request's copy and the cookie."""
    destroy_stored_session(session.sid)
    end_session()


def update_stored_session(changes: dict[str, Any], wait: float | None = None) -> bool:
    """Change keys of the stored session (None removes one), under its lock, on the stored copy.
    Not through this request's copy, which Flask-Session saves whole at the end of the request:
    that could undo a token renewal another request saved meanwhile (tokens.get_access_token),
    or bring back a session that ended (a sign-out, a back-channel logout). False if it's gone."""
    store = current_app.session_interface
    with store.lock(session.sid, renewal_seconds(), wait=wait):
        stored = store.load_now(session.sid)
        if not stored or USER not in stored:
            return False
        for key, value in changes.items():
            if value is None:
                stored.pop(key, None)
            else:
                stored[key] = value
        store.save_now(current_app, store.session_class(stored, sid=session.sid))
    return True


def login_required(view: Callable[..., ResponseReturnValue]
                   ) -> Callable[..., ResponseReturnValue]:
    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        if current_user() is None:
            return redirect(url_for("auth.login", next=request.full_path.rstrip("?")), 302)
        return view(*args, **kwargs)
    return wrapper


def renewal_seconds() -> float:
    """How long a renewal may hold the session's lock (and a waiting request wait): the token
    request, a connect retry and a key-set fetch, each bounded by HTTP_TIMEOUT."""
    return 3 * identity().settings.http_timeout + 5


def session_msal_app() -> msal.ConfidentialClientApplication:
    """An MSAL app loaded with this session's token cache, for the rest of the request."""
    if "msal_app" not in g:
        try:
            g.msal_app = identity().borrow(session.get(TOKEN_CACHE) or b"")
        except SessionUnreadable:
            end_session()
            raise SignInRequired("Your session could not be read. Please sign in again.") from None
    return g.msal_app


@bp.teardown_app_request
def give_back_msal_app(_exc: BaseException | None) -> None:
    app = g.pop("msal_app", None)
    if app is not None:
        identity().give_back(app)


def end_session() -> None:
    session.clear()
    app = g.pop("msal_app", None)
    if app is not None:
        identity().give_back(app)


@bp.app_errorhandler(SignInRequired)
def sign_in_required(exc: SignInRequired) -> ResponseReturnValue:
    next_path = safe_next_path(request.full_path.rstrip("?"))
    # Interactive step-up for a claims challenge: the challenge rides server-side (unless the
    # session ended meanwhile, or cannot be changed right now: then a plain sign-in, after which
    # Graph asks for the claims again).
    if exc.claims_challenge and remember_claims_challenge(exc.claims_challenge):
        return redirect(url_for("auth.login", next=next_path), 303)
    error = AppError(401, "Please sign in again", exc.message, offer_sign_in=True)
    return render_template("error.html", error=error, next_path=next_path), 401


def remember_claims_challenge(claims_challenge: str) -> bool:
    try:
        return update_stored_session({PENDING_CLAIMS: claims_challenge},
                                     wait=SIGN_IN_LOCK_SECONDS)
    except (sessions.SessionBusy, *STORE_UNAVAILABLE):
        return False


# --------------------------------------------------------------------------------------------
# Small rules
# --------------------------------------------------------------------------------------------

def safe_next_path(value: str | None) -> str:
    """Where to go after sign-in: a path on this site, else "/". Checks the value as given and
    URL-decoded (control characters removed), so `//host`, `/\\host`, `/%2F%2Fhost`,
    `/%09/host`, schemes and absolute URLs all fall back to "/" (RFC 9700 4.11.1)."""
    if not value or len(value) > 2048:
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


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()
