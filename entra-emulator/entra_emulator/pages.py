"""HTML answers of the browser-facing endpoints: the headers every page carries, Entra's error
page, and the response to the app (query / fragment redirect or form_post page)."""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit, urlunsplit

from flask import Response, redirect, render_template

from entra_emulator.errors import Diagnostics, EntraError

# RFC 9700 §4.16: the sign-in, consent and error pages must not be framed (clickjacking).
PAGE_CSP = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"


def secure_page(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = PAGE_CSP
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    return response


def html_page(template: str, status: int = 200, **context: object) -> Response:
    return secure_page(Response(render_template(template, **context), status=status,
                                content_type="text/html; charset=utf-8"))


def error_page(err: EntraError) -> Response:
    """Entra's own error page: shown instead of redirecting when the redirect URI cannot be
    trusted (unknown app, unregistered redirect URI, unknown tenant)."""
    diagnostics = Diagnostics.for_request()
    return html_page("error.html", status=err.status, message=err.message, code=err.code,
                     diagnostics=diagnostics)


def respond_to_app(redirect_uri: str, response_mode: str, params: dict[str, str]) -> Response:
    """Deliver authorization response parameters to the app the way it asked for them."""
    if response_mode == "form_post":
        return html_page("form_post.html", action=redirect_uri, fields=params)
    parts = urlsplit(redirect_uri)
    encoded = urlencode(params)
    if response_mode == "fragment":
        target = urlunsplit(parts._replace(fragment=encoded))
    else:
        query = f"{parts.query}&{encoded}" if parts.query else encoded
        target = urlunsplit(parts._replace(query=query))
    return secure_page(redirect(target, code=302))
