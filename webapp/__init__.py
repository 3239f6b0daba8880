"""A Flask web app that signs users in with the Microsoft identity platform (MSAL) and calls
Microsoft Graph with their access token."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Flask,
    current_app,
    jsonify,
    redirect,
    render_template,
    request,
    session,
)
from flask.typing import ResponseReturnValue
from werkzeug.middleware.proxy_fix import ProxyFix

from . import auth, backchannel, views
from .auth import Identity
from .config import (
    DEFAULTS,
    Settings,
    describe_problems,
    load_settings,
    read_environment,
)
from .errors import AppError, register_error_handlers
from .graph import GraphClient
from .oidc import Provider, ProviderMetadata
from .outbound import OutboundSession
from .sessions import Records, configure_session_store

log = logging.getLogger(__name__)

LOOPBACK_IPS = frozenset({"127.0.0.1", "::1"})
LOOPBACK_IP_PREFIXES = ("127.0.0.1", "[::1]")
# Loggers whose records may carry authorization-response values: access logs print request lines;
# MSAL's DEBUG log prints each token request's parameters (tokens masked, not code/verifier).
# MSAL's loggers are covered by install_msal_record_redaction.
REDACTED_LOGGERS = ("werkzeug", "gunicorn.access", "gunicorn.error")


@dataclass
class Services:
    """What the app builds once per process and shares across requests."""

    settings: Settings
    http: OutboundSession
    provider: Provider
    identity: Identity
    graph: GraphClient
    records: Records


def create_app(test_config: dict | None = None) -> Flask:
    """Build the app. Settings come from the environment and `.env`, or, when `test_config` is
    given, from it alone (so tests are not affected by a developer's environment)."""
    app = Flask(__name__)
    settings = load_settings(read_environment() if test_config is None else test_config)
    app.config["TESTING"] = bool(test_config and test_config.get("TESTING"))
    app.secret_key = settings.secret_key
    install_log_redaction()
    register_error_handlers(app)
    app.add_url_rule("/healthz", "healthz", healthz)
    app.register_blueprint(views.bp)
    app.register_blueprint(auth.bp)
    app.register_blueprint(backchannel.bp)
    app.add_url_rule(callback_path(settings), "auth.authorization_response",
                     auth.authorization_response, methods=["GET", "POST"])
    app.context_processor(template_globals)
    app.extensions["webapp_links"] = PageLinks.of(app)

    if settings.problems:
        log.error("The app is not configured. %s (see .env.sample)",
                  describe_problems(settings.problems))
        app.before_request(show_configuration_problems)
        app.extensions["webapp"] = None
        app.extensions["webapp_settings"] = settings
        app.wsgi_app = SecurityHeaders(app.wsgi_app, None,  # type: ignore[method-assign]
                                       app.static_url_path or "")
        return app
    if settings.secret_key_generated:
        log.warning("SECRET_KEY is not set: using a random key, so sessions end when this "
                    "process stops and are not shared between processes. Set SECRET_KEY.")

    http = OutboundSession(settings.http_timeout, settings.ca_bundle)
    provider = Provider(http, settings.authority_url, settings.client_id,
                        generic_oidc=bool(settings.oidc_authority))
    records = configure_session_store(app, settings)
    app.extensions["webapp"] = Services(
        settings=settings, http=http, provider=provider,
        identity=Identity(settings, http, provider, records.sign_ins),
        graph=GraphClient(http, settings.graph_endpoint, max_wait=settings.graph_retry_max_wait),
        records=records)
    app.extensions["webapp_settings"] = settings
    app.wsgi_app = SecurityHeaders(app.wsgi_app, provider,  # type: ignore[method-assign]
                                   app.static_url_path or "")
    app.before_request(redirect_loopback_ip)
    if settings.trusted_proxy_hops:
        hops = settings.trusted_proxy_hops
        # Only as many X-Forwarded-* entries as there are proxies we run are believed.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops,
                                x_port=hops)  # type: ignore[method-assign]
    return app


