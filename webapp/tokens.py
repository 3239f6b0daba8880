"""Access tokens for the signed-in user's pages: from the session's MSAL token cache while valid,
renewed with the refresh token (one request of a session at a time) when near expiry, or
re-acquired for a continuous access evaluation (CAE) claims challenge.

The sign-in that fills the token cache, and the session around it, are in auth.py.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import msal
from flask import current_app, g, session

from . import auth
from .errors import AppError
from .oidc import IdTokenError, ProviderError

log = logging.getLogger(__name__)

# MSAL renews an access token with less than this left; and how much longer a token must last to
# be served from the cache for the rest of a request.
MSAL_EXPIRY_SKEW_SECONDS = 5 * 60
RENEWAL_MARGIN_SECONDS = 30

# Token-endpoint errors that say "later", not "sign in again".
PROVIDER_BUSY_ERRORS = frozenset({"temporarily_unavailable", "server_error"})


def get_access_token(claims_challenge: str | None = None) -> str:
    """An access token for SCOPE: from the session's cache while valid (no network), refreshed
    with the refresh token when near expiry, or re-acquired with a CAE claims challenge.

    Why a lock, not a merge: renewing is a read-modify-write of the session's token cache, and
    a refresh token may be single use. Two requests of one user renewing at once would both
    spend the same refresh token; a provider that rotates refresh tokens with reuse detection
    (RFC 9700 4.14.2; the emulator does) refuses the second and revokes the whole token family,
    and in any case whichever request saves its session last overwrites the other's newer cache.
    Merging the caches afterwards cannot un-spend a refresh token, so renewals take turns under
    a per-session lock in the session store (Redis, or a lock file: it holds across processes
    and instances). Under it, the request re-reads the stored session (another request may just
    have renewed it; MSAL then answers from that cache), renews if still needed, and saves
    before letting go. A valid cached token, the common case, takes no lock and no store trip.
    """
    app = auth.session_msal_app()
    if claims_challenge is None and has_fresh_access_token(app, session_account(app)):
        return acquire_token_silently(app, None)
    store = current_app.session_interface
    with store.lock(session.sid, auth.renewal_seconds()):
        reload_session()
        app = auth.session_msal_app()
        try:
            return acquire_token_silently(app, claims_challenge)
        finally:
            if session.modified:
                store.save_now(current_app, session)


def acquire_token_silently(app: msal.ConfidentialClientApplication,
                           claims_challenge: str | None) -> str:
    ident = auth.identity()
    account = session_account(app)
    with auth.provider_calls(ident.settings.authority_url):
        result = app.acquire_token_silent_with_error(
            list(ident.settings.scopes), account, claims_challenge=claims_challenge)
    if result and result.get("error") in PROVIDER_BUSY_ERRORS:
        raise ProviderError("The identity provider is busy and could not renew your access; "
                            "try again in a moment.", url=ident.settings.authority_url)
    if not result or "error" in result or "access_token" not in result:
        if claims_challenge:
            raise auth.SignInRequired("Microsoft Graph asks you to sign in again.",
                                 claims_challenge=claims_challenge)
        log.info("Silent token acquisition refused: %s", (result or {}).get("error", "no token"))
        auth.end_session()
        raise auth.SignInRequired("Your sign-in has expired or was revoked. Please sign in again.")
    if "id_token" in result:
        check_refreshed_id_token(result["id_token"])
    if app.token_cache.has_state_changed:  # refreshed: keep the new tokens
        session[auth.TOKEN_CACHE] = ident.seal(app.token_cache.serialize())
        app.token_cache.has_state_changed = False
    return result["access_token"]


def session_account(app: msal.ConfidentialClientApplication) -> dict[str, Any]:
    account = next((a for a in app.get_accounts()
                    if a.get("home_account_id") == session.get(auth.ACCOUNT_ID)), None)
    if account is None:
        auth.end_session()
        raise auth.SignInRequired("Your sign-in has ended. Please sign in again.")
    return account


def has_fresh_access_token(app: msal.ConfidentialClientApplication,
                           account: dict[str, Any]) -> bool:
    """Whether MSAL will answer from the cache without renewing: MSAL's own rule (renew under 5
    minutes left, or past `refresh_on`) with a margin for the time this request still takes."""
    now = time.time()

    def served_from_cache(entry: dict[str, Any]) -> bool:
        lasts = int(entry["expires_on"]) - now > MSAL_EXPIRY_SKEW_SECONDS + RENEWAL_MARGIN_SECONDS
        aging = "refresh_on" in entry and int(entry["refresh_on"]) - now <= RENEWAL_MARGIN_SECONDS
        return lasts and not aging

    entries = app.token_cache.search(
        msal.TokenCache.CredentialType.ACCESS_TOKEN, target=list(auth.identity().settings.scopes),
        query={"home_account_id": account["home_account_id"]})
    return any(served_from_cache(entry) for entry in entries)


def reload_session() -> None:
    """Replace this request's copy of the session (read when the request began) by the stored
    one, and the MSAL app by one holding the stored token cache."""
    stored = current_app.session_interface.load_now(session.sid)
    app = g.pop("msal_app", None)
    if app is not None:
        auth.identity().give_back(app)
    if not stored or auth.USER not in stored:  # signed out meanwhile, in another tab
        auth.end_session()
        raise auth.SignInRequired("Your sign-in has ended. Please sign in again.")
    session.clear()
    session.update(stored)
    session.modified = False


def check_refreshed_id_token(id_token: str) -> None:
    """OIDC Core 12.2: an ID token from a refresh must be valid and for the same iss and sub."""
    try:
        claims = auth.identity().provider.validate_id_token(
            id_token, same_as=session.get(auth.ID_TOKEN_CLAIMS, {}))
    except IdTokenError as exc:
        log.warning("Refreshed ID token rejected, ending the session: %s", exc)
        auth.end_session()
        raise AppError(401, "Signed out", "The identity provider returned an invalid ID token "
                       "while renewing your sign-in, so you were signed out.",
                       detail=f"Reason: {exc}.", offer_sign_in=True) from None
    session[auth.ID_TOKEN_CLAIMS] = claims
    session[auth.USER] = auth.user_from_claims(claims)
