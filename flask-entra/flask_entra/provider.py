"""OpenID Connect rules for this relying party, apart from Flask: the provider's metadata, its
signing keys, and the one JWT check every token it signs goes through (verify_jwt).

Written here rather than left to MSAL because MSAL (>= 1.38) no longer validates ID tokens: it only
decodes them and checks the nonce. The checks follow OpenID Connect Core 3.1.3.7 (and 12.2 for ID
tokens that come with a refresh) and Discovery 4.3; PyJWT does the signature and time arithmetic.
"""

from __future__ import annotations

import contextlib
import copy
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import jwt
import requests
from msal.exceptions import MsalServiceError

from .metadata import (
    ENTRA_TENANT_TEMPLATE,
    ProviderMetadata,
    discovery_url,
    is_guid,
    issuer_matches_authority,
    origin,
)

ALLOWED_ALGORITHMS = ["RS256"]
CLOCK_SKEW_SECONDS = 120  # tolerated clock difference with the provider (checklist: <= 5 min)
METADATA_LIFETIME_SECONDS = 24 * 3600  # as long as MSAL caches the same document
# The signing keys are re-read on the same schedule, so a key the provider withdraws stops being
# trusted within a day, not at the next restart.
KEYS_LIFETIME_SECONDS = METADATA_LIFETIME_SECONDS
JWKS_MIN_REFETCH_SECONDS = 10  # an unknown kid may trigger a JWKS fetch at most this often
# After the metadata could not be read, pages that could do without it do not try again before
# this (each try may wait HTTP_TIMEOUT, twice): see Provider.metadata_if_available.
METADATA_RETRY_SECONDS = 30
MAX_TOKEN_CHARS = 64 * 1024  # Entra's largest tokens (many groups) are a few KiB
MAX_KID_CHARS = 256


