"""Opt-in hardening for the host app's own pages, never imposed by Auth:

    from flask_entra.hardening import SecurityHeaders, install_log_redaction
    app.wsgi_app = SecurityHeaders(app.wsgi_app, form_targets=auth_form_targets)
    install_log_redaction()

SecurityHeaders adds a strict CSP (no scripts), no framing, no referrer, and `no-store` on every
page but static files; install_log_redaction keeps `code`, `state` and token-like values out of
the access logs (werkzeug, gunicorn) and MSAL's debug log.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

# Loggers whose records may carry authorization-response values: access logs print request lines;
# MSAL's DEBUG log prints each token request's parameters (tokens masked, not code/verifier).
REDACTED_LOGGERS = ("werkzeug", "gunicorn.access", "gunicorn.error")


class SecurityHeaders:
    """WSGI middleware adding the security headers to every response, built once rather than per
    response. `form_targets()` names the origins forms may post to besides 'self' (Chrome applies
    form-action to the redirect after the sign-out form, which goes to the provider), asked for
    at each response so it may change once the provider's metadata is known."""

    def __init__(self, wsgi_app: Callable[..., Any], *, static_path: str = "/static",
                 form_targets: Callable[[], tuple[str, ...]] = tuple) -> None:
        self.wsgi_app = wsgi_app
        self._static_prefix = static_path.rstrip("/") + "/"
        self._form_targets = form_targets
        # One attribute, replaced whole: threads of a worker read it without a lock.
        self._built: tuple[tuple[str, ...], list[tuple[str, str]]] = ((), self._headers(()))

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
        targets = self._form_targets()
        built_for, headers = self._built
        if targets != built_for:
            headers = self._headers(targets)
            self._built = (targets, headers)
        return headers

    @staticmethod
    def _headers(targets: tuple[str, ...]) -> list[tuple[str, str]]:
        form_targets = " ".join(["'self'", *targets])
        return [
            ("Content-Security-Policy",
             "default-src 'none'; style-src 'self'; img-src 'self' data:; "
             f"form-action {form_targets}; frame-ancestors 'none'; base-uri 'none'"),
            ("X-Frame-Options", "DENY"),
            ("Referrer-Policy", "no-referrer"),
            ("X-Content-Type-Options", "nosniff"),
            ("Cross-Origin-Opener-Policy", "same-origin"),
        ]


def sign_out_targets(app: Any) -> tuple[str, ...]:
    """The provider's browser-facing origins (for `form_targets`), once its metadata is known.
    Never fetched for this (a static file, /healthz or a signed-out page must not wait on the
    provider): a signed-in request, whose page has the sign-out form, reads it first."""
    state = app.extensions.get("flask_entra")
    metadata = state.provider.cached_metadata() if state else None
    return metadata.browser_origins if metadata else ()


class RedactOAuthParameters(logging.Filter):
    """An authorization response in a query string (query response mode) puts `code` and `state`
    in access-log request lines; MSAL's debug log prints them as JSON. Redact them, and any
    token-like parameter, in both forms, in the message as it will be printed."""

    NAMES = (r"(code|state|session_state|id_token|access_token|refresh_token|client_info|"
             r"code_verifier|client_secret|client_assertion|csrf_token|nonce|logout_token)")
    QUERY = re.compile(rf"(?i)\b{NAMES}=[^&\s\"']*")
    JSON = re.compile(rf'(?i)"{NAMES}"(\s*:\s*)"[^"]*"')

    def filter(self, record: logging.LogRecord) -> bool:
        # Format first, then redact the one resulting line: gunicorn's access-log arguments are
        # every atom it knows, of which the format prints a handful.
        try:
            message = record.getMessage()
        except (TypeError, ValueError, KeyError):
            record.msg = self.redact(record.msg)
            if isinstance(record.args, tuple):
                record.args = tuple(self.redact(v) for v in record.args)
            return True
        record.msg = self.redact(message)
        record.args = None
        return True

    def redact(self, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        value = self.QUERY.sub(r"\1=[redacted]", value)
        return self.JSON.sub(r'"\1"\2"[redacted]"', value)


def install_log_redaction() -> None:
    """Redact the access loggers' records, and every record MSAL creates, whichever `msal.*`
    logger it comes from (a logger's filters see only its own records, and MSAL creates more
    loggers than can be listed), through the log-record factory. Records are built only for
    enabled levels, so this costs nothing while MSAL's debug log is off."""
    for name in REDACTED_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactOAuthParameters) for f in logger.filters):
            logger.addFilter(RedactOAuthParameters())
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
