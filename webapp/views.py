"""The pages: home, the Graph profile, the ID token's claims."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, current_app, render_template
from flask.typing import ResponseReturnValue

from flask_entra import InteractionRequired, has_group_overage

from .errors import AppError
from .extensions import auth
from .graph import claims_challenge, graph_error, photo_data_uri

bp = Blueprint("views", __name__)

CLAIM_EXPLANATIONS = {
    "aud": "Audience: the app this token is for (this app's client ID).",
    "iss": "Issuer: the identity provider (and tenant) that issued the token.",
    "iat": "Issued at.",
    "nbf": "Not valid before.",
    "exp": "Expires at. This app's session does not depend on it.",
    "sub": "Subject: a stable identifier of the user, unique to this app.",
    "oid": "Object ID of the user in the directory (the same as Graph's id).",
    "tid": "Tenant ID: the directory the user signed in to.",
    "name": "The user's display name.",
    "preferred_username": "The user's sign-in name (UPN or email). Shown, never trusted for "
                          "authorization: it can change.",
    "email": "The user's email address, if released.",
    "login_hint": "An opaque hint the app sends at sign-out to skip the account picker.",
    "nonce": "Ties the token to this app's sign-in request (replay protection).",
    "ver": "Token format version.",
    "sid": "The provider's session ID.",
    "auth_time": "When the user last entered credentials.",
    "amr": "How the user authenticated.",
    "idp": "The identity provider that authenticated the user (for guests).",
    "roles": "App roles assigned to the user.",
    "groups": "Groups the user belongs to.",
    "_claim_names": "Where claims too large for the token are: past Entra's group limit, "
                    "\"groups\" points to Microsoft Graph (the overage).",
    "_claim_sources": "The endpoint named by _claim_names.",
    "hasgroups": "The user is in more groups than the token can list.",
    "azp": "Authorized party: the app the token was issued to.",
    "aio": "Opaque, used by Microsoft Entra internally.",
    "rh": "Opaque, used by Microsoft Entra internally.",
    "uti": "Opaque token identifier, used by Microsoft Entra internally.",
}
TIMESTAMP_CLAIMS = frozenset({"iat", "nbf", "exp", "auth_time"})
PROFILE_FIELDS = (
    ("jobTitle", "Job title"), ("mail", "Email"), ("userPrincipalName", "User principal name"),
    ("officeLocation", "Office"), ("mobilePhone", "Mobile"), ("businessPhones", "Business phone"),
    ("preferredLanguage", "Language"), ("id", "Object ID"),
)


@bp.get("/")
def index() -> ResponseReturnValue:
    return render_template("index.html", user=auth.get_user(),
                           signed_out=auth.returned_from_sign_out())


def access_token(claims_challenge: str | None = None) -> str:
    """An access token for SCOPE; the user is sent to the provider (sign in, consent to a new
    scope, or satisfy a claims challenge) when only they can help."""
    scopes = list(current_app.extensions["webapp"].settings.scopes)
    result = auth.get_token_for_user(scopes, claims_challenge=claims_challenge)
    if "access_token" not in result:
        raise InteractionRequired(result.get("error_description", "Please sign in again."),
                                  scopes=scopes, claims_challenge=claims_challenge)
    return result["access_token"]


@bp.get("/graph")
@auth.login_required
def call_graph(*, context: dict[str, Any]) -> ResponseReturnValue:
    graph = current_app.extensions["webapp"].graph
    token = access_token()
    result = graph.get(graph.endpoint, token)
    challenge = claims_challenge(result)
    if challenge:
        # Continuous access evaluation: get a token that satisfies the claims, then retry once.
        token = access_token(claims_challenge=challenge)
        result = graph.get(graph.endpoint, token)
    if not result.ok:
        raise graph_error(result)
    profile = result.json()
    if not isinstance(profile, dict):
        raise graph_error(result)
    photo = None
    if graph.photo_url:
        try:
            photo = photo_data_uri(graph.get(graph.photo_url, token))
        except AppError:
            photo = None  # the card shows initials; the profile itself arrived
    fields = [(label, _display(profile.get(key))) for key, label in PROFILE_FIELDS
              if profile.get(key) not in (None, "", [])]
    return render_template(
        "graph.html", user=context["user"], profile=profile, fields=fields, photo=photo,
        initials=_initials(profile.get("displayName")), endpoint=graph.endpoint,
        raw_json=json.dumps(profile, indent=2, ensure_ascii=False))


@bp.get("/claims")
@auth.login_required
def claims(*, context: dict[str, Any]) -> ResponseReturnValue:
    rows = [(name, _claim_value(name, value), CLAIM_EXPLANATIONS.get(name, ""))
            for name, value in context["user"].items()]
    # Past Entra's group limit the token only says "ask Graph": flask_entra does, once.
    return render_template("claims.html", user=context["user"], rows=rows,
                           groups=auth.get_groups(),
                           groups_from_graph=has_group_overage(context["user"]))


def _claim_value(name: str, value: Any) -> str:
    """The claim as sent; a time claim also as a date, when it is a date this app can show."""
    shown = _display(value)
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if name not in TIMESTAMP_CLAIMS or not is_number:
        return shown
    try:
        when = datetime.fromtimestamp(value, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        return shown  # beyond the dates this platform can represent, or NaN
    return f"{shown} ({when})"


def _display(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _initials(name: Any) -> str:
    """Up to two initials of a display name; "?" when Graph sent none (or not a string)."""
    if not isinstance(name, str):
        return "?"
    return "".join(part[0] for part in name.split()[:2]).upper() or "?"
