"""The quickstart's web app: signs users in with the Microsoft identity platform and calls
Microsoft Graph with their access token, on flask_entra's public API alone."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, current_app, jsonify, redirect, request
from flask.typing import ResponseReturnValue
from werkzeug.middleware.proxy_fix import ProxyFix

from flask_entra import SecurityHeaders, install_log_redaction, sign_out_targets

from . import todo, views
from .config import Settings, describe_problems, load_settings, read_environment
from .errors import AppError, register_error_handlers, render_error
from .extensions import auth
from .graph import GraphClient

log = logging.getLogger(__name__)

LOOPBACK_IPS = frozenset({"127.0.0.1", "::1"})
REDIS_TIMEOUT_SECONDS = 3


@dataclass(frozen=True)
class Services:
    """What the app builds once per process and shares across requests."""

    settings: Settings
    graph: GraphClient | None


def create_app(test_config: dict | None = None) -> Flask:
    """Build the app. Settings come from the environment and `.env`, or, when `test_config` is
    given, from it alone (so tests are not affected by a developer's environment)."""
    app = Flask(__name__)
    settings = load_settings(read_environment() if test_config is None else test_config)
    app.config["TESTING"] = bool(test_config and test_config.get("TESTING"))
    install_log_redaction()
    register_error_handlers(app)
    app.add_url_rule("/healthz", "healthz", healthz)
    app.register_blueprint(views.bp)
    app.register_blueprint(todo.bp)
    app.context_processor(template_globals)
    app.wsgi_app = SecurityHeaders(  # type: ignore[method-assign]
        app.wsgi_app, static_path=app.static_url_path or "/static",
        form_targets=lambda: sign_out_targets(app))
    if settings.problems:
        log.error("The app is not configured. %s (see .env.sample)",
                  describe_problems(settings.problems))
        app.before_request(show_configuration_problems)
        app.extensions["webapp"] = Services(settings, None)
        return app
    if settings.secret_key_generated:
        log.warning("SECRET_KEY is not set: using a random key, so sessions end when this "
                    "process stops and are not shared between processes. Set SECRET_KEY.")
    app.config.update(SECRET_KEY=settings.secret_key, **session_config(settings),
                      **sign_in_config(settings))
    auth.init_app(app)
    # Asked for by the To-do page through get_token_for_user, not by a decorator: declared here so
    # that whichever process serves /login accepts them.
    auth.allow_scopes(settings.todo_api_scopes)
    app.extensions["webapp"] = Services(settings, GraphClient(
        auth.http_client(app), settings.graph_endpoint, max_wait=settings.graph_retry_max_wait))
    app.before_request(redirect_loopback_ip)
    if settings.trusted_proxy_hops:
        hops = settings.trusted_proxy_hops
        # Only as many X-Forwarded-* entries as there are proxies we run are believed.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops,
                                x_port=hops)  # type: ignore[method-assign]
    return app


def sign_in_config(settings: Settings) -> dict[str, Any]:
    """flask_entra's options, as app.config's ENTRA_* keys."""
    return {
        "ENTRA_CLIENT_ID": settings.client_id,
        "ENTRA_CLIENT_CREDENTIAL": settings.client_credential,
        "ENTRA_AUTHORITY": settings.authority or None,
        "ENTRA_OIDC_AUTHORITY": settings.oidc_authority or None,
        "ENTRA_REDIRECT_URI": settings.redirect_uri,
        "ENTRA_SCOPES": list(settings.scopes),
        "ENTRA_RESPONSE_MODE": settings.response_mode,
        "ENTRA_SESSION_LIFETIME": settings.session_lifetime,
        "ENTRA_SESSION_IDLE_TIMEOUT": settings.session_idle_timeout,
        "ENTRA_CA_BUNDLE": settings.ca_bundle or None,
        "ENTRA_HTTP_TIMEOUT": settings.http_timeout,
        "ENTRA_BACKCHANNEL_LOGOUT": settings.backchannel_logout,
        "ENTRA_ALLOWED_TENANTS": list(settings.allowed_tenants),
        # Groups past the overage are read from the same Graph as ENDPOINT.
        "ENTRA_GRAPH_ENDPOINT": settings.graph_endpoint.rsplit("/me", 1)[0],
    }


def session_config(settings: Settings) -> dict[str, Any]:
    """Flask-Session's settings, as the identity package's apps give them."""
    if settings.session_type == "redis":
        import redis

        # A Redis that stops answering must cost a request seconds, not a worker forever
        # (redis-py waits without limit by default). Options in REDIS_URL's query win.
        client = redis.Redis.from_url(settings.redis_url,
                                      socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
                                      socket_timeout=REDIS_TIMEOUT_SECONDS)
        return {"SESSION_TYPE": "redis", "SESSION_REDIS": client}
    return {"SESSION_TYPE": "filesystem", "SESSION_FILE_DIR": settings.session_file_dir}


def healthz() -> ResponseReturnValue:
    settings: Settings = current_app.extensions["webapp"].settings
    if settings.problems:
        return jsonify(status="misconfigured",
                       settings=sorted({p.key for p in settings.problems})), 503
    return jsonify(status="ok")


def show_configuration_problems() -> ResponseReturnValue | None:
    if request.endpoint in ("healthz", "static"):
        return None
    settings: Settings = current_app.extensions["webapp"].settings
    error = AppError(503, "The app is not configured yet",
                     "Set these settings in the environment or in a .env file (see .env.sample), "
                     "then restart the app.")
    return render_error(error, problems=settings.problems)


def redirect_loopback_ip() -> ResponseReturnValue | None:
    """Browsing to 127.0.0.1 while REDIRECT_URI says localhost (or a name) would end in a
    redirect-URI mismatch (AADSTS50011) and cookies on the wrong host: go to the configured
    host instead."""
    host = urlsplit("//" + request.host).hostname
    if host not in LOOPBACK_IPS or request.endpoint == "healthz" or request.method not in (
            "GET", "HEAD"):
        return None
    parts = urlsplit(current_app.extensions["webapp"].settings.redirect_uri)
    if host == parts.hostname:
        return None
    path = request.script_root + request.full_path.rstrip("?")
    return redirect(f"{parts.scheme}://{parts.netloc}{path}", 302)


def template_globals() -> dict[str, Any]:
    signed_in = "flask_entra" in current_app.extensions and auth.get_user() is not None
    services = current_app.extensions.get("webapp")
    return {"signed_in": signed_in, "sign_in_available": "flask_entra" in current_app.extensions,
            "todo_available": bool(services and services.settings.todo_api_url),
            "csrf_token": auth.csrf_token() if signed_in else ""}
