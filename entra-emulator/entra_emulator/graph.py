"""Microsoft Graph v1.0 `/me` and `/me/photo`, answered the way Graph answers them.

Protocol rules (token checks, property selection, error shapes) are small functions; the
Flask views at the bottom only glue them together. Reference: entra-protocol.md section 4.
"""

from __future__ import annotations

import json
import uuid
import zlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from flask import Blueprint, Response, g, request

from entra_emulator.context import current_state
from entra_emulator.directory import User
from entra_emulator.graph_photo import Photo, user_photo
from entra_emulator.scopes import GRAPH_APP_ID
from entra_emulator.state import EmulatorState

bp = Blueprint("graph", __name__)

# Graph accepts both audience forms a v1 token can carry.
GRAPH_AUDIENCES = (GRAPH_APP_ID, "https://graph.microsoft.com", "https://graph.microsoft.com/")
# Microsoft.IdentityModel's default clock skew, which Graph's token validation uses.
CLOCK_SKEW_SECONDS = 300

# Delegated permissions that allow GET /me (Graph's "user-get" permission table), lowercase
# because Graph compares scope names case-insensitively.
ME_SCOPES = frozenset({
    "user.read", "user.readwrite", "user.readbasic.all", "user.read.all",
    "user.readwrite.all", "directory.read.all", "directory.readwrite.all",
})

# The 11 properties /me returns without $select, in Graph's wire order (id last).
DEFAULT_PROPERTIES = (
    "businessPhones", "displayName", "givenName", "jobTitle", "mail", "mobilePhone",
    "officeLocation", "preferredLanguage", "surname", "userPrincipalName", "id",
)

# Collection-valued properties: Graph answers [] rather than null when they are empty.
COLLECTION_PROPERTIES = frozenset({
    "assignedLicenses", "assignedPlans", "businessPhones", "identities", "imAddresses",
    "interests", "licenseAssignmentStates", "onPremisesProvisioningErrors", "otherMails",
    "pastProjects", "provisionedPlans", "proxyAddresses", "responsibilities", "schools",
    "serviceProvisioningErrors", "skills",
})

# Properties Graph never returns a value for on read (it answers null when selected).
WRITE_ONLY_PROPERTIES = frozenset({"passwordProfile"})

# Properties of microsoft.graph.user (v1.0) that $select may name.
USER_PROPERTIES = DEFAULT_PROPERTIES + (
    "aboutMe", "accountEnabled", "ageGroup", "assignedLicenses", "assignedPlans",
    "authorizationInfo", "birthday", "city", "companyName", "consentProvidedForMinor",
    "country", "createdDateTime", "creationType", "customSecurityAttributes",
    "deletedDateTime", "department", "employeeHireDate", "employeeId",
    "employeeLeaveDateTime", "employeeOrgData", "employeeType", "externalUserState",
    "externalUserStateChangeDateTime", "faxNumber", "hireDate", "identities", "imAddresses",
    "interests", "isManagementRestricted", "isResourceAccount", "lastPasswordChangeDateTime",
    "legalAgeGroupClassification", "licenseAssignmentStates", "mailboxSettings",
    "mailNickname", "mySite", "onPremisesDistinguishedName", "onPremisesDomainName",
    "onPremisesExtensionAttributes", "onPremisesImmutableId", "onPremisesLastSyncDateTime",
    "onPremisesProvisioningErrors", "onPremisesSamAccountName",
    "onPremisesSecurityIdentifier", "onPremisesSyncEnabled", "onPremisesUserPrincipalName",
    "otherMails", "passwordPolicies", "passwordProfile", "pastProjects", "postalCode",
    "preferredDataLocation", "preferredName", "provisionedPlans", "proxyAddresses",
    "responsibilities", "schools", "securityIdentifier", "serviceProvisioningErrors",
    "showInAddressList", "signInActivity", "signInSessionsValidFromDateTime", "skills",
    "state", "streetAddress", "usageLocation", "userType",
)
_PROPERTY_BY_LOWER_NAME = {name.lower(): name for name in USER_PROPERTIES}

JSON_ODATA = (
    "application/json;odata.metadata=minimal;odata.streaming=true;"
    "IEEE754Compatible=false;charset=utf-8"
)


# ---------------------------------------------------------------------------------------------
# Graph's error shape and request ids
# ---------------------------------------------------------------------------------------------

