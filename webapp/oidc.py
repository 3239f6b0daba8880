"""OpenID Connect rules for this relying party, apart from Flask: the provider's metadata and the
validation of its ID tokens.

Written here rather than left to MSAL because MSAL (>= 1.38) no longer validates ID tokens: it only
decodes them and checks the nonce. The checks follow OpenID Connect Core 3.1.3.7 (and 12.2 for ID
tokens that come with a refresh) and Discovery 4.3; PyJWT does the signature and time arithmetic.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import jwt
import requests
from msal.authority import WELL_KNOWN_AUTHORITY_HOSTS

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
ENTRA_TENANT_TEMPLATE = "{tenantid}"
ENTRA_MULTI_TENANT = frozenset({"common", "organizations"})


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


class IdTokenError(Exception):
    """An ID token failed validation; the message says which check, never the token."""


def decode_signed_token(token: str, key: jwt.PyJWK, client_id: str, *, kind: str,
                        require: list[str], options: dict[str, bool] | None = None
                        ) -> dict[str, Any]:
    """The claims of a provider-signed JWT whose signature (ALLOWED_ALGORITHMS), aud, and exp,
    nbf and iat (within CLOCK_SKEW_SECONDS) hold, with the `require`d claims; IdTokenError naming
    the failed check otherwise. `kind` names the token in messages; iss is the caller's."""
    try:
        return jwt.decode(token, key.key, algorithms=ALLOWED_ALGORITHMS, audience=client_id,
                          leeway=CLOCK_SKEW_SECONDS,
                          options={"require": require, "verify_iss": False, **(options or {})})
    except jwt.InvalidSignatureError:
        raise IdTokenError(f"the {kind}'s signature does not verify") from None
    except jwt.ExpiredSignatureError:
        raise IdTokenError(f"the {kind} has expired (exp)") from None
    except jwt.ImmatureSignatureError:
        raise IdTokenError(f"the {kind} is dated in the future (iat/nbf)") from None
    except jwt.InvalidAudienceError:
        raise IdTokenError(f"the {kind} is not meant for this app (aud)") from None
    except jwt.MissingRequiredClaimError as exc:
        raise IdTokenError(f"the {kind} lacks the {exc.claim} claim") from None
    except (jwt.PyJWTError, ValueError, TypeError) as exc:
        raise IdTokenError(f"the {kind} is invalid ({exc.__class__.__name__})") from None


@dataclass(frozen=True)
class ProviderMetadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    end_session_endpoint: str
    iss_parameter_supported: bool

    @property
    def browser_origins(self) -> tuple[str, ...]:
        """Origins the browser is sent to (for the CSP form-action list)."""
        return tuple(sorted({_origin(self.authorization_endpoint),
                             _origin(self.end_session_endpoint)} - {""}))


def discovery_url(authority: str, *, generic_oidc: bool) -> str:
    """Where MSAL itself reads the document: Entra's v2.0 path, or the OIDC standard one."""
    if generic_oidc:
        return f"{authority}/.well-known/openid-configuration"
    return f"{authority}/v2.0/.well-known/openid-configuration"


def issuer_matches_authority(issuer: str, authority: str, *, generic_oidc: bool) -> bool:
    """Discovery 4.3: the document's issuer must be the configured one.

    For a generic OpenID provider the configured URL is the issuer. For an Entra authority
    `https://host/{tenant}` the issuer is `https://host/{tenant}/v2.0`, with two documented
    exceptions: `common`/`organizations` publish the literal `{tenantid}` template (then checked
    against each token's `tid`), and a tenant given by domain name (or `consumers`) is answered
    with the tenant's GUID.
    """
    if generic_oidc:
        return issuer.rstrip("/") == authority.rstrip("/")
    configured, published = urlsplit(authority), urlsplit(issuer)
    same_host = configured.netloc == published.netloc or (
        configured.hostname in WELL_KNOWN_AUTHORITY_HOSTS
        and published.hostname in WELL_KNOWN_AUTHORITY_HOSTS)
    if configured.scheme != published.scheme or not same_host:
        return False
    tenant = configured.path.strip("/").split("/")[0]
    segments = published.path.strip("/").split("/")
    if len(segments) != 2 or segments[1] != "v2.0":
        return False
    published_tenant = segments[0]
    if published_tenant == tenant:
        return True
    if published_tenant == ENTRA_TENANT_TEMPLATE:
        return tenant.lower() in ENTRA_MULTI_TENANT
    return _is_guid(published_tenant) and not _is_guid(tenant) and tenant.lower() not in (
        ENTRA_MULTI_TENANT)


