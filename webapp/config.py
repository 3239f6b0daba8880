"""Settings: read once from the environment (and `.env`) and checked.

Every problem is collected, not raised, so the app can start and show one page that names every
setting to fix (and log the same at start) instead of a stack trace.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from dotenv import dotenv_values, find_dotenv

log = logging.getLogger(__name__)

# MSAL adds these to every sign-in itself and refuses them in the `scopes` argument.
RESERVED_SCOPES = frozenset({"openid", "profile", "offline_access"})
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
APP_PATHS = frozenset({"", "/login", "/logout", "/graph", "/claims", "/healthz", "/todo",
                       "/admin", "/backchannel-logout"})

DEFAULTS = {
    "REDIRECT_URI": "http://localhost:5000/getAToken",
    "SCOPE": "User.Read",
    "ENDPOINT": "https://graph.microsoft.com/v1.0/me",
    "SESSION_TYPE": "filesystem",
    "SESSION_FILE_DIR": ".flask_session",
    "RESPONSE_MODE": "form_post",
    "TRUSTED_PROXY_HOPS": "0",
    "SESSION_LIFETIME": "28800",
    "SESSION_IDLE_TIMEOUT": "1800",
    "HTTP_TIMEOUT": "10",
    "GRAPH_RETRY_MAX_WAIT": "5",
}


@dataclass(frozen=True)
class Problem:
    """One setting that must be fixed, named the way the user sets it."""

    key: str
    message: str


@dataclass(frozen=True)
class Settings:
    client_id: str = ""
    client_secret: str = ""
    client_certificate_pem: str = ""
    client_private_key_pem: str = ""
    client_private_key_passphrase: str = ""
    authority: str = ""  # Entra authority, e.g. https://login.microsoftonline.com/<tenant>
    oidc_authority: str = ""  # or a generic OpenID provider's issuer URL
    redirect_uri: str = DEFAULTS["REDIRECT_URI"]
    scopes: tuple[str, ...] = ("User.Read",)
    graph_endpoint: str = DEFAULTS["ENDPOINT"]
    secret_key: str = ""
    secret_key_generated: bool = False
    session_type: str = "filesystem"
    session_file_dir: str = DEFAULTS["SESSION_FILE_DIR"]
    redis_url: str = ""
    ca_bundle: str = ""
    response_mode: str = "form_post"
    trusted_proxy_hops: int = 0
    session_lifetime: int = 28800
    session_idle_timeout: int = 1800
    http_timeout: float = 10.0
    graph_retry_max_wait: float = 5.0
    backchannel_logout: bool = False
    todo_api_url: str = ""  # the To-do API's base URL; "" hides the To-do page
    todo_api_scopes: tuple[str, ...] = ()  # e.g. api://<its app id>/ToDoList.ReadWrite
    allowed_tenants: tuple[str, ...] = ()
    problems: tuple[Problem, ...] = field(default_factory=tuple)

    @property
    def client_credential(self) -> str | dict:
        """The credential in the form MSAL takes: the secret, or MSAL's certificate dict."""
        if self.client_certificate_pem:
            credential = {
                "private_key": self.client_private_key_pem,
                "public_certificate": self.client_certificate_pem,
            }
            if self.client_private_key_passphrase:
                credential["passphrase"] = self.client_private_key_passphrase
            return credential
        return self.client_secret


# Trust settings in .env win over the shell's: machines that set REQUESTS_CA_BUNDLE or
# CURL_CA_BUNDLE for everything would otherwise override the emulator's bundle written to .env.
DOTENV_WINS = ("CA_BUNDLE", "REQUESTS_CA_BUNDLE")


def read_environment() -> dict[str, str]:
    """`.env` (found from the working directory) under the real environment, except for the CA
    settings, where .env wins; os.environ is left untouched."""
    dotenv = {k: v for k, v in dotenv_values(find_dotenv(usecwd=True)).items() if v is not None}
    values = {**dotenv, **os.environ}
    values.update({k: dotenv[k] for k in DOTENV_WINS if dotenv.get(k)})
    return values


def is_placeholder(value: str) -> bool:
    """A value still as .env.sample shows it, e.g. `<Enter_your_client_id>`."""
    return "<" in value and ">" in value


