"""The extension's own failures, as pages: for its routes and its exceptions only, never the
host app's. Hints for the common Microsoft Entra errors (AADSTS codes). Templates live in
templates/flask_entra/ and may be overridden by the host app (its own templates come first)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from flask import Flask, current_app, render_template, request, url_for
from flask.typing import ResponseReturnValue

from .provider import ProviderError
from .store import StoreBusy, StoreUnavailable

log = logging.getLogger(__name__)

AADSTS_HINTS = {
    "50011": "The redirect URI sent does not match one registered for the app. It must match a "
             "Web redirect URI of the app registration exactly, including scheme, host "
             "(localhost and 127.0.0.1 differ), port and path.",
    "7000215": "The client secret is wrong. Use the secret's Value, not its Secret ID (the "
               "Value is shown only once, when the secret is created).",
    "7000222": "The client secret has expired. Create a new one and update the app's setting.",
    "700016": "The app was not found in this tenant. Check the client ID, and that the "
              "authority names the tenant where the app is registered.",
    "65001": "Nobody has consented to the app's permissions yet. Sign in again and accept the "
             "consent prompt, or ask an administrator to grant consent for the tenant.",
    "54005": "This sign-in response was already used. Start the sign-in again.",
    "70008": "The sign-in took too long or the session expired. Sign in again.",
    "90002": "The tenant in the authority does not exist. Check the Directory (tenant) ID.",
    "700027": "The client certificate was not accepted. Check that the certificate uploaded to "
              "the app registration is the one the app uses.",
    "50058": "No user is signed in at the identity provider. Sign in again.",
}
AADSTS_CODE = re.compile(r"AADSTS(\d+)")


@dataclass
class AuthError(Exception):
    """A failure of the sign-in the user sees as a page. Never carries tokens or secrets."""

    status: int
    title: str
    message: str
    hint: str = ""
    code: str = ""  # e.g. "AADSTS50011" or an OAuth error
    detail: str = ""  # the provider's own description, shown escaped
    offer_sign_in: bool = False
    retry_after: int | None = None


def from_oauth_error(error: str, description: str = "", *, status: int = 400) -> AuthError:
    """An AuthError for an OAuth/OpenID error response, with an AADSTS hint when known."""
    number = aadsts_number(description)
    hint = AADSTS_HINTS.get(number, "")
    if not hint and error == "access_denied":
        hint = "The sign-in or the consent was cancelled. You can sign in again."
    if not hint and error in ("consent_required", "interaction_required", "login_required"):
        hint = "Sign in again to continue."
    return AuthError(status, "Sign-in failed",
                     f"The identity provider answered: {str(error)[:100]}.", hint=hint,
                     code=f"AADSTS{number}" if number else str(error)[:100],
                     detail=first_line(description), offer_sign_in=True)


def from_provider_error(exc: ProviderError) -> AuthError:
    if exc.misconfigured:
        # The provider answered, and its answer means the authority setting is wrong: signing
        # in again cannot help. 503, like any other configuration problem.
        number = aadsts_number(exc.description)
        return AuthError(503, "The app's identity provider setting is wrong",
                         f"{exc.message} This is a configuration problem in the app's authority "
                         "setting, not an outage of the identity provider.",
                         hint=AADSTS_HINTS.get(number, "") or exc.hint,
                         code=f"AADSTS{number}" if number else exc.error,
                         detail=first_line(exc.description))
    return AuthError(502 if exc.unreachable else 503, "The identity provider is unavailable",
                     exc.message, hint=exc.hint, offer_sign_in=not exc.unreachable)


def aadsts_number(description: str | None) -> str:
    match = AADSTS_CODE.search(description or "")
    return match.group(1) if match else ""


def first_line(description: str | None) -> str:
    """The message line only: Entra appends Trace ID, Correlation ID and Timestamp."""
    text = (description or "").split("\r\n")[0].split(" Trace ID:")[0]
    return text.strip()[:1000]


def store_unavailable() -> AuthError:
    return AuthError(503, "Temporarily unavailable", "The app cannot reach its session store "
                     "right now, so it cannot sign you in or out.",
                     hint="Try again in a moment.", retry_after=10)


def render_error(error: AuthError) -> ResponseReturnValue:
    state = current_app.extensions["flask_entra"]
    sign_in_url = url_for(f"{state.settings.blueprint_name}.login")
    headers = {"Cache-Control": "no-store"}
    if error.retry_after is not None:
        headers["Retry-After"] = str(error.retry_after)
    body = render_template("flask_entra/error.html", error=error, sign_in_url=sign_in_url,
                           home_url=request.script_root + "/")
    return body, error.status, headers


def register_error_pages(app: Flask) -> None:
    """Pages for the extension's own exceptions, wherever they are raised (its routes, or a view
    it protects); the host app's exceptions stay the host's."""
    app.register_error_handler(AuthError, render_error)

    @app.errorhandler(ProviderError)
    def provider_error(exc: ProviderError) -> ResponseReturnValue:
        log.warning("Identity provider problem: %s", exc.message)
        return render_error(from_provider_error(exc))

    @app.errorhandler(StoreUnavailable)
    def unavailable(exc: StoreUnavailable) -> ResponseReturnValue:
        log.warning("Session store unavailable: %s", exc.__class__.__name__)
        return render_error(store_unavailable())

    @app.errorhandler(StoreBusy)
    def busy(_exc: StoreBusy) -> ResponseReturnValue:
        return render_error(AuthError(503, "Busy", "Another page of yours is renewing your "
                                      "sign-in right now.", hint="Try again in a moment.",
                                      retry_after=5))