class GraphError(Exception):
    """A Graph error answer: raised by the checks, rendered by `graph_error_response`."""

    def __init__(self, status: int, code: str, message: str, *,
                 www_authenticate: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.www_authenticate = www_authenticate


def request_ids() -> tuple[str, str]:
    """This request's (request-id, client-request-id); the caller's client-request-id is echoed."""
    ids = g.get("graph_request_ids")
    if ids is None:
        request_id = str(uuid.uuid4())
        sent = request.headers.get("client-request-id", "").strip()
        # Graph echoes whatever the caller sent; bound it so it cannot bloat our headers.
        client_request_id = sent if 0 < len(sent) <= 200 and sent.isprintable() else request_id
        ids = g.graph_request_ids = (request_id, client_request_id)
    return ids


def graph_date() -> str:
    """Graph's innerError date: UTC, seconds, no zone suffix (e.g. 2021-09-11T08:43:56)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _diagnostic_header() -> str:
    return json.dumps({"ServerInfo": {"DataCenter": "Local", "Slice": "E", "Ring": "5",
                                      "ScaleUnit": "000", "RoleInstance": "entra-emulator"}},
                      separators=(",", ":"))


def add_graph_headers(response: Response) -> Response:
    request_id, client_request_id = request_ids()
    response.headers["request-id"] = request_id
    response.headers["client-request-id"] = client_request_id
    response.headers["x-ms-ags-diagnostic"] = _diagnostic_header()
    response.headers.setdefault("Cache-Control", "no-cache")
    return response


def graph_json_response(status: int, body: Mapping[str, Any], *,
                        content_type: str = "application/json",
                        headers: Mapping[str, str] | None = None) -> Response:
    # json.dumps rather than jsonify: Flask sorts keys, and Graph's key order is part of its shape.
    payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    response = Response(payload, status=status, content_type=content_type)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return add_graph_headers(response)


def graph_error_response(status: int, code: str, message: str, *,
                         headers: Mapping[str, str] | None = None,
                         inner_error: Mapping[str, Any] | None = None) -> Response:
    """Graph's error body: {"error": {code, message, innerError: {date, request-id, ...}}}."""
    request_id, client_request_id = request_ids()
    inner = dict(inner_error) if inner_error is not None else {
        "date": graph_date(), "request-id": request_id, "client-request-id": client_request_id,
    }
    body = {"error": {"code": code, "message": message, "innerError": inner}}
    return graph_json_response(status, body, headers=headers)


def graph_www_authenticate(extra: str = "") -> str:
    """Graph's Bearer challenge. Graph names its own authority; ours is the emulator."""
    state = current_state()
    challenge = (f'Bearer realm="", authorization_uri="{state.http_base}/common/oauth2/authorize"'
                 f', client_id="{GRAPH_APP_ID}"')
    return f"{challenge}, {extra}" if extra else challenge


@bp.errorhandler(GraphError)
def _render_graph_error(error: GraphError) -> Response:
    headers = {"WWW-Authenticate": error.www_authenticate} if error.www_authenticate else None
    return graph_error_response(error.status, error.code, error.message, headers=headers)


# ---------------------------------------------------------------------------------------------
# Bearer token checks, in the order Graph applies them
# ---------------------------------------------------------------------------------------------

def _unauthorized(message: str) -> GraphError:
    return GraphError(401, "InvalidAuthenticationToken", message,
                      www_authenticate=graph_www_authenticate())


def bearer_token_from(authorization: str | None) -> str:
    scheme, _, token = (authorization or "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise _unauthorized("Access token is empty.")
    return token


def token_header(token: str) -> dict[str, Any]:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        header = None
    if token.count(".") != 2 or not isinstance(header, dict):
        # What Graph says for an opaque or garbled token.
        raise _unauthorized("CompactToken parsing failed with error code: 80049217")
    return header


def signing_key_for(state: EmulatorState, header: Mapping[str, Any]) -> RSAPublicKey:
    """RS256 only, and only a key the emulator publishes: never a key named by the token."""
    kid = header.get("kid")
    key = state.keys.public_key_for(kid) if isinstance(kid, str) else None
    if header.get("alg") != "RS256" or key is None:
        raise _unauthorized("Access token validation failure.")
    return key


def verified_claims(token: str, key: RSAPublicKey, now: float) -> dict[str, Any]:
    """Signature and audience, then lifetime against the emulator's clock (which tests may
    move), mapped to the messages Graph sends for each."""
    try:
        claims = jwt.decode(token, key, algorithms=["RS256"], audience=list(GRAPH_AUDIENCES),
                            options={"require": ["exp", "aud"], "verify_exp": False,
                                     "verify_nbf": False, "verify_iat": False})
    except jwt.InvalidAudienceError:
        raise _unauthorized("Access token validation failure. Invalid audience.") from None
    except jwt.PyJWTError:
        raise _unauthorized("Access token validation failure.") from None
    require_current(claims, now)
    return claims


def require_current(claims: Mapping[str, Any], now: float) -> None:
    exp, nbf = claims.get("exp"), claims.get("nbf", claims.get("iat"))
    if not _is_number(exp) or (nbf is not None and not _is_number(nbf)):
        raise _unauthorized("Access token validation failure.")
    if now > exp + CLOCK_SKEW_SECONDS:
        raise _unauthorized("Lifetime validation failed, the token is expired.")
    if nbf is not None and now < nbf - CLOCK_SKEW_SECONDS:
        raise _unauthorized("Access token has expired or is not yet valid.")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def require_tenant(state: EmulatorState, claims: Mapping[str, Any]) -> None:
    if claims.get("tid") != state.directory.tenant_id:
        raise _unauthorized("Access token validation failure. Invalid issuer.")


def require_delegated_user_read(claims: Mapping[str, Any]) -> None:
    scp = claims.get("scp")
    if not isinstance(scp, str):
        if "roles" in claims or claims.get("idtyp") == "app":
            raise GraphError(400, "BadRequest",
                             "/me request is only valid with delegated authentication flow.")
        scp = ""
    if not ME_SCOPES.intersection(scope.lower() for scope in scp.split()):
        raise GraphError(403, "Authorization_RequestDenied",
                         "Insufficient privileges to complete the operation.")


def authenticated_claims(state: EmulatorState, *, user_read: bool = True) -> dict[str, Any]:
    """The bearer token's claims, checked; `user_read=False` leaves the permission check to
    the caller (graph_membership.py's calls accept other permissions too)."""
    token = bearer_token_from(request.headers.get("Authorization"))
    header = token_header(token)
    key = signing_key_for(state, header)
    claims = verified_claims(token, key, state.clock.now())
    if state.access_token_revoked(claims):
        # Issued from a code that was then redeemed twice (RFC 6749 §4.1.2).
        raise _unauthorized("Access token validation failure.")
    require_tenant(state, claims)
    if user_read:
        require_delegated_user_read(claims)
    return claims


# ---------------------------------------------------------------------------------------------
# The signed-in user
# ---------------------------------------------------------------------------------------------

def signed_in_user(state: EmulatorState, claims: Mapping[str, Any]) -> User:
    oid = claims.get("oid")
    user = state.directory.user_by_id(oid)
    if user is None:
        raise GraphError(404, "Request_ResourceNotFound",
                         f"Resource '{oid}' does not exist or one of its queried "
                         "reference-property objects are not present.")
    return user


# ---------------------------------------------------------------------------------------------
# $select and the user resource
# ---------------------------------------------------------------------------------------------

def selected_properties(select: str | None,
                        resource: Mapping[str, Any]) -> tuple[str, ...] | None:
    """Property names named by $select, in the caller's order; None for the defaults.

    Graph matches names case-insensitively and answers with the schema's spelling. Besides
    the schema's properties, any property the directory gives this user may be selected.
    """
    known = {**_PROPERTY_BY_LOWER_NAME, **{name.lower(): name for name in resource}}
    return parse_select(select, known, "microsoft.graph.user")


def parse_select(select: str | None, known: Mapping[str, str],
                 type_name: str) -> tuple[str, ...] | None:
    """$select's names, matched case-insensitively to `known` (lower-case name -> the schema's
    spelling), once each, in the caller's order; None when it names none."""
    if select is None or not select.strip():
        return None
    chosen: list[str] = []
    for raw in select.split(","):
        name = raw.strip()
        if not name:
            continue
        canonical = known.get(name.lower())
        if canonical is None:
            raise GraphError(400, "BadRequest", f"Could not find a property named '{name}' on "
                             f"type '{type_name}'.")
        if canonical not in chosen:
            chosen.append(canonical)
    return tuple(chosen) or None


def property_value(user: Mapping[str, Any], name: str) -> Any:
    if name in WRITE_ONLY_PROPERTIES:
        return None
    value = user.get(name)
    if value is None and name in COLLECTION_PROPERTIES:
        return []
    return value


def user_resource(user: Mapping[str, Any], selection: tuple[str, ...] | None,
                  service_root: str) -> dict[str, Any]:
    if selection is None:
        context = f"{service_root}/$metadata#users/$entity"
        names: tuple[str, ...] = DEFAULT_PROPERTIES
    else:
        context = f"{service_root}/$metadata#users({','.join(selection)})/$entity"
        names = selection
    resource: dict[str, Any] = {"@odata.context": context}
    for name in names:
        resource[name] = property_value(user, name)
    return resource


# ---------------------------------------------------------------------------------------------
# Photos
# ---------------------------------------------------------------------------------------------



# ---------------------------------------------------------------------------------------------
# Views
# ---------------------------------------------------------------------------------------------

def found_photo(user: User) -> Photo:
    photo = user_photo(user)
    if photo is None:
        raise GraphError(404, "ImageNotFound", "Exception of type "
                         "'Microsoft.Fast.Profile.Core.Exception.ImageNotFoundException' was "
                         "thrown.")
    return photo


def service_root(state: EmulatorState) -> str:
    # The OData service root is where this Graph is served, as graph.microsoft.com/v1.0 is Graph's.
    return f"{state.https_base}/v1.0"


@bp.before_request
def _injected_fault() -> Response | None:
    response = current_state().faults.intercept("graph")
    return add_graph_headers(response) if response is not None else None


@bp.after_request
def _graph_headers(response: Response) -> Response:
    if "request-id" not in response.headers:
        add_graph_headers(response)
    return response


@bp.get("/v1.0/me", strict_slashes=False)
def me() -> Response:
    state = current_state()
    user = signed_in_user(state, authenticated_claims(state))
    # v1.0 takes query options with or without the $ prefix.
    select = request.args.get("$select", request.args.get("select"))
    selection = selected_properties(select, user.graph)
    resource = user_resource(user.graph, selection, service_root(state))
    return graph_json_response(200, resource, content_type=JSON_ODATA,
                               headers={"OData-Version": "4.0"})


@bp.get("/v1.0/me/photo", strict_slashes=False)
def me_photo() -> Response:
    state = current_state()
    user = signed_in_user(state, authenticated_claims(state))
    photo = found_photo(user)
    size_id = f"{photo.width}X{photo.height}" if photo.width and photo.height else "default"
    metadata = {
        "@odata.context": f"{service_root(state)}/$metadata#users('{user.id}')"
                          "/photo/$entity",
        "@odata.mediaContentType": photo.content_type,
        "@odata.mediaEtag": f'"{zlib.crc32(photo.data):08X}"',
        "id": size_id,
        "height": photo.height,
        "width": photo.width,
    }
    return graph_json_response(200, metadata, content_type=JSON_ODATA,
                               headers={"OData-Version": "4.0"})


@bp.get("/v1.0/me/photo/$value", strict_slashes=False)
def me_photo_value() -> Response:
    state = current_state()
    user = signed_in_user(state, authenticated_claims(state))
    photo = found_photo(user)
    response = Response(photo.data, status=200, content_type=photo.content_type)
    response.headers["ETag"] = f'"{zlib.crc32(photo.data):08X}"'
    return add_graph_headers(response)


# The resources this Graph serves, for naming the first segment it does not know.
_SERVED_SEGMENTS: dict[str, dict] = {"me": {
    "photo": {"$value": {}}, "getMemberGroups": {}, "getMemberObjects": {}, "memberOf": {},
    "transitiveMemberOf": {}}}


def first_unknown_segment(path: str) -> str | None:
    served = _SERVED_SEGMENTS
    for segment in (part for part in path.split("/") if part):
        if segment not in served:
            return segment
        served = served[segment]
    return None


@bp.route("/v1.0/<path:rest>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
def unknown_resource(rest: str) -> Response:
    """Anything else under /v1.0 gets Graph's answer for a request it cannot route."""
    segment = first_unknown_segment(rest)
    if segment is None:   # a resource served here, with a method it does not serve
        raise GraphError(405, "Request_BadRequest",
                         "Specified HTTP method is not allowed for the request target.")
    raise GraphError(400, "BadRequest", f"Resource not found for the segment '{segment}'.")
