"""Which redirect URIs an application owns, and of which platform: Graph's `web.redirectUris`
(confidential: its codes are redeemed with the app's credential) and `publicClient.redirectUris`
(mobile and desktop: public, its codes are redeemed without one), plus `isFallbackPublicClient`
(Graph's name for "Allow public client flows": the flows that have no redirect URI, device code
and password, may then run without a credential).

Matching is exact (case-sensitive), except for loopback URIs (`localhost`, `127.0.0.1`), whose
port is ignored, as Entra does (reply-url.md, "Localhost exceptions", after RFC 8252 §7.3 and
§8.3): a registered `http://localhost` accepts `http://localhost:53117` — where MSAL's
`acquire_token_interactive` listens — but not `http://localhost:53117/other`, nor
`https://localhost`. When a web and a public URI both match (they differ only by port), Entra
"picks one arbitrarily"; the emulator prefers an exact match, then the web one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from entra_emulator.directory import Application

Platform = Literal["web", "public"]
LOOPBACK_HOSTS = ("localhost", "127.0.0.1")


def read_public_client(reader: Any, entry: str, obj: Mapping[str, Any]) -> dict[str, Any]:
    """`publicClient.redirectUris` and `isFallbackPublicClient` of a Graph application, as the
    Application fields `public_client_redirect_uris` and `is_fallback_public_client`."""
    public = obj.get("publicClient") or {}
    if not isinstance(public, dict):
        raise reader.error(entry, "publicClient", "must be an object with redirectUris")
    uris = public.get("redirectUris", [])
    if not isinstance(uris, list):
        raise reader.error(entry, "publicClient.redirectUris", "must be an array of URIs")
    for uri in uris:
        if not _is_public_redirect_uri(uri):
            raise reader.error(entry, "publicClient.redirectUris",
                               f"{uri!r} is not an absolute URI without a fragment")
    fallback = obj.get("isFallbackPublicClient")
    if fallback is not None and not isinstance(fallback, bool):
        raise reader.error(entry, "isFallbackPublicClient", "must be true, false or null")
    return {"public_client_redirect_uris": tuple(uris),
            "is_fallback_public_client": bool(fallback)}


def is_web_redirect_uri(uri: Any) -> bool:
    if not isinstance(uri, str):
        return False
    parts = urlsplit(uri)
    return parts.scheme in ("http", "https") and bool(parts.netloc) and not parts.fragment \
        and "#" not in uri


def _is_public_redirect_uri(uri: Any) -> bool:
    # Native apps also register custom schemes (msal{appId}://auth) and Entra's
    # https://login.microsoftonline.com/common/oauth2/nativeclient.
    if not isinstance(uri, str) or "#" in uri:
        return False
    parts = urlsplit(uri)
    return bool(parts.scheme) and bool(parts.netloc or parts.path)


def is_loopback(uri: str) -> bool:
    parts = urlsplit(uri)
    return parts.scheme in ("http", "https") and (parts.hostname or "") in LOOPBACK_HOSTS


def _without_port(uri: str) -> tuple[str, str, str, str]:
    parts = urlsplit(uri)
    return parts.scheme.lower(), (parts.hostname or "").lower(), parts.path, parts.query


def uri_matches(registered: str, requested: str) -> bool:
    if registered == requested:
        return True
    if not (is_loopback(registered) and is_loopback(requested)):
        return False
    try:
        port = urlsplit(requested).port
    except ValueError:   # a malformed port is no match
        return False
    return port != 0 and _without_port(registered) == _without_port(requested)


def redirect_platform(app: Application, requested: str) -> Platform | None:
    """The platform whose registered URI `requested` matches, or None when none does."""
    for platform, uris in (("web", app.redirect_uris),
                           ("public", app.public_client_redirect_uris)):
        if requested in uris:
            return platform   # type: ignore[return-value]
    for platform, uris in (("web", app.redirect_uris),
                           ("public", app.public_client_redirect_uris)):
        if any(uri_matches(uri, requested) for uri in uris):
            return platform   # type: ignore[return-value]
    return None


def registered_redirect_uris(app: Application) -> tuple[str, ...]:
    return (*app.redirect_uris, *app.public_client_redirect_uris)