class Provider:
    """The configured identity provider's metadata and signing keys, each re-read when older than
    its lifetime (checked on use: no background thread)."""

    def __init__(self, http: requests.Session, authority: str, client_id: str, *,
                 generic_oidc: bool = False, clock=time.time) -> None:
        self._http = http
        self.authority = authority
        self.client_id = client_id
        self.generic_oidc = generic_oidc
        self._clock = clock
        self._lock = threading.RLock()
        self._metadata: ProviderMetadata | None = None
        self._metadata_fetched_at = 0.0
        self._metadata_retry_at = 0.0  # metadata_if_available: no try before this
        self._keys: dict[str, jwt.PyJWK] = {}
        self._keys_fetched_at: float | None = None
        self._last_unknown_kid_refetch: float | None = None

    # -- metadata --------------------------------------------------------------------------

    def metadata(self) -> ProviderMetadata:
        if self._metadata is not None and not self._metadata_stale():
            # Without the lock: a key-set fetch holding it (a token with an unknown kid) must
            # not stall every sign-in and sign-out that only needs the known metadata.
            return self._metadata
        with self._lock:
            if self._metadata is None or self._metadata_stale():
                self._metadata = self._fetch_metadata()
                self._metadata_fetched_at = self._clock()
            return self._metadata

    def _metadata_stale(self) -> bool:
        return self._clock() - self._metadata_fetched_at > METADATA_LIFETIME_SECONDS

    def cached_metadata(self) -> ProviderMetadata | None:
        return self._metadata

    def metadata_if_available(self) -> ProviderMetadata | None:
        """The metadata, or None when it cannot be read: for what a page can do without (its
        CSP's sign-out target). After a failure this does not try again for a while, so that
        while the provider is down pages that do not need it are not held up by its timeouts."""
        if self._metadata is None and self._clock() < self._metadata_retry_at:
            return None
        try:
            return self.metadata()
        except ProviderError:
            self._metadata_retry_at = self._clock() + METADATA_RETRY_SECONDS
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

    def expected_issuer(self, claims: dict[str, Any]) -> str:
        """The issuer a token must carry: the published one, with Entra's template filled."""
        issuer = self.metadata().issuer
        if ENTRA_TENANT_TEMPLATE in issuer:
            tid = claims.get("tid")
            if not isinstance(tid, str) or not _is_guid(tid):
                raise IdTokenError("the ID token has no valid tid for the {tenantid} issuer")
            issuer = issuer.replace(ENTRA_TENANT_TEMPLATE, tid)
        return issuer

    # -- signing keys ------------------------------------------------------------------------

    def signing_key(self, header: dict[str, Any]) -> jwt.PyJWK:
        """The JWKS key the token header names. Keys only ever come from jwks_uri, never from the
        token (jku, x5u, jwk and x5c headers are ignored). A token without `kid` is refused:
        Entra always sends one, and guessing among keys invites confusion."""
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise IdTokenError("the ID token does not name its signing key (kid)")
        with self._lock:
            if self._keys_stale():
                self._refresh_keys()
            key = self._keys.get(kid)
            if key is None and self._may_refetch():
                # The provider may have rotated its keys: fetch once more, but not again for a
                # while, so tokens with made-up kids cannot make us hammer the JWKS endpoint.
                self._last_unknown_kid_refetch = self._clock()
                self._refresh_keys()
                key = self._keys.get(kid)
        if key is None:
            raise IdTokenError("the ID token is signed with a key the provider does not publish")
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
        self._keys = {k.key_id: k for k in key_set.keys
                      if k.key_id and k.public_key_use in ("sig", None)}
        self._keys_fetched_at = self._clock()

    # -- ID token validation -----------------------------------------------------------------

    def validate_id_token(self, id_token: str, *, nonce: str | None = None,
                          same_as: dict[str, Any] | None = None) -> dict[str, Any]:
        """Return the claims of a valid ID token, or raise IdTokenError naming the failed check.

        `nonce`: the value sent in the authorization request (sign-in).
        `same_as`: the claims of the session's ID token (refresh; OIDC Core 12.2).
        """
        try:
            header = jwt.get_unverified_header(id_token)
        except jwt.PyJWTError:
            raise IdTokenError("the ID token is not a well-formed JWT") from None
        algorithm = header.get("alg")
        if algorithm not in ALLOWED_ALGORITHMS:
            raise IdTokenError(f"the ID token's signing algorithm {algorithm!r} is not allowed "
                               f"(only {', '.join(ALLOWED_ALGORITHMS)})")
        key = self.signing_key(header)
        claims = decode_signed_token(id_token, key, self.client_id, kind="ID token",
                                     require=["iss", "sub", "aud", "exp", "iat"])
        self._check_claims(claims, nonce=nonce, same_as=same_as)
        return claims

    def _check_claims(self, claims: dict[str, Any], *, nonce: str | None,
                      same_as: dict[str, Any] | None) -> None:
        audience = claims["aud"]
        if isinstance(audience, list) and set(audience) != {self.client_id}:
            raise IdTokenError("the ID token is also meant for other audiences (aud)")
        if "azp" in claims and claims["azp"] != self.client_id:
            raise IdTokenError("the ID token was issued to another party (azp)")
        if claims["iss"] != self.expected_issuer(claims):
            raise IdTokenError("the ID token comes from another issuer (iss)")
        if not isinstance(claims["sub"], str) or not claims["sub"]:
            raise IdTokenError("the ID token has an empty subject (sub)")
        if nonce is not None and claims.get("nonce") != nonce:
            raise IdTokenError("the ID token's nonce is not the one this sign-in sent")
        if same_as is not None and (claims["iss"] != same_as.get("iss")
                                    or claims["sub"] != same_as.get("sub")):
            raise IdTokenError("the refreshed ID token is for another issuer or user (iss/sub)")


def unreachable(url: str, exc: Exception) -> ProviderError:
    """A ProviderError for a network failure, with the cause named but no request details."""
    if isinstance(exc, requests.exceptions.SSLError):
        cause, hint = ("its TLS certificate is not trusted", "Set CA_BUNDLE to a file that "
                       "holds the provider's CA certificate.")
    elif isinstance(exc, requests.Timeout):
        cause, hint = "it did not answer in time", ""
    else:
        cause, hint = "the connection failed", "Check that AUTHORITY is right and reachable."
    return ProviderError(f"Could not reach the identity provider at {_origin(url)}: {cause}.",
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


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""


def _is_guid(value: str) -> bool:
    parts = value.split("-")
    return [len(p) for p in parts] == [8, 4, 4, 4, 12] and all(
        c in "0123456789abcdefABCDEF" for c in "".join(parts))
