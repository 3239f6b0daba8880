"""Protecting a web API: bearer access tokens checked as Microsoft.Identity.Web checks them, and
on-behalf-of for an API that calls another API (Graph) as its caller.

    @app.get("/api/todos")
    @auth.token_required(scopes=["ToDoList.Read"], roles=["ToDoList.Read.All"])
    def todos(*, context): ...      # context: claims, access_token, app_only

A token is checked by the one JWT check (provider.verify_jwt): signature against the JWKS (a
token without `kid` only while one key is published), `iss` with Entra's multi-tenant
{tenantid} and the tenant allow-list, `aud` in its v1 (`api://…` or another identifier URI) and
v2 (the app id) forms, `exp`/`nbf`. Then delegated tokens need one of `scopes` in `scp`, app-only
tokens (no `scp`) one of `roles` in `roles`; tokens with neither are refused. Failures answer as
RFC 6750 says, with JSON bodies: 401 `invalid_token` (bad or missing token), 403
`insufficient_scope`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

from flask import current_app, jsonify, request
from flask.typing import ResponseReturnValue

from .authorization import user_roles
from .provider import TokenError, provider_calls
from .sealing import SealError

MAX_AUTHORIZATION_CHARS = 16 * 1024
OBO_PREFIX = "obo:"
OBO_MARGIN_SECONDS = 5 * 60  # as MSAL, a token with less left is not served from the cache


def token_required(function: Callable[..., Any] | None = None, /, *,
                   scopes: list[str] | None = None, roles: list[str] | None = None) -> Any:
    if function is None:
        return functools.partial(token_required, scopes=scopes, roles=roles)
    wanted_scopes, wanted_roles = set(scopes or ()), set(roles or ())

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> ResponseReturnValue:
        header = request.headers.get("Authorization", "")
        if len(header) > MAX_AUTHORIZATION_CHARS or header[:7].lower() != "bearer ":
            return bearer_error(401, None, "A bearer access token is required.")
        token = header[7:].strip()
        state = current_app.extensions["flask_entra"]
        try:
            claims = state.provider.verify_jwt(
                token, kind="access token", require=["iss", "aud", "exp"],
                audiences=state.settings.api_audiences, accept_v1_issuer=True)
        except TokenError as exc:
            message = str(exc)
            return bearer_error(401, "invalid_token", f"{message[:1].upper()}{message[1:]}.")
        granted_scopes = set(str(claims.get("scp") or "").split())
        granted_roles = set(user_roles(claims))
        if not granted_scopes and not granted_roles:
            return bearer_error(401, "invalid_token", "The token carries neither scp nor roles.")
        app_only = not granted_scopes
        if app_only and not granted_roles & wanted_roles:
            return bearer_error(403, "insufficient_scope", "An application permission (role) "
                                f"this API needs is missing: {' or '.join(sorted(wanted_roles))}"
                                if wanted_roles else "This API takes no app-only tokens.",
                                scope=" ".join(sorted(wanted_roles)))
        if not app_only and not granted_scopes & wanted_scopes:
            return bearer_error(403, "insufficient_scope", "A permission (scope) this API needs "
                                f"is missing: {' or '.join(sorted(wanted_scopes))}"
                                if wanted_scopes else "This API takes no delegated tokens.",
                                scope=" ".join(sorted(wanted_scopes)))
        context = {"claims": claims, "access_token": token, "app_only": app_only}
        return function(*args, context=context, **kwargs)

    return wrapper


def bearer_error(status: int, error: str | None, description: str,
                 scope: str = "") -> ResponseReturnValue:
    """RFC 6750 §3: the WWW-Authenticate challenge, and the same in a JSON body."""
    challenge = "Bearer"
    if error:
        challenge += f' error="{error}", error_description="{_quoted(description)}"'
        if scope:
            challenge += f', scope="{_quoted(scope)}"'
    body = {"error": error or "unauthorized", "error_description": description}
    response = jsonify(body)
    response.status_code = status
    response.headers["WWW-Authenticate"] = challenge
    response.headers["Cache-Control"] = "no-store"
    return response


def _quoted(text: str) -> str:
    return text.replace("\\", "").replace('"', "'")


def acquire_token_on_behalf_of(context: dict[str, Any], scopes: list[str]) -> dict[str, Any]:
    """A token for `scopes` on behalf of the caller of a token_required view (MSAL's answer, or
    a dict with `error`). Kept per caller and scopes, sealed in the store, until 5 minutes
    before it expires: MSAL Python does not cache on-behalf-of tokens itself."""
    state = current_app.extensions["flask_entra"]
    claims = context["claims"]
    if context.get("app_only"):
        return {"error": "invalid_request",
                "error_description": "On-behalf-of needs a user's token, not an app-only one."}
    key = OBO_PREFIX + hashlib.sha256(json.dumps(
        [claims.get("tid"), claims.get("oid") or claims.get("sub"), sorted(scopes),
         hashlib.sha256(context["access_token"].encode()).hexdigest()]).encode()).hexdigest()
    cached = _cached(state, key)
    if cached is not None:
        return cached
    app = state.tokens.msal_app()
    with provider_calls(state.settings.authority_url):
        result = app.acquire_token_on_behalf_of(context["access_token"], scopes)
    if "access_token" in result:
        lasts = int(result.get("expires_in", 0)) - OBO_MARGIN_SECONDS
        if lasts > 0:
            kept = {k: result[k] for k in ("access_token", "token_type", "expires_in", "scope")
                    if k in result}
            kept["expires_on"] = time.time() + int(result["expires_in"])
            state.store.set(key, state.tokens.sealer.seal(json.dumps(kept).encode()), lasts)
    return {k: v for k, v in result.items() if k not in ("refresh_token", "id_token")}


def _cached(state: Any, key: str) -> dict[str, Any] | None:
    sealed = state.store.get(key)
    if sealed is None:
        return None
    try:
        kept = json.loads(state.tokens.sealer.open(sealed))
    except (SealError, ValueError):
        return None
    left = kept.pop("expires_on", 0) - time.time()
    if left <= OBO_MARGIN_SECONDS:
        return None
    kept["expires_in"] = int(left)
    return kept
