"""How long each parameter of an authorization request may be.

A sign-in in progress keeps its whole request (state.PendingStore), so unbounded parameters
let anyone make the emulator hold megabytes per /authorize call. Entra refuses a request that
is too large with AADSTS90015 (QueryStringTooLong, documented); it documents no limit per
parameter, so the limits below are ours: generous for real apps (an ASP.NET Core `state` is
around 1–2 KB, MSAL's are far shorter), small enough that the pending sign-ins cap
(signin_state.MAX_PENDING_SIGN_INS) bounds their memory to tens of MB.
"""

from __future__ import annotations

from collections.abc import Mapping

from entra_emulator.errors import entra_error

# Checked before the redirect URI is trusted: too long is Entra's error page.
ERROR_PAGE_LIMITS: dict[str, int] = {
    "client_id": 256,         # a GUID; the slack is for app ID URIs sent by mistake
    "redirect_uri": 2048,     # must equal a registered URI anyway (Entra registers ≤ 256)
}

# Checked once the redirect URI is trusted: too long goes back to the app.
ERROR_REDIRECT_LIMITS: dict[str, int] = {
    "state": 4096,
    "nonce": 1024,
    "login_hint": 512,
    "domain_hint": 256,
    "scope": 2048,
    "claims": 4096,
    "id_token_hint": 16384,   # an ID token with ~200 groups is ~8 KB
    # code_challenge: RFC 7636 bounds it to 128, checked by authorize.check_pkce with Entra's
    # own code for its size (AADSTS501491).
}

MAX_PARAMETER_LENGTHS: dict[str, int] = {**ERROR_PAGE_LIMITS, **ERROR_REDIRECT_LIMITS}


def check_lengths(params: Mapping[str, str], limits: Mapping[str, int]) -> None:
    """Raise AADSTS90015 for the first parameter longer than its limit."""
    for name, limit in limits.items():
        value = params.get(name)
        if value is not None and len(value) > limit:
            raise entra_error("QueryStringTooLong", name=name, limit=limit)


def over_limit(params: Mapping[str, str], name: str) -> bool:
    value = params.get(name)
    return value is not None and len(value) > MAX_PARAMETER_LENGTHS[name]
