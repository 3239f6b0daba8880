"""One error page for every failure path, with a hint for the common Microsoft Entra errors."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import redis
from flask import Flask, render_template
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

from .oidc import ProviderError

log = logging.getLogger(__name__)

AADSTS_HINTS = {
    "50011": "The redirect URI sent does not match one registered for the app. REDIRECT_URI must "
             "match a Web redirect URI of the app registration exactly, including scheme, host "
             "(localhost and 127.0.0.1 differ), port and path.",
    "7000215": "The client secret is wrong. CLIENT_SECRET must be the secret's Value, not its "
               "Secret ID (the Value is shown only once, when the secret is created).",
    "7000222": "The client secret has expired. Create a new one and update CLIENT_SECRET.",
    "700016": "The app was not found in this tenant. Check CLIENT_ID, and that AUTHORITY names "
              "the tenant where the app is registered.",
    "65001": "Nobody has consented to the app's permissions yet. Sign in again and accept the "
             "consent prompt, or ask an administrator to grant consent for the tenant.",
    "54005": "This sign-in response was already used. Start the sign-in again.",
    "70008": "The sign-in took too long or the session expired. Sign in again.",
    "90002": "The tenant in AUTHORITY does not exist. Check the Directory (tenant) ID.",
    "700027": "The client certificate was not accepted. Check that the certificate uploaded to "
              "the app registration matches CLIENT_CERTIFICATE_PATH.",
    "50058": "No user is signed in at the identity provider. Sign in again.",
}
AADSTS_CODE = re.compile(r"AADSTS(\d+)")
# Redis refusing connections, gone, or not answering in time (its socket timeouts).
STORE_UNAVAILABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


@dataclass
class AppError(Exception):
    """A failure the user sees as the error page. Never carries tokens or secrets."""

    status: int
    title: str
    message: str
    hint: str = ""
    code: str = ""  # e.g. "AADSTS50011", an OAuth error, or a Graph error code
    detail: str = ""  # the provider's own description, shown escaped
    offer_sign_in: bool = False
    retry_after: int | None = None


def from_oauth_error(error: str, description: str = "", *, status: int = 400,
                     title: str = "Sign-in failed") -> AppError:
    """An AppError for an OAuth/OpenID error response, with an AADSTS hint when known."""
    number = aadsts_number(description)
    code = f"AADSTS{number}" if number else error
    hint = AADSTS_HINTS.get(number, "")
    if not hint and error == "access_denied":
        hint = "The sign-in or the consent was cancelled. You can sign in again."
    if not hint and error in ("consent_required", "interaction_required", "login_required"):
        hint = "Sign in again to continue."
    return AppError(status, title, f"The identity provider answered: {error}.", hint=hint,
                    code=code, detail=first_line(description), offer_sign_in=True)


def from_provider_error(exc: ProviderError) -> AppError:
    if exc.misconfigured:
        return provider_configuration_error(exc)
    status = 502 if exc.unreachable else 503
    return AppError(status, "The identity provider is unavailable", exc.message, hint=exc.hint,
                    offer_sign_in=not exc.unreachable)


def provider_configuration_error(exc: ProviderError) -> AppError:
    """The provider answered, and its answer means AUTHORITY is wrong: a configuration page, not
    an outage (signing in again cannot help). 503, like the app's other configuration page."""
    number = aadsts_number(exc.description)
    return AppError(503, "The app's identity provider setting is wrong",
                    f"{exc.message} This is a configuration problem in AUTHORITY (or "
                    "OIDC_AUTHORITY), not an outage of the identity provider.",
                    hint=AADSTS_HINTS.get(number, "") or exc.hint,
                    code=f"AADSTS{number}" if number else exc.error,
                    detail=first_line(exc.description))


def aadsts_number(description: str | None) -> str:
    """The number of the AADSTS code in an Entra error description, or ""."""
    match = AADSTS_CODE.search(description or "")
    return match.group(1) if match else ""


def first_line(description: str | None) -> str:
    """The message line only: Entra appends Trace ID and Correlation ID lines (CRLF)."""
    return (description or "").split("\r\n")[0].strip()[:1000]


def session_store_unavailable() -> AppError:
    return AppError(503, "Temporarily unavailable", "The app cannot reach its session store "
                    "right now, so it cannot show this page or sign you in.",
                    hint="Try again in a moment.", retry_after=10)


def render_error(error: AppError) -> ResponseReturnValue:
    response = render_template("error.html", error=error), error.status
    if error.retry_after is not None:
        return (*response, {"Retry-After": str(error.retry_after)})
    return response


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(AppError, render_error)

    @app.errorhandler(ProviderError)
    def provider_error(exc: ProviderError):
        if exc.misconfigured:
            log.error("Identity provider configuration problem: %s %s", exc.message,
                      first_line(exc.description))
        else:
            log.warning("Identity provider problem: %s", exc.message)
        return render_error(from_provider_error(exc))

    def session_store_error(exc: redis.exceptions.RedisError):
        log.warning("Session store unreachable: %s", exc)
        return render_error(session_store_unavailable())

    for unavailable in STORE_UNAVAILABLE:
        app.register_error_handler(unavailable, session_store_error)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return render_error(AppError(exc.code or 500, exc.name, exc.description or ""))

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        # The trace goes to the log (which holds no tokens); the user gets the plain page.
        log.exception("Unexpected error")
        return render_error(AppError(500, "Something went wrong",
                                     "The app hit an unexpected error. Try again."))
