"""The provider's OpenID metadata as this relying party reads it, apart from any I/O: where the
discovery document is, whether its issuer belongs to the configured authority (Discovery 4.3,
with Entra's documented exceptions), and the endpoints kept from it."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from msal.authority import WELL_KNOWN_AUTHORITY_HOSTS

ENTRA_TENANT_TEMPLATE = "{tenantid}"
ENTRA_MULTI_TENANT = frozenset({"common", "organizations"})


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
        return tuple(sorted({origin(self.authorization_endpoint),
                             origin(self.end_session_endpoint)} - {""}))


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
    return is_guid(published_tenant) and not is_guid(tenant) and tenant.lower() not in (
        ENTRA_MULTI_TENANT)


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""


def is_guid(value: str) -> bool:
    parts = value.split("-")
    return [len(p) for p in parts] == [8, 4, 4, 4, 12] and all(
        c in "0123456789abcdefABCDEF" for c in "".join(parts))