def load_settings(source: Mapping[str, object]) -> Settings:
    """Build Settings from a mapping of the documented keys (see .env.sample)."""
    raw = {key: str(value).strip() for key, value in source.items() if value is not None}
    problems: list[Problem] = []
    for key, value in list(raw.items()):
        if is_placeholder(value):
            # Named as unset, not silently replaced by a default (or by the emulator).
            problems.append(Problem(key, f"Still the placeholder {value!r} from .env.sample: "
                                    "set it to your own value."))
            del raw[key]

    def get(key: str) -> str:
        return raw.get(key) or DEFAULTS.get(key, "")

    values: dict[str, object] = {}

    values["client_id"] = get("CLIENT_ID")
    if not values["client_id"] and "CLIENT_ID" not in {p.key for p in problems}:
        problems.append(Problem("CLIENT_ID", "Set it to the Application (client) ID of your app "
                                "registration."))

    values.update(_authority(get("AUTHORITY"), get("OIDC_AUTHORITY"), problems))
    values.update(_credential(raw, problems))
    values["redirect_uri"] = _redirect_uri(get("REDIRECT_URI"), problems)

    scopes = tuple(s for s in get("SCOPE").split() if s not in RESERVED_SCOPES)
    if len(scopes) != len(get("SCOPE").split()):
        log.warning("SCOPE: openid, profile and offline_access are always requested; ignoring "
                    "them in SCOPE.")
    values["scopes"] = scopes

    endpoint = get("ENDPOINT")
    if not _is_https_url(endpoint):
        problems.append(Problem("ENDPOINT", f"Must be an https URL, e.g. "
                                f"{DEFAULTS['ENDPOINT']} (got {endpoint!r})."))
    values["graph_endpoint"] = endpoint.rstrip("/")

    secret_key = get("SECRET_KEY")
    if not secret_key:
        # Development convenience: sessions then last only as long as this process.
        secret_key = os.urandom(32).hex()
        values["secret_key_generated"] = True
    elif len(secret_key) < 16:
        problems.append(Problem("SECRET_KEY", "Use at least 16 random characters, e.g. "
                                "`python -c 'import secrets; print(secrets.token_hex(32))'`."))
    values["secret_key"] = secret_key

    values.update(_session_store(get("SESSION_TYPE"), get("SESSION_FILE_DIR"), get("REDIS_URL"),
                                 problems))

    # The app's own trust setting (read_environment lets .env's win over the shell's), passed to
    # requests per call, so it wins over REQUESTS_CA_BUNDLE in the environment.
    ca_bundle = get("CA_BUNDLE") or get("REQUESTS_CA_BUNDLE")
    if ca_bundle and not Path(ca_bundle).is_file():
        problems.append(Problem("CA_BUNDLE", f"No such file: {ca_bundle}."))
    values["ca_bundle"] = ca_bundle

    response_mode = get("RESPONSE_MODE")
    if response_mode not in ("query", "form_post"):
        problems.append(Problem("RESPONSE_MODE",
                                f"Use form_post or query (got {response_mode!r})."))
    values["response_mode"] = response_mode

    values["todo_api_url"] = get("TODO_API_URL").rstrip("/")
    values["todo_api_scopes"] = tuple(get("TODO_API_SCOPE").split())
    if values["todo_api_url"] and not values["todo_api_scopes"]:
        problems.append(Problem("TODO_API_SCOPE", "Set it to the To-do API's scope, e.g. "
                                "api://<its Application ID>/ToDoList.ReadWrite."))
    values["allowed_tenants"] = tuple(get("ALLOWED_TENANTS").replace(",", " ").split())
    backchannel = get("BACKCHANNEL_LOGOUT").lower()
    if backchannel not in ("", "0", "1", "false", "true"):
        problems.append(Problem("BACKCHANNEL_LOGOUT", f"Use true or false (got {backchannel!r})."))
    values["backchannel_logout"] = backchannel in ("1", "true")
    values["trusted_proxy_hops"] = _number("TRUSTED_PROXY_HOPS", get, int, 0, 10, problems)
    values["session_lifetime"] = _number("SESSION_LIFETIME", get, int, 60, 31 * 86400, problems)
    values["session_idle_timeout"] = _number("SESSION_IDLE_TIMEOUT", get, int, 120, 31 * 86400,
                                             problems)
    values["http_timeout"] = _number("HTTP_TIMEOUT", get, float, 1, 120, problems)
    values["graph_retry_max_wait"] = _number("GRAPH_RETRY_MAX_WAIT", get, float, 0, 60, problems)

    first_per_key = {}
    for problem in problems:
        first_per_key.setdefault(problem.key, problem)
    return Settings(**values, problems=tuple(first_per_key.values()))  # type: ignore[arg-type]


