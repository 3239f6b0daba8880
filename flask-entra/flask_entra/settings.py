"""The extension's options: keyword arguments of Auth(...), else `ENTRA_<NAME>` in app.config,
else the default; checked once, at init_app, with every problem named in one ConfigurationError.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

# MSAL adds these to every sign-in itself and refuses them in its `scopes` argument.
RESERVED_SCOPES = frozenset({"openid", "profile", "offline_access"})


def without_reserved(scopes: Iterable[str] | None) -> list[str]:
    """MSAL adds openid, profile and offline_access itself and refuses them as scopes."""
    return [s for s in dict.fromkeys(scopes or ()) if s and s not in RESERVED_SCOPES]
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
B2C_AUTHORITY = "https://{tenant}.b2clogin.com/{tenant}.onmicrosoft.com/{user_flow}"


class ConfigurationError(ValueError):
    """The extension's options are wrong; the message names each one to fix."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("flask_entra is not configured: " + "; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Settings:
    client_id: str
    client_credential: str | dict[str, str] | None
    authority: str  # Entra (or B2C) authority, or "" with oidc_authority
    oidc_authority: str
    redirect_uri: str
    prompt: str | None = None
    scopes: tuple[str, ...] = ()  # asked for at every sign-in, besides a view's own
    post_logout_view: Callable[..., Any] | None = None
    edit_profile_authority: str = ""
    response_mode: str = "form_post"
    session_lifetime: int = 8 * 3600
    session_idle_timeout: int = 30 * 60
    allowed_tenants: frozenset[str] = field(default_factory=frozenset)
    backchannel_logout: bool = False
    ca_bundle: str = ""
    http_timeout: float = 10.0
    max_pending_sign_ins: int = 3
    blueprint_name: str = "identity"
    api_audiences: tuple[str, ...] = ()  # token_required: the API's v2 and v1 `aud` forms
    graph_endpoint: str = "https://graph.microsoft.com/v1.0"  # groups past the overage

    @property
    def authority_url(self) -> str:
        return self.oidc_authority or self.authority

    @property
    def redirect_path(self) -> str:
        return urlsplit(self.redirect_uri).path

    @property
    def uses_https(self) -> bool:
        return self.redirect_uri.startswith("https://")


OPTION_DEFAULTS: dict[str, Any] = {
    "client_id": None, "client_credential": None, "authority": None, "oidc_authority": None,
    "redirect_uri": None, "b2c_tenant_name": None, "b2c_signup_signin_user_flow": None,
    "b2c_edit_profile_user_flow": None, "b2c_reset_password_user_flow": None, "prompt": None,
    "post_logout_view": None, "scopes": (), "response_mode": "form_post",
    "session_lifetime": 8 * 3600,
    "session_idle_timeout": 30 * 60, "allowed_tenants": (), "backchannel_logout": False,
    "ca_bundle": None, "http_timeout": 10.0, "max_pending_sign_ins": 3,
    "blueprint_name": "identity", "api_audiences": None,
    "graph_endpoint": "https://graph.microsoft.com/v1.0",
}


