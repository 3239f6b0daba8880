"""Tokens: MSAL for the sign-in's code redemption, and access tokens for the signed-in user.

The session's MSAL token cache is a record of its own in the store (sealed with Fernet), read
only when a view needs a token, so a signed-in page without one reads the small session alone.
One MSAL app is built per use, as MSAL intends; the process's apps share one `http_cache`, where
MSAL keeps the provider's discovery documents, so building one costs no network.

Why a lock, not a merge: renewing is a read-modify-write of the token cache, and a refresh token
may be single use. Two requests of one user renewing at once would both spend the same refresh
token; a provider that rotates refresh tokens with reuse detection (RFC 9700 4.14.2) refuses the
second and revokes the whole family. So renewals take turns under a per-session lock in the store
(Redis, or a lock file: it holds across processes and instances): the request re-reads the cache
under it (another request may just have renewed), renews if still needed, and saves before
letting go. A valid cached token, the common case, takes no lock and no write.
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import urlsplit

import msal
from msal.authority import WELL_KNOWN_AUTHORITY_HOSTS

from .errors import AuthError
from .provider import Provider, TokenError, provider_calls
from .sealing import Sealer, SealError
from .session import (
    ACTIVITY_RECORD_SECONDS,
    TOKEN_CACHE_PREFIX,
    current_entry,
    end_session,
    session_id,
    write_token_cache,
)
from .settings import Settings
from .store import Store

log = logging.getLogger(__name__)

# MSAL renews an access token with less than this left; and how much longer a token must last to
# be served from the cache for the rest of a request.
MSAL_EXPIRY_SKEW_SECONDS = 5 * 60
RENEWAL_MARGIN_SECONDS = 30
# Token-endpoint errors that say "later", not "sign in again".
PROVIDER_BUSY_ERRORS = frozenset({"temporarily_unavailable", "server_error"})
# Answers to a silent renewal that mean "ask the user" (a scope not consented yet, a claims
# challenge), without meaning the sign-in itself is over.
CONSENT_ERRORS = frozenset({"consent_required", "interaction_required"})
CONSENT_CODES = frozenset({65001, 65004})


class InteractionRequired(Exception):
    """The user must go through the provider again: to sign in, to consent to `scopes`, or to
    satisfy a claims challenge. Answered with a redirect to the sign-in (views.py)."""

    def __init__(self, message: str, *, scopes: list[str] | None = None,
                 claims_challenge: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.scopes = scopes or []
        self.claims_challenge = claims_challenge


class Tokens:
    def __init__(self, settings: Settings, provider: Provider, http: Any, store: Store,
                 secret_keys: list[str]) -> None:
        self.settings = settings
        self.provider = provider
        self.http = http
        self.store = store
        self.http_cache: dict[str, Any] = {}  # shared by every MSAL app of this process
        self.sealer = Sealer(secret_keys, "token cache")
        host = urlsplit(settings.authority_url).hostname
        # Instance discovery asks login.microsoftonline.com about the host: only meaningful (and
        # only reachable) for Microsoft's own hosts.
        self._instance_discovery = None if host in WELL_KNOWN_AUTHORITY_HOSTS else False

    def msal_app(self, cache: msal.SerializableTokenCache | None = None
                 ) -> msal.ConfidentialClientApplication:
        with provider_calls(self.settings.authority_url):
            return msal.ConfidentialClientApplication(
                self.settings.client_id, client_credential=self.settings.client_credential,
                authority=self.settings.authority or None,
                oidc_authority=self.settings.oidc_authority or None,
                http_client=self.http, http_cache=self.http_cache,
                instance_discovery=self._instance_discovery,
                token_cache=cache or msal.SerializableTokenCache())

    # -- the session's token cache, a record apart -------------------------------------------

    def save_cache(self, sid: str, cache: msal.SerializableTokenCache, ends_at: float) -> None:
        sealed = self.sealer.seal(cache.serialize().encode())
        # Saved by a request, which is activity: kept as long as the session (session.stored_for).
        ends_at = min(ends_at, time.time() + self.settings.session_idle_timeout
                      + ACTIVITY_RECORD_SECONDS)
        write_token_cache(self.store, sid, sealed, max(1, int(ends_at - time.time())))

    def load_cache(self, sid: str) -> msal.SerializableTokenCache | None:
        sealed = self.store.get(TOKEN_CACHE_PREFIX + sid)
        if sealed is None:
            return None
        try:
            contents = self.sealer.open(sealed).decode()
        except SealError:  # SECRET_KEY changed (and is not a fallback), or the record altered
            return None
        cache = msal.SerializableTokenCache()
        cache.deserialize(contents)
        return cache

    # -- access tokens for the signed-in user of this request ----------------------------------

    def acquire(self, scopes: list[str], claims_challenge: str | None = None) -> dict[str, Any]:
        """MSAL's answer with an access token for `scopes`: from the cache while valid (no
        network), renewed with the refresh token when near expiry, or re-acquired with a
        claims challenge. InteractionRequired when only the user can help."""
        entry = current_entry()
        if entry is None:
            raise InteractionRequired("Please sign in.", scopes=scopes)
        sid = session_id()
        cache = self._session_cache(sid)
        app = self.msal_app(cache)
        account = self._account(app, entry)
        if claims_challenge is None and has_fresh_access_token(cache, scopes, account):
            return app.acquire_token_silent(scopes, account) or {}
        with self.store.lock("renew:" + sid, self.renewal_seconds()):
            cache = self._session_cache(sid)
            app = self.msal_app(cache)
            with provider_calls(self.settings.authority_url):
                result = app.acquire_token_silent_with_error(
                    scopes, account, claims_challenge=claims_challenge) or {}
            if "access_token" in result and "id_token" in result:
                self._check_refreshed_id_token(result["id_token"], entry)
            if cache.has_state_changed:
                self.save_cache(sid, cache, entry["signed_in_at"]
                                + self.settings.session_lifetime)
        if "access_token" not in result:
            self._refused(result, scopes, claims_challenge)
        return result

    def renewal_seconds(self) -> float:
        """How long a renewal may hold the lock: a token request and a connect retry, the
        provider's metadata and key-set fetches (once a day), each timeout applying per read, so
        generously more than the sum of them."""
        return 6 * self.settings.http_timeout + 5

    def _session_cache(self, sid: str) -> msal.SerializableTokenCache:
        cache = self.load_cache(sid)
        if cache is None:
            end_session()
            raise InteractionRequired("Your sign-in has ended. Please sign in again.")
        return cache

    @staticmethod
    def _account(app: msal.ConfidentialClientApplication, entry: dict[str, Any]
                 ) -> dict[str, Any]:
        account = next((a for a in app.get_accounts()
                        if a.get("home_account_id") == entry.get("account")), None)
        if account is None:
            end_session()
            raise InteractionRequired("Your sign-in has ended. Please sign in again.")
        return account

    def _check_refreshed_id_token(self, id_token: str, entry: dict[str, Any]) -> None:
        """OIDC Core 12.2: an ID token from a refresh must be valid and for the same iss and
        sub; otherwise the session ends."""
        try:
            self.provider.verify_id_token(id_token, same_as=entry["claims"])
        except TokenError as exc:
            log.warning("Refreshed ID token rejected, ending the session: %s", exc)
            end_session()
            raise AuthError(401, "Signed out", "The identity provider returned an invalid ID "
                            "token while renewing your sign-in, so you were signed out.",
                            detail=f"Reason: {exc}.", offer_sign_in=True) from None

    def _refused(self, result: dict[str, Any], scopes: list[str],
                 claims_challenge: str | None) -> None:
        error = result.get("error", "no token")
        if error in PROVIDER_BUSY_ERRORS:
            raise AuthError(503, "The identity provider is busy", "The identity provider could "
                            "not renew your access; try again in a moment.", retry_after=5)
        codes = set(result.get("error_codes") or ())
        if claims_challenge or error in CONSENT_ERRORS or codes & CONSENT_CODES:
            raise InteractionRequired("More permissions are needed.", scopes=scopes,
                                      claims_challenge=claims_challenge)
        log.info("Silent token acquisition refused: %s", str(error)[:100])
        end_session()
        raise InteractionRequired("Your sign-in has expired or was revoked. Please sign in "
                                  "again.", scopes=scopes)


def has_fresh_access_token(cache: msal.SerializableTokenCache, scopes: list[str],
                           account: dict[str, Any]) -> bool:
    """Whether MSAL will answer from the cache without renewing: MSAL's own rule (renew under 5
    minutes left, or past `refresh_on`) with a margin for the time this request still takes."""
    now = time.time()

    def served_from_cache(entry: dict[str, Any]) -> bool:
        lasts = int(entry["expires_on"]) - now > MSAL_EXPIRY_SKEW_SECONDS + RENEWAL_MARGIN_SECONDS
        aging = "refresh_on" in entry and int(entry["refresh_on"]) - now <= RENEWAL_MARGIN_SECONDS
        return lasts and not aging

    entries = cache.search(msal.TokenCache.CredentialType.ACCESS_TOKEN, target=scopes,
                           query={"home_account_id": account["home_account_id"]})
    return any(served_from_cache(entry) for entry in entries)