class ProviderError(Exception):
    """The identity provider could not be reached, or answered something unusable.

    `unreachable`: no answer at all (connection, TLS, timeout). `misconfigured`: the provider
    answered, but what it said means this app's settings are wrong (an unknown tenant, an
    issuer that is not AUTHORITY's), not that the provider is down. `error` and `description`
    carry the provider's own OAuth error, when it sent one.
    """

    def __init__(self, message: str, *, url: str = "", unreachable: bool = False,
                 misconfigured: bool = False, hint: str = "", error: str = "",
                 description: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.url = url
        self.unreachable = unreachable
        self.misconfigured = misconfigured
        self.hint = hint
        self.error = error
        self.description = description


class TokenError(Exception):
    """A token (ID, logout) failed validation; the message says which check, never the token."""


def decode_signed_token(token: str, key: jwt.PyJWK, audiences: str | list[str], *, kind: str,
                        require: list[str], options: dict[str, bool] | None = None
                        ) -> dict[str, Any]:
    """The claims of a provider-signed JWT whose signature (ALLOWED_ALGORITHMS), aud, and exp,
    nbf and iat (within CLOCK_SKEW_SECONDS) hold, with the `require`d claims; TokenError naming
    the failed check otherwise. `kind` names the token in messages; iss is the caller's."""
    try:
        return jwt.decode(token, key.key, algorithms=ALLOWED_ALGORITHMS, audience=audiences,
                          leeway=CLOCK_SKEW_SECONDS,
                          options={"require": require, "verify_iss": False, **(options or {})})
    except jwt.InvalidSignatureError:
        raise TokenError(f"the {kind}'s signature does not verify") from None
    except jwt.ExpiredSignatureError:
        raise TokenError(f"the {kind} has expired (exp)") from None
    except jwt.ImmatureSignatureError:
        raise TokenError(f"the {kind} is dated in the future (iat/nbf)") from None
    except jwt.InvalidAudienceError:
        raise TokenError(f"the {kind} is not meant for this app (aud)") from None
    except jwt.MissingRequiredClaimError as exc:
        raise TokenError(f"the {kind} lacks the {exc.claim} claim") from None
    except (jwt.PyJWTError, ValueError, TypeError) as exc:
        raise TokenError(f"the {kind} is invalid ({exc.__class__.__name__})") from None


class Provider:
    """The configured identity provider's metadata and signing keys, each re-read when older than
    its lifetime (checked on use: no background thread)."""

    def __init__(self, http: requests.Session, authority: str, client_id: str, *,
                 generic_oidc: bool = False, allowed_tenants: frozenset[str] = frozenset(),
                 clock=time.time) -> None:
        self._http = http
        self.authority = authority
        self.client_id = client_id
        self.generic_oidc = generic_oidc
        self.allowed_tenants = frozenset(t.lower() for t in allowed_tenants)
        self._clock = clock
        self._lock = threading.RLock()
        self._metadata: ProviderMetadata | None = None
        self._metadata_fetched_at = 0.0
        self._metadata_retry_at = 0.0  # after a failed read: no try before this
        self._last_failure: ProviderError | None = None
        self._keys: dict[str, jwt.PyJWK] = {}
        self._keys_fetched_at: float | None = None
        self._last_unknown_kid_refetch: float | None = None

    # -- metadata --------------------------------------------------------------------------

    def metadata(self) -> ProviderMetadata:
        """The provider's metadata, re-read once a day. After a failed read no request tries
        again for METADATA_RETRY_SECONDS: they get the same error at once (or the last metadata
        read, if any), so while the provider is down requests do not queue up behind the lock,
        each waiting out the timeouts in turn."""
        if self._fresh_enough():
            # Without the lock: a key-set fetch holding it (a token with an unknown kid) must
            # not stall every sign-in and sign-out that only needs the known metadata.
            return self._metadata  # type: ignore[return-value]
        with self._lock:
            if self._fresh_enough():
                return self._metadata  # type: ignore[return-value]
            if self._last_failure is not None and self._clock() < self._metadata_retry_at:
                # A copy: re-raising the one stored exception would chain every caller's
                # frames onto its traceback (and share it between threads).
                raise copy.copy(self._last_failure)
            try:
                self._metadata = self._fetch_metadata()
            except ProviderError as exc:
                self._metadata_retry_at = self._clock() + METADATA_RETRY_SECONDS
                if self._metadata is not None:
                    return self._metadata  # stale, but the best there is while it is down
                self._last_failure = exc
                raise
            self._metadata_fetched_at, self._last_failure = self._clock(), None
            return self._metadata

    def _fresh_enough(self) -> bool:
        now = self._clock()
        if self._metadata is None:
            return False
        if now < self._metadata_retry_at:
            return True  # a re-read failed a moment ago: keep what we have
        return now - self._metadata_fetched_at <= METADATA_LIFETIME_SECONDS

    def cached_metadata(self) -> ProviderMetadata | None:
        return self._metadata

    def metadata_if_available(self) -> ProviderMetadata | None:
        """The metadata, or None when it cannot be read: for what a page can do without (its
        CSP's sign-out target)."""
        try:
            return self.metadata()
        except ProviderError:
            return None

    def _fetch_metadata(self) -> ProviderMetadata:
        url = discovery_url(self.authority, generic_oidc=self.generic_oidc)
        document = self._get_json(url, "OpenID configuration")
        issuer = document.get("issuer")
        if not isinstance(issuer, str) or not issuer_matches_authority(
                issuer, self.authority, generic_oidc=self.generic_oidc):
            raise ProviderError(
                f"The provider's OpenID configuration names the issuer {issuer!r}, which does not "
                f"belong to the configured authority {self.authority}.", url=url,
                misconfigured=True,
                hint="Check AUTHORITY (or OIDC_AUTHORITY): it must be the issuer's own URL.")
        missing = [k for k in ("authorization_endpoint", "token_endpoint", "jwks_uri")
                   if not isinstance(document.get(k), str)]
        if missing:
            raise ProviderError(f"The provider's OpenID configuration lacks {', '.join(missing)}.",
                                url=url)
        return ProviderMetadata(
            issuer=issuer,
            authorization_endpoint=document["authorization_endpoint"],
            token_endpoint=document["token_endpoint"],
            jwks_uri=document["jwks_uri"],
            end_session_endpoint=document.get("end_session_endpoint") or "",
            iss_parameter_supported=document.get(
                "authorization_response_iss_parameter_supported") is True,
        )

    def _get_json(self, url: str, what: str) -> dict[str, Any]:
        try:
            response = self._http.get(url)  # OutboundSession: never follows a redirect
        except requests.RequestException as exc:
            raise unreachable(url, exc) from None
        if response.status_code >= 500:
            raise ProviderError(f"The identity provider answered {response.status_code} for its "
                                f"{what}.", url=url)
        if response.status_code != 200:
            # The provider is up and refuses this address: AUTHORITY names a tenant or path it
            # does not know (Entra: 400 invalid_tenant, AADSTS90002).
            error, description = _oauth_error(response)
            raise ProviderError(f"The identity provider answered {response.status_code} for its "
                                f"{what}.", url=url, misconfigured=True,
                                hint="Check AUTHORITY: the tenant may not exist.",
                                error=error, description=description)
        try:
            document = response.json()
        except ValueError:
            document = None
        if not isinstance(document, dict):
            raise ProviderError(f"The identity provider's {what} is not a JSON object.", url=url)
        return document

    def expected_issuer(self, claims: dict[str, Any], kind: str = "token") -> str:
        """The issuer a token must carry: the published one, with Entra's template filled from
        the token's `tid`, which must then be one of the allowed tenants (if any are set)."""
        issuer = self.metadata().issuer
        if ENTRA_TENANT_TEMPLATE in issuer:
            tid = claims.get("tid")
            if not isinstance(tid, str) or not is_guid(tid):
                raise TokenError(f"the {kind} has no valid tid for the {{tenantid}} issuer")
            if self.allowed_tenants and tid.lower() not in self.allowed_tenants:
                raise TokenError(f"the {kind} comes from a tenant this app does not allow (tid)")
            issuer = issuer.replace(ENTRA_TENANT_TEMPLATE, tid)
        return issuer

    # -- signing keys ------------------------------------------------------------------------

    def signing_key(self, header: dict[str, Any], kind: str = "token") -> jwt.PyJWK:
        """The JWKS key the token header names. Keys only ever come from jwks_uri, never from the
        token (jku, x5u, jwk and x5c headers are ignored). A token without `kid` is accepted only
        while the provider publishes exactly one signing key (OpenID RP certification's
        rp-id_token-kid-absent-single-jwks); with several, guessing among them invites confusion,
        so it is refused."""
        kid = header.get("kid")
        if kid is not None and (not isinstance(kid, str) or not kid or len(kid) > MAX_KID_CHARS):
            raise TokenError(f"the {kind} names no usable signing key (kid)")
        with self._lock:
            if self._keys_stale():
                self._refresh_keys()
            if kid is None:
                if len(self._keys) != 1:
                    raise TokenError(f"the {kind} does not name its signing key (kid) and the "
                                     "provider publishes several")
                return next(iter(self._keys.values()))
            key = self._keys.get(kid)
            if key is None and self._may_refetch():
                # The provider may have rotated its keys: fetch once more, but not again for a
                # while, so tokens with made-up kids cannot make us hammer the JWKS endpoint.
                self._last_unknown_kid_refetch = self._clock()
                self._refresh_keys()
                key = self._keys.get(kid)
        if key is None:
            raise TokenError(f"the {kind} is signed with a key the provider does not publish")
        return key

    def _keys_stale(self) -> bool:
        fetched_at = self._keys_fetched_at
        return fetched_at is None or self._clock() - fetched_at > KEYS_LIFETIME_SECONDS

    def _may_refetch(self) -> bool:
        last = self._last_unknown_kid_refetch
        return last is None or self._clock() - last >= JWKS_MIN_REFETCH_SECONDS

    def _refresh_keys(self) -> None:
        url = self.metadata().jwks_uri
        document = self._get_json(url, "signing keys (JWKS)")
        try:
            key_set = jwt.PyJWKSet.from_dict(document)
        except jwt.PyJWTError as exc:
            raise ProviderError(f"The provider's signing keys are unusable: {exc}",
                                url=url) from None
        # Replaced, not merged: a key the provider no longer publishes is no longer trusted.
        # Keys without a kid can only serve tokens without one (and only as the sole key).
        self._keys = {k.key_id or "": k for k in key_set.keys
                      if k.public_key_use in ("sig", None) and k.key_type == "RSA"}
        self._keys_fetched_at = self._clock()

    # -- the one JWT check: ID tokens, logout tokens (and access tokens later) ---------------

    def verify_jwt(self, token: str, *, kind: str, require: list[str],
                   audiences: list[str] | None = None, accept_v1_issuer: bool = False,
                   options: dict[str, bool] | None = None) -> dict[str, Any]:
        """The claims of a JWT this provider signed, or TokenError naming the failed check (never
        quoting the token): RS256 only, a key from the provider's JWKS, `aud` one of `audiences`
        (default: this client, and then `azp` this client when present) and no other, `iss` the
        provider's issuer (Entra's {tenantid} filled from `tid`, which must then be an allowed
        tenant; with `accept_v1_issuer`, also Entra's v1 form for that tenant, as v1 access
        tokens carry), `exp`, `nbf` and `iat` within CLOCK_SKEW_SECONDS, `sub` non-empty when
        present, and the `require`d claims present. ID, logout and access tokens all come
        through here."""
        if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
            raise TokenError(f"the {kind} is not a well-formed JWT")
        try:
            header = jwt.get_unverified_header(token)
        except (jwt.PyJWTError, ValueError, TypeError):
            raise TokenError(f"the {kind} is not a well-formed JWT") from None
        algorithm = header.get("alg")
        if algorithm not in ALLOWED_ALGORITHMS:
            raise TokenError(f"the {kind}'s signing algorithm {str(algorithm)[:20]!r} is not "
                             f"allowed (only {', '.join(ALLOWED_ALGORITHMS)})")
        key = self.signing_key(header, kind)
        accepted = audiences or [self.client_id]
        claims = decode_signed_token(token, key, accepted, kind=kind, require=require,
                                     options=options)
        audience = claims["aud"]
        if isinstance(audience, list) and not set(audience) <= set(accepted):
            raise TokenError(f"the {kind} is also meant for other audiences (aud)")
        if audiences is None and "azp" in claims and claims["azp"] != self.client_id:
            raise TokenError(f"the {kind} was issued to another party (azp)")
        issuer = self.expected_issuer(claims, kind)
        issuers = {issuer, v1_issuer(issuer)} if accept_v1_issuer else {issuer}
        if claims.get("iss") not in issuers:
            raise TokenError(f"the {kind} comes from another issuer (iss)")
        if "sub" in claims and (not isinstance(claims["sub"], str) or not claims["sub"]):
            raise TokenError(f"the {kind} has an empty subject (sub)")
        return claims

    def verify_id_token(self, id_token: str, *, nonce: str | None = None,
                        same_as: dict[str, Any] | None = None) -> dict[str, Any]:
        """The claims of a valid ID token (OIDC Core 3.1.3.7), or TokenError.

        `nonce`: the value sent in the authorization request (sign-in).
        `same_as`: the claims of the session's ID token (refresh; OIDC Core 12.2).
        """
        claims = self.verify_jwt(id_token, kind="ID token",
                                 require=["iss", "sub", "aud", "exp", "iat"])
        if nonce is not None and claims.get("nonce") != nonce:
            raise TokenError("the ID token's nonce is not the one this sign-in sent")
        if same_as is not None and (claims["iss"] != same_as.get("iss")
                                    or claims["sub"] != same_as.get("sub")):
            raise TokenError("the refreshed ID token is for another issuer or user (iss/sub)")
        return claims


def unreachable(url: str, exc: Exception) -> ProviderError:
    """A ProviderError for a network failure, with the cause named but no request details."""
    if isinstance(exc, requests.exceptions.SSLError):
        cause, hint = ("its TLS certificate is not trusted", "Set CA_BUNDLE to a file that "
                       "holds the provider's CA certificate.")
    elif isinstance(exc, requests.Timeout):
        cause, hint = "it did not answer in time", ""
    else:
        cause, hint = "the connection failed", "Check that AUTHORITY is right and reachable."
    return ProviderError(f"Could not reach the identity provider at {origin(url)}: {cause}.",
                         url=url, unreachable=True, hint=hint)


def _oauth_error(response: requests.Response) -> tuple[str, str]:
    """The `error` and `error_description` of an OAuth-style error body, or empty strings."""
    try:
        body = response.json()
    except ValueError:
        return "", ""
    if not isinstance(body, dict):
        return "", ""
    error, description = body.get("error"), body.get("error_description")
    return (error if isinstance(error, str) else "",
            description if isinstance(description, str) else "")


def v1_issuer(v2_issuer: str) -> str:
    """Entra's v1 issuer for the tenant of a v2 one (`https://host/{tid}/v2.0`): v1 access
    tokens (an API whose requestedAccessTokenVersion is 1) carry it."""
    tenant = urlsplit(v2_issuer).path.strip("/").split("/")[0]
    return f"https://sts.windows.net/{tenant}/"


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
        if "authority" not in str(exc).lower() and "openid" not in str(exc).lower():
            raise
        raise ProviderError("The identity provider's OpenID configuration could not be read.",
                            url=url, misconfigured=True,
                            hint="Check the authority: the tenant may not exist.") from None