def callback_path(settings: Settings) -> str:
    """The callback lives at REDIRECT_URI's path (the default's while REDIRECT_URI is invalid)."""
    if any(problem.key == "REDIRECT_URI" for problem in settings.problems):
        return urlsplit(DEFAULTS["REDIRECT_URI"]).path
    return settings.redirect_path


def healthz() -> ResponseReturnValue:
    settings: Settings = current_app.extensions["webapp_settings"]
    if settings.problems:
        return jsonify(status="misconfigured",
                       settings=sorted({p.key for p in settings.problems})), 503
    return jsonify(status="ok")


def show_configuration_problems() -> ResponseReturnValue | None:
    if request.endpoint in ("healthz", "static"):
        return None
    settings: Settings = current_app.extensions["webapp_settings"]
    error = AppError(503, "The app is not configured yet",
                     "Set these settings in the environment or in a .env file (see .env.sample), "
                     "then restart the app.")
    return render_template("error.html", error=error, problems=settings.problems), 503


def redirect_loopback_ip() -> ResponseReturnValue | None:
    """Browsing to 127.0.0.1 while REDIRECT_URI says localhost (or a name) would end in a
    redirect-URI mismatch (AADSTS50011) and cookies on the wrong host: go to the configured
    host instead."""
    if not request.host.startswith(LOOPBACK_IP_PREFIXES):  # a cheap first look, every request
        return None
    host = urlsplit("//" + request.host).hostname
    if host not in LOOPBACK_IPS or request.endpoint == "healthz" or request.method not in (
            "GET", "HEAD"):
        return None
    settings: Settings = current_app.extensions["webapp"].settings
    if host == settings.redirect_host:
        return None
    path = request.script_root + request.full_path.rstrip("?")
    return redirect(settings.redirect_origin + path, 302)


class SecurityHeaders:
    """WSGI middleware that adds the security headers to every response, built once rather than
    per response (through Flask's response object they cost a signed-in page a tenth of its
    time). The CSP's form-action lists the provider's origins besides 'self' (Chrome applies
    form-action to the redirect that follows the sign-out form, which goes to the provider's
    end_session_endpoint), so it is rebuilt when the provider's metadata becomes known, or is
    re-read; a page with the sign-out form asks for it first (template_globals). Every page but a
    static file is no-store: pages show personal data, and the callback's answer must not be
    replayed from a cache. Responses must not set these headers themselves."""

    def __init__(self, wsgi_app: Callable[..., Any], provider: Provider | None,
                 static_path: str) -> None:
        self.wsgi_app = wsgi_app
        self._provider = provider
        self._static_prefix = static_path + "/"
        # One attribute, replaced whole: threads of a worker read it without a lock.
        self._built: tuple[ProviderMetadata | None, list[tuple[str, str]]] = (
            None, self._headers(None))

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        is_static = environ.get("PATH_INFO", "").startswith(self._static_prefix)
        is_https = environ.get("wsgi.url_scheme") == "https"

        def start_with_headers(status: str, headers: list[tuple[str, str]],
                               exc_info: Any = None) -> Any:
            added = self.headers()
            if not is_static:
                headers = [h for h in headers if h[0].lower() != "cache-control"]
                added = [*added, ("Cache-Control", "no-store")]
            if is_https:
                added = [*added, ("Strict-Transport-Security", "max-age=31536000")]
            return start_response(status, headers + added, exc_info)

        return self.wsgi_app(environ, start_with_headers)

    def headers(self) -> list[tuple[str, str]]:
        metadata = self._provider.cached_metadata() if self._provider else None
        built_for, headers = self._built
        if metadata is not built_for:
            headers = self._headers(metadata)
            self._built = (metadata, headers)
        return headers

    @staticmethod
    def _headers(metadata: ProviderMetadata | None) -> list[tuple[str, str]]:
        form_targets = " ".join(["'self'", *(metadata.browser_origins if metadata else ())])
        return [
            ("Content-Security-Policy",
             "default-src 'none'; style-src 'self'; img-src 'self' data:; "
             f"form-action {form_targets}; frame-ancestors 'none'; base-uri 'none'"),
            ("X-Frame-Options", "DENY"),
            ("Referrer-Policy", "no-referrer"),
            ("X-Content-Type-Options", "nosniff"),
            ("Cross-Origin-Opener-Policy", "same-origin"),
        ]


