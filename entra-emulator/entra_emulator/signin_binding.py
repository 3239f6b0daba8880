"""A sign-in is bound to the browser that started it, as Entra binds its flow token.

Without this, a page on another origin could post the sign-in form (whose `ctx` it got by
starting a sign-in itself) with the attacker's credentials from the victim's browser: the
victim's browser would then hold an SSO session for the attacker, and the victim's next
sign-in at any app would silently be the attacker's (login CSRF).

Entra's `esctx` cookie "binds a request to a specific browser instance" for CSRF protection
(learn.microsoft.com, "Web browser cookies used in Microsoft Entra authentication"). The
emulator does the same: /authorize gives the browser a random `esctx` when it has none, each
sign-in it starts records a hash of that value, and the sign-in form's POST must carry the same
cookie. One value per browser, not per sign-in, so two tabs signing in at once both work. The
consent form needs nothing more: it is bound to the SSO session that was shown it.
"""

from __future__ import annotations

import hmac
import re
import secrets

from flask import Response, after_this_request, request

from entra_emulator.records import digest

BINDING_COOKIE = "esctx"
_WELL_FORMED = re.compile(r"[A-Za-z0-9_-]{43}")   # what secrets.token_urlsafe(32) gives



def browser_binding() -> str:
    """What a sign-in started by this request is bound to: the hash of this browser's `esctx`,
    which is created (and set on the response) when the browser has none."""
    value = request.cookies.get(BINDING_COOKIE, "")
    if not _WELL_FORMED.fullmatch(value):
        value = secrets.token_urlsafe(32)
        secure = request.is_secure

        @after_this_request
        def _set_cookie(response: Response) -> Response:
            # A session cookie, like Entra's. Lax: a cross-site POST does not even carry it.
            response.set_cookie(BINDING_COOKIE, value, httponly=True, samesite="Lax",
                                secure=secure, path="/")
            return response
    return digest(value)


def is_same_browser(bound_to: str | None) -> bool:
    """Whether this request comes from the browser the sign-in is bound to."""
    value = request.cookies.get(BINDING_COOKIE, "")
    if bound_to is None or not _WELL_FORMED.fullmatch(value):
        return False
    return hmac.compare_digest(digest(value), bound_to)
