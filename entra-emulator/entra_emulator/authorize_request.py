"""The authorization request: read by a list of small named checks, in the order Entra applies
them (see authorize.py for why). The first three (tenant, client, redirect URI) fail with
Entra's error page; every later failure goes back to the app's redirect URI with `state`
(`ErrorRedirect`)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from flask import Response

from entra_emulator.claims import check_claims
from entra_emulator.context import current_state, tenant_id_for
from entra_emulator.directory import Application
from entra_emulator.errors import EntraError, entra_error, redirect_error_params
from entra_emulator.pages import respond_to_app
from entra_emulator.redirect_uris import redirect_platform, registered_redirect_uris
from entra_emulator.request_limits import (
    ERROR_PAGE_LIMITS,
    ERROR_REDIRECT_LIMITS,
    check_lengths,
    over_limit,
)
from entra_emulator.scopes import Scope, granted_permissions, parse_scopes

RESPONSE_MODES = ("query", "fragment", "form_post")
PROMPTS = ("login", "none", "consent", "select_account")
PKCE_METHODS = ("S256", "plain")
# RFC 7636 §4.2: a challenge is 43 to 128 characters of the unreserved set.
CODE_CHALLENGE = re.compile(r"[A-Za-z0-9\-._~]{43,128}")


@dataclass(frozen=True)
class AuthorizationRequest:
    tenant_segment: str
    tenant_id: str
    client: Application
    redirect_uri: str
    response_mode: str
    scope: str
    scopes: tuple[Scope, ...]
    state: str | None
    nonce: str | None
    prompt: frozenset[str]
    login_hint: str | None
    max_age: int | None
    code_challenge: str | None
    code_challenge_method: str | None
    client_info: bool
    hinted_user_id: str | None   # the user named by id_token_hint

    @property
    def permissions(self) -> set[str]:
        return granted_permissions(self.scopes)


class ErrorRedirect(Exception):
    """A failure reported to the app at its (already verified) redirect URI."""

    def __init__(self, err: EntraError, redirect_uri: str, response_mode: str,
                 state: str | None, *, client_id: str, tenant_id: str) -> None:
        super().__init__(err.message)
        self.err, self.redirect_uri = err, redirect_uri
        self.response_mode, self.state = response_mode, state
        self.client_id, self.tenant_id = client_id, tenant_id

    @classmethod
    def of(cls, err: EntraError, req: AuthorizationRequest) -> ErrorRedirect:
        """The failure of a request whose every parameter was already read."""
        return cls(err, req.redirect_uri, req.response_mode, req.state,
                   client_id=req.client.app_id, tenant_id=req.tenant_id)

    def response(self) -> Response:
        params = redirect_error_params(self.err)
        if self.state is not None:
            params["state"] = self.state
        return respond_to_app(self.redirect_uri, self.response_mode,
                              with_response_issuer(params, self.client_id, self.tenant_id))


def with_response_issuer(params: dict[str, str], client_id: str,
                         tenant_id: str) -> dict[str, str]:
    """RFC 9207: the authorization response names its issuer (`iss`), when the emulator is
    configured to send it or a defect for the client says otherwise (see defects.py)."""
    state = current_state()
    issuer = state.defects.response_issuer(client_id, state.issuer(tenant_id))
    return params if issuer is None else {**params, "iss": issuer}


# ---------------------------------------------------------------------------------------------
# The checks. Each reads its parameter(s), given what the earlier checks found, and returns
# what it found (named as in AuthorizationRequest), or raises EntraError.
# ---------------------------------------------------------------------------------------------

Found = Mapping[str, Any]


def check_tenant(params: Mapping[str, str], found: Found) -> Found:
    return {"tenant_id": tenant_id_for(found["tenant_segment"])}


def check_client(params: Mapping[str, str], found: Found) -> Found:
    client_id = params.get("client_id", "").strip()
    if not client_id:
        raise entra_error("MissingRequiredParameter", name="client_id")
    app = current_state().directory.application(client_id)
    if app is None:
        raise entra_error("UnauthorizedClient_DoesNotMatchRequest", app_id=client_id,
                          tenant=found["tenant_segment"])
    return {"client": app}


def check_redirect_uri(params: Mapping[str, str], found: Found) -> Found:
    """A registered URI, web or public client: exact, but a loopback URI on any port
    (redirect_uris.py); omitted is fine only when one is registered."""
    app: Application = found["client"]
    redirect_uri = params.get("redirect_uri")
    registered = registered_redirect_uris(app)
    if not registered:
        raise entra_error("NoReplyAddressRegistered")
    if redirect_uri is None:
        if len(registered) == 1:
            return {"redirect_uri": registered[0]}
        raise entra_error("NoReplyAddressProvided")
    if redirect_platform(app, redirect_uri) is None:
        raise entra_error("InvalidReplyTo", redirect_uri=redirect_uri, app_id=app.app_id)
    return {"redirect_uri": redirect_uri}


def check_response_mode(params: Mapping[str, str], found: Found) -> Found:
    mode = params.get("response_mode") or "query"
    if mode not in RESPONSE_MODES:
        raise entra_error("UnsupportedResponseMode", response_mode=mode)
    return {"response_mode": mode}


def check_response_type(params: Mapping[str, str], found: Found) -> Found:
    response_type = params.get("response_type")
    if not response_type:
        raise entra_error("MissingRequiredParameter", name="response_type")
    # The hybrid and implicit flows need the app's implicit grant settings; we offer code only.
    if response_type.split() != ["code"]:
        raise entra_error("UnsupportedResponseType")
    return {}


def check_scope(params: Mapping[str, str], found: Found) -> Found:
    scope = params.get("scope", "")
    if not scope.strip():
        raise entra_error("MissingRequiredParameter", name="scope")
    # Several resources may be named here, for consent; the token endpoint then issues for
    # one resource per request (token.py).
    return {"scope": scope, "scopes": tuple(parse_scopes(scope, current_state().directory))}


def check_pkce(params: Mapping[str, str], found: Found) -> Found:
    challenge = params.get("code_challenge")
    method = params.get("code_challenge_method")
    if challenge is None:
        if method is not None:
            raise entra_error("MissingRequiredParameter", name="code_challenge")
        return {"code_challenge": None, "code_challenge_method": None}
    if not CODE_CHALLENGE.fullmatch(challenge):
        raise entra_error("InvalidCodeChallengeSize")
    # Without a method the challenge is plain (RFC 7636 §4.3).
    method = method or "plain"
    if method not in PKCE_METHODS:
        raise entra_error("InvalidRequestParameter", name="code_challenge_method")
    return {"code_challenge": challenge, "code_challenge_method": method}


def check_prompt(params: Mapping[str, str], found: Found) -> Found:
    prompt = frozenset(params.get("prompt", "").split())
    if not prompt <= set(PROMPTS) or ("none" in prompt and len(prompt) > 1):
        raise entra_error("UnsupportedPrompt")
    return {"prompt": prompt}


def check_max_age(params: Mapping[str, str], found: Found) -> Found:
    value = params.get("max_age")
    if value is None or value == "":
        return {"max_age": None}
    if not value.isdigit():
        raise entra_error("InvalidRequestParameter", name="max_age")
    return {"max_age": int(value)}


def check_id_token_hint(params: Mapping[str, str], found: Found) -> Found:
    """An ID token we issued to this app names the user expected (expired ones are fine)."""
    hint = params.get("id_token_hint")
    if not hint:
        return {"hinted_user_id": None}
    state = current_state()
    try:
        kid = jwt.get_unverified_header(hint).get("kid")
        key = state.keys.public_key_for(kid) if isinstance(kid, str) else None
        if key is None:
            raise jwt.InvalidTokenError("signed with an unknown key")
        claims = jwt.decode(hint, key, algorithms=["RS256"], audience=found["client"].app_id,
                            issuer=state.issuer(found["tenant_id"]),
                            options={"verify_exp": False, "require": ["oid"]})
    except jwt.PyJWTError as problem:
        raise entra_error("InvalidJwtToken", reason=f"id_token_hint: {problem}") from None
    return {"hinted_user_id": str(claims["oid"])}


Check = Callable[[Mapping[str, str], Found], Found]

# Until the redirect URI is known to be the app's, a failure is Entra's error page.
ERROR_PAGE_CHECKS: tuple[Check, ...] = (check_tenant, check_client, check_redirect_uri)

# Then failures go back to the app at that redirect URI, with `state`.
ERROR_REDIRECT_CHECKS: tuple[Check, ...] = (
    check_response_mode, check_response_type, check_scope, check_pkce, check_prompt,
    check_max_age, check_id_token_hint, check_claims,
)


def read_authorization_request(params: Mapping[str, str],
                               tenant_segment: str) -> AuthorizationRequest:
    """Raises EntraError (show the error page) or ErrorRedirect (tell the app)."""
    found: dict[str, Any] = {"tenant_segment": tenant_segment}
    # An oversized request is refused before any check reads it (AADSTS90015).
    check_lengths(params, ERROR_PAGE_LIMITS)
    for check in ERROR_PAGE_CHECKS:
        found.update(check(params, found))
    # An oversized state is not echoed back in the error redirect.
    state = None if over_limit(params, "state") else params.get("state")
    try:
        check_lengths(params, ERROR_REDIRECT_LIMITS)
    except EntraError as err:   # answered in the query: response_mode is not read yet
        raise ErrorRedirect(err, found["redirect_uri"], "query", state,
                            client_id=found["client"].app_id,
                            tenant_id=found["tenant_id"]) from None
    for check in ERROR_REDIRECT_CHECKS:
        try:
            found.update(check(params, found))
        except EntraError as err:
            # Until response_mode is read (and when it is what failed), answer in the query.
            raise ErrorRedirect(err, found["redirect_uri"], found.get("response_mode", "query"),
                                state, client_id=found["client"].app_id,
                                tenant_id=found["tenant_id"]) from None
    return AuthorizationRequest(
        **found, state=state, nonce=params.get("nonce"),
        login_hint=params.get("login_hint") or None,
        client_info=params.get("client_info") == "1")
