"""The app's own error page: Graph failures, configuration problems, HTTP errors and anything
unexpected. The sign-in's failures are flask_entra's pages, shown in this app's look through
templates/flask_entra/layout.html."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app, render_template, url_for
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


@dataclass
class AppError(Exception):
    """A failure the user sees as the error page. Never carries tokens or secrets."""

    status: int
    title: str
    message: str
    hint: str = ""
    code: str = ""  # e.g. a Graph error code
    detail: str = ""  # the service's own message, shown escaped
    offer_sign_in: bool = False
    retry_after: int | None = None


def render_error(error: AppError, **context: Any) -> ResponseReturnValue:
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after is not None else {}
    signed_in_available = "flask_entra" in current_app.extensions
    page = render_template("error.html", error=error, home_url=url_for("views.index"),
                           sign_in_url=url_for("identity.login") if signed_in_available else "",
                           **context)
    return page, error.status, headers


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(AppError, render_error)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> ResponseReturnValue:
        return render_error(AppError(exc.code or 500, exc.name, exc.description or ""))

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> ResponseReturnValue:
        # The trace goes to the log (which holds no tokens); the user gets the plain page.
        log.exception("Unexpected error")
        return render_error(AppError(500, "Something went wrong",
                                     "The app hit an unexpected error. Try again."))