def _authority(authority: str, oidc_authority: str, problems: list[Problem]) -> dict[str, str]:
    if authority and oidc_authority:
        problems.append(Problem("AUTHORITY", "Set AUTHORITY or OIDC_AUTHORITY, not both."))
    if not authority and not oidc_authority:
        problems.append(Problem("AUTHORITY", "Set it to https://login.microsoftonline.com/"
                                "<Directory (tenant) ID> (or OIDC_AUTHORITY for another OpenID "
                                "provider)."))
    for key, value in (("AUTHORITY", authority), ("OIDC_AUTHORITY", oidc_authority)):
        parts = urlsplit(value)
        if value and (parts.scheme != "https" or not parts.hostname or parts.path.strip("/") == ""
                      or parts.query or parts.fragment):
            problems.append(Problem(key, f"Must be an https URL with the tenant in its path, e.g. "
                                    f"https://login.microsoftonline.com/<tenant> (got {value!r})."))
    return {"authority": authority.rstrip("/"), "oidc_authority": oidc_authority.rstrip("/")}


def _credential(raw: Mapping[str, str], problems: list[Problem]) -> dict[str, str]:
    secret = raw.get("CLIENT_SECRET", "")
    cert_path = raw.get("CLIENT_CERTIFICATE_PATH", "")
    key_path = raw.get("CLIENT_PRIVATE_KEY_PATH", "")
    if secret and (cert_path or key_path):
        problems.append(Problem("CLIENT_SECRET", "Set CLIENT_SECRET or the certificate pair "
                                "(CLIENT_CERTIFICATE_PATH + CLIENT_PRIVATE_KEY_PATH), not both."))
        return {}
    if secret:
        return {"client_secret": secret}
    if not cert_path and not key_path:
        problems.append(Problem("CLIENT_SECRET", "Set it to the client secret's Value (or use a "
                                "certificate: CLIENT_CERTIFICATE_PATH + CLIENT_PRIVATE_KEY_PATH)."))
        return {}
    values: dict[str, str] = {"client_private_key_passphrase":
                              raw.get("CLIENT_PRIVATE_KEY_PASSPHRASE", "")}
    for key, path, name, marker in (
            ("CLIENT_CERTIFICATE_PATH", cert_path, "client_certificate_pem", "CERTIFICATE"),
            ("CLIENT_PRIVATE_KEY_PATH", key_path, "client_private_key_pem", "PRIVATE KEY")):
        if not path:
            problems.append(Problem(key, "Set both CLIENT_CERTIFICATE_PATH and "
                                    "CLIENT_PRIVATE_KEY_PATH (PEM files)."))
            continue
        try:
            text = Path(path).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(Problem(key, f"Cannot read {path}: {exc.__class__.__name__}."))
            continue
        if marker not in text:
            problems.append(Problem(key, f"{path} is not a PEM file with a {marker}."))
            continue
        values[name] = text
    return values


def _redirect_uri(redirect_uri: str, problems: list[Problem]) -> str:
    parts = urlsplit(redirect_uri)
    problem = None
    if parts.scheme not in ("http", "https") or not parts.hostname or not parts.path.strip("/"):
        problem = (f"Must be an absolute URL with a path, e.g. {DEFAULTS['REDIRECT_URI']} "
                   f"(got {redirect_uri!r}).")
    elif parts.scheme == "http" and not (parts.hostname in LOOPBACK_HOSTS
                                         or _is_loopback_ip(parts.hostname)):
        problem = "Must be https (the Microsoft identity platform accepts http only for localhost)."
    elif parts.query or parts.fragment:
        problem = "Must not contain a query or fragment."
    elif parts.path.rstrip("/") in APP_PATHS or parts.path.startswith("/static/"):
        problem = f"Its path {parts.path} is one of the app's own pages; use e.g. /getAToken."
    if problem:
        problems.append(Problem("REDIRECT_URI", problem))
    return redirect_uri


def _session_store(session_type: str, file_dir: str, redis_url: str,
                   problems: list[Problem]) -> dict[str, str]:
    session_type = session_type.lower()
    if session_type == "cachelib":
        session_type = "filesystem"
    if session_type not in ("filesystem", "redis"):
        problems.append(Problem("SESSION_TYPE", f"Use filesystem or redis (got {session_type!r})."))
    if session_type == "redis" and not redis_url:
        problems.append(Problem("REDIS_URL", "Set it (e.g. redis://localhost:6379/0) when "
                                "SESSION_TYPE=redis."))
    return {"session_type": session_type, "session_file_dir": file_dir, "redis_url": redis_url}


def _number(key: str, get, kind, low: float, high: float, problems: list[Problem]):
    try:
        value = kind(get(key))
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        problems.append(Problem(key, f"Must be a number from {low} to {high} (got {get(key)!r})."))
        return kind(DEFAULTS[key])
    return value


def _is_https_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme == "https" and bool(parts.hostname)


def _is_loopback_ip(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def describe_problems(problems: tuple[Problem, ...]) -> str:
    return "; ".join(f"{p.key}: {p.message}" for p in problems)