@dataclass(frozen=True)
class PageLinks:
    """The links every page shows, built once per process: url_for() costs a few microseconds a
    call and a page has up to seven. Templates use `links.<name>`; a link with arguments (a
    sign-in's `next`) still uses url_for()."""

    home: str
    graph: str
    claims: str
    sign_in: str
    sign_out: str
    stylesheet: str

    @classmethod
    def of(cls, app: Flask) -> PageLinks:
        build = app.url_map.bind("localhost").build  # paths only: the host plays no part
        return cls(home=build("views.index"), graph=build("views.call_graph"),
                   claims=build("views.claims"), sign_in=build("auth.login"),
                   sign_out=build("auth.logout"),
                   stylesheet=build("static", {"filename": "style.css"}))

    def under(self, script_root: str) -> PageLinks:
        """The same links for an app mounted below a path (SCRIPT_NAME), as url_for makes them."""
        if not script_root:
            return self
        return PageLinks(**{name: script_root + path for name, path in asdict(self).items()})


def template_globals() -> dict:
    user = session.get(auth.USER)
    if user is not None:
        provide_sign_out_targets()
    return {"links": current_app.extensions["webapp_links"].under(request.script_root),
            "signed_in": user is not None,
            "csrf_token": session.get(auth.CSRF_TOKEN, "") if user is not None else ""}


def provide_sign_out_targets() -> None:
    """A page with the sign-out form needs the provider's origins in its CSP (SecurityHeaders):
    read the provider's metadata if this process has not yet (and can: the sign-out itself
    shows the provider error)."""
    services: Services | None = current_app.extensions["webapp"]
    if services is not None and services.provider.cached_metadata() is None:
        services.provider.metadata_if_available()


class RedactOAuthParameters(logging.Filter):
    """An authorization response in a query string (query response mode) puts `code` and `state`
    in access-log request lines; MSAL's debug log prints them as JSON. Redact them, and any
    token-like parameter, in both forms, in the message as it will be printed."""

    NAMES = (r"(code|state|session_state|id_token|access_token|refresh_token|client_info|"
             r"code_verifier|client_secret|client_assertion|csrf_token|nonce)")
    QUERY = re.compile(rf"(?i)\b{NAMES}=[^&\s\"']*")
    JSON = re.compile(rf'(?i)"{NAMES}"(\s*:\s*)"[^"]*"')

    def filter(self, record: logging.LogRecord) -> bool:
        # Format first, then redact the one resulting line: gunicorn's access-log arguments are
        # every atom it knows (the whole WSGI environ and all headers, ~55 values), of which the
        # format prints a handful; redacting each cost ~0.1 ms per request.
        try:
            message = record.getMessage()
        except (TypeError, ValueError, KeyError):
            # A malformed record: the handler reports it; still redact what it may print.
            record.msg = self.redact(record.msg)
            if isinstance(record.args, tuple):
                record.args = tuple(self.redact(v) for v in record.args)
            return True
        record.msg = self.redact(message)
        record.args = None
        return True

    def redact(self, value):
        if not isinstance(value, str):
            return value
        value = self.QUERY.sub(r"\1=[redacted]", value)
        return self.JSON.sub(r'"\1"\2"[redacted]"', value)


def install_log_redaction() -> None:
    for name in REDACTED_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactOAuthParameters) for f in logger.filters):
            logger.addFilter(RedactOAuthParameters())
    install_msal_record_redaction()


def install_msal_record_redaction() -> None:
    """Redact every record MSAL creates, whichever `msal.*` logger it comes from. A logger's
    filters see only records created on that very logger, not those its children pass up, and
    MSAL creates more loggers than can be listed (some lazily). Records are built only for
    enabled levels, so this costs nothing while MSAL's debug log is off."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "redacts_msal", False):
        return
    redactor = RedactOAuthParameters()

    def redacting_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if record.name == "msal" or record.name.startswith("msal."):
            redactor.filter(record)
        return record

    redacting_factory.redacts_msal = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(redacting_factory)