def load_settings(options: Mapping[str, Any], config: Mapping[str, Any]) -> Settings:
    """Settings from Auth's keyword arguments (`options`), else app.config's ENTRA_<NAME>."""
    unknown = set(options) - set(OPTION_DEFAULTS)
    if unknown:
        raise TypeError(f"Auth() got unexpected options: {', '.join(sorted(unknown))}")

    def get(name: str) -> Any:
        value = options.get(name)
        if value is None:
            value = config.get(f"ENTRA_{name.upper()}")
        return OPTION_DEFAULTS[name] if value is None else value

    problems: list[str] = []
    client_id = str(get("client_id") or "").strip()
    if not client_id:
        problems.append("client_id: set it to the Application (client) ID of your app "
                        "registration")
    authority, edit_profile = _authority(get, problems)
    oidc_authority = str(get("oidc_authority") or "").rstrip("/")
    if authority and oidc_authority:
        problems.append("authority: set authority or oidc_authority, not both")
    if not authority and not oidc_authority:
        problems.append("authority: set it to https://login.microsoftonline.com/<tenant> (or "
                        "oidc_authority, or the b2c_tenant_name and b2c_signup_signin_user_flow "
                        "pair)")
    for name, value in (("authority", authority), ("oidc_authority", oidc_authority)):
        parts = urlsplit(value)
        if value and (parts.scheme != "https" or not parts.hostname or not parts.path.strip("/")
                      or parts.query or parts.fragment):
            problems.append(f"{name}: must be an https URL with the tenant in its path, e.g. "
                            f"https://login.microsoftonline.com/<tenant> (got {value!r})")
    credential = get("client_credential")
    redirect_uri = str(get("redirect_uri") or "")
    if not credential and redirect_uri:  # an API alone needs one only for on-behalf-of
        problems.append("client_credential: set it to the client secret's Value, or a "
                        "certificate as MSAL takes it ({'private_key': ..., "
                        "'public_certificate': ...})")
    elif credential and not isinstance(credential, str | dict):
        problems.append("client_credential: a secret (str) or MSAL's certificate dict")
    if redirect_uri:  # none: a web API alone, without sign-in routes (api.py)
        _check_redirect_uri(redirect_uri, problems)
    response_mode = get("response_mode")
    if response_mode not in ("form_post", "query"):
        problems.append(f"response_mode: form_post or query (got {response_mode!r})")
    ca_bundle = str(get("ca_bundle") or "")
    if ca_bundle and not Path(ca_bundle).is_file():
        problems.append(f"ca_bundle: no such file: {ca_bundle}")
    numbers = {name: _number(name, get(name), low, high, problems) for name, low, high in (
        ("session_lifetime", 60, 31 * 86400), ("session_idle_timeout", 120, 31 * 86400),
        ("http_timeout", 1, 120), ("max_pending_sign_ins", 1, 10))}
    tenants = get("allowed_tenants")
    if isinstance(tenants, str):
        tenants = tenants.replace(",", " ").split()
    scopes = get("scopes")
    if isinstance(scopes, str):
        scopes = scopes.split()
    scopes = tuple(without_reserved(scopes))
    audiences = get("api_audiences") or [client_id, f"api://{client_id}"]
    if isinstance(audiences, str):
        audiences = audiences.split()
    graph_endpoint = str(get("graph_endpoint")).rstrip("/")
    if urlsplit(graph_endpoint).scheme != "https":
        problems.append(f"graph_endpoint: an https URL (got {graph_endpoint!r})")
    post_logout_view = get("post_logout_view")
    if post_logout_view is not None and not callable(post_logout_view):
        problems.append("post_logout_view: a view function")
    if problems:
        raise ConfigurationError(problems)
    return Settings(
        client_id=client_id, client_credential=credential, authority=authority,
        oidc_authority=oidc_authority, redirect_uri=redirect_uri, prompt=get("prompt"),
        scopes=scopes,
        post_logout_view=post_logout_view, edit_profile_authority=edit_profile,
        response_mode=response_mode, session_lifetime=int(numbers["session_lifetime"]),
        session_idle_timeout=int(numbers["session_idle_timeout"]),
        allowed_tenants=frozenset(str(t).lower() for t in tenants),
        backchannel_logout=bool(get("backchannel_logout")), ca_bundle=ca_bundle,
        http_timeout=float(numbers["http_timeout"]),
        max_pending_sign_ins=int(numbers["max_pending_sign_ins"]),
        blueprint_name=str(get("blueprint_name")), api_audiences=tuple(audiences),
        graph_endpoint=graph_endpoint)


def _authority(get: Callable[[str], Any], problems: list[str]) -> tuple[str, str]:
    """The sign-in authority and the B2C edit-profile one, built as identity builds them."""
    tenant, sign_in_flow = get("b2c_tenant_name"), get("b2c_signup_signin_user_flow")
    if not (tenant and sign_in_flow):
        return str(get("authority") or "").rstrip("/"), ""
    if get("authority"):
        problems.append("authority: set authority or the b2c_* options, not both")
    edit_flow = get("b2c_edit_profile_user_flow")
    edit = B2C_AUTHORITY.format(tenant=tenant, user_flow=edit_flow) if edit_flow else ""
    return B2C_AUTHORITY.format(tenant=tenant, user_flow=sign_in_flow), edit


def _check_redirect_uri(redirect_uri: str, problems: list[str]) -> None:
    parts = urlsplit(redirect_uri)
    if parts.scheme not in ("http", "https") or not parts.hostname or not parts.path.strip("/"):
        problems.append("redirect_uri: an absolute URL with a path, e.g. "
                        f"http://localhost:5000/getAToken (got {redirect_uri!r})")
    elif parts.scheme == "http" and not _is_loopback(parts.hostname):
        problems.append("redirect_uri: must be https (Entra accepts http only for localhost)")
    elif parts.query or parts.fragment:
        problems.append("redirect_uri: must not contain a query or fragment")
    elif parts.path.rstrip("/").rsplit("/", 1)[-1] in ("login", "logout", "backchannel-logout"):
        problems.append(f"redirect_uri: its path {parts.path} is one of the sign-in's own "
                        "routes; use e.g. /getAToken")


def _number(name: str, value: Any, low: float, high: float, problems: list[str]) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not low <= number <= high:
        problems.append(f"{name}: a number from {low:g} to {high:g} (got {value!r})")
        return float(OPTION_DEFAULTS[name])
    return number


def _is_loopback(host: str) -> bool:
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def form_post_possible(settings: Settings) -> bool:
    """form_post needs a SameSite=None cookie, which browsers keep only when Secure, which they
    accept only from https or localhost."""
    host = urlsplit(settings.redirect_uri).hostname or ""
    return settings.uses_https or _is_loopback(host)
