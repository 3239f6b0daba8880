"""Microsoft Graph v1.0 group membership of the signed-in user: `POST /me/getMemberGroups`,
`POST /me/getMemberObjects`, `GET /me/memberOf` (direct) and `GET /me/transitiveMemberOf`.

What an app calls when a token carries the groups overage (entra-authorization.md §2.5–2.6).
The views are added to graph.py's blueprint, so they share its fault injection, its headers
and its error shape; each checks the delegated permissions Graph requires for it:

| call                   | needs (delegated, `/me`)                                        |
|------------------------|-----------------------------------------------------------------|
| getMemberGroups        | User.Read **and** GroupMember.Read.All or Group.Read.All         |
| getMemberObjects       | User.Read                                                        |
| memberOf, transitive…  | User.Read (groups then carry only `@odata.type` and `id`, other  |
|                        | properties null, unless a group permission is granted too)       |

Collections are paged: `$top` 1–999 (default 100), `@odata.nextLink` carrying a `$skiptoken`
of the emulator's own form (Graph's is opaque; the form is [inferred]).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from flask import Response, request
from werkzeug.exceptions import RequestEntityTooLarge

from entra_emulator import graph
from entra_emulator.context import current_state
from entra_emulator.graph import GraphError, bp, parse_select, service_root
from entra_emulator.jsonsafe import UnsafeJson
from entra_emulator.jsonsafe import loads as bounded_json_loads
from entra_emulator.state import EmulatorState

if TYPE_CHECKING:
    from entra_emulator.directory import Group

# Lowercase: Graph compares permission names case-insensitively.
GROUP_READ_SCOPES = frozenset({
    "groupmember.read.all", "groupmember.readwrite.all", "group.read.all",
    "group.readwrite.all", "directory.read.all", "directory.readwrite.all",
})
# getMemberGroups answers at most this many ids
# (learn.microsoft.com/graph/api/user-getmembergroups).
MEMBER_GROUPS_LIMIT = 11_000
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 999

# A group's properties in a directoryObjects collection, in Graph's wire order.
GROUP_PROPERTIES = (
    "id", "deletedDateTime", "classification", "createdDateTime", "creationOptions",
    "description", "displayName", "expirationDateTime", "groupTypes", "isAssignableToRole",
    "mail", "mailEnabled", "mailNickname", "membershipRule", "membershipRuleProcessingState",
    "onPremisesDomainName", "onPremisesLastSyncDateTime", "onPremisesNetBiosName",
    "onPremisesSamAccountName", "onPremisesSecurityIdentifier", "onPremisesSyncEnabled",
    "preferredDataLocation", "preferredLanguage", "proxyAddresses", "renewedDateTime",
    "resourceBehaviorOptions", "resourceProvisioningOptions", "securityEnabled",
    "securityIdentifier", "theme", "visibility", "onPremisesProvisioningErrors",
    "serviceProvisioningErrors",
)
_COLLECTIONS = frozenset({"creationOptions", "groupTypes", "proxyAddresses",
                          "resourceBehaviorOptions", "resourceProvisioningOptions",
                          "onPremisesProvisioningErrors", "serviceProvisioningErrors"})
_PROPERTY_BY_LOWER = {name.lower(): name for name in GROUP_PROPERTIES}
# Query options Graph supports on these collections that the emulator does not implement: an
# answer that ignored them would be silently wrong, so they are refused.
_UNSUPPORTED_OPTIONS = ("$filter", "$search", "$orderby", "$expand", "$count", "$skip")
_ACTION_PARAMETER = "securityEnabledOnly"


# ---------------------------------------------------------------------------------------------
# Who is asking, and may they
# ---------------------------------------------------------------------------------------------

def caller(state: EmulatorState) -> tuple[str, frozenset[str]]:
    """(the signed-in user's id, its delegated permissions, lowercase), after graph.py's token
    checks. App-only tokens get Graph's answer for `/me` without a user."""
    claims = graph.authenticated_claims(state, user_read=False)
    scp = claims.get("scp")
    if not isinstance(scp, str):
        if "roles" in claims or claims.get("idtyp") == "app":
            raise GraphError(400, "BadRequest",
                             "/me request is only valid with delegated authentication flow.")
        scp = ""
    scopes = frozenset(scope.lower() for scope in scp.split())
    return graph.signed_in_user(state, claims).id, scopes


def require(scopes: frozenset[str], *needed: frozenset[str]) -> None:
    """Each of `needed` must share a permission with `scopes`, else Graph's 403."""
    for alternatives in needed:
        if not scopes & alternatives:
            raise GraphError(403, "Authorization_RequestDenied",
                             "Insufficient privileges to complete the operation.")


# ---------------------------------------------------------------------------------------------
# The actions: getMemberGroups, getMemberObjects
# ---------------------------------------------------------------------------------------------

def _bad_request(message: str) -> GraphError:
    return GraphError(400, "BadRequest", message)


def security_enabled_only(action: str) -> bool:
    """The action's one parameter from the JSON body, checked as Graph's OData layer does.
    The texts for a missing or extra parameter are [inferred] from OData's wording."""
    try:
        raw = request.get_data(cache=False)
    except RequestEntityTooLarge:
        raise GraphError(413, "Request_EntityTooLarge",
                         "The request payload is too large.") from None
    try:
        body = bounded_json_loads(raw or b"")
    except UnsafeJson:
        body = None
    if not isinstance(body, dict):
        raise _bad_request("Unable to read JSON request payload. Please ensure Content-Type "
                           "header is set and payload is of valid JSON format.")
    for name in body:
        if name != _ACTION_PARAMETER:
            raise _bad_request(f"The parameter '{name}' in the request payload is not a valid "
                               f"parameter for the operation '{action}'.")
    value = body.get(_ACTION_PARAMETER)
    if value is None:
        raise _bad_request(f"The parameter '{_ACTION_PARAMETER}' in the request payload is "
                           "required and cannot be null.")
    if not isinstance(value, bool):
        raise _bad_request(f"Cannot convert the literal '{value}' to the expected type "
                           "'Edm.Boolean'.")
    return value


def _string_collection(state: EmulatorState, ids: Sequence[str]) -> Response:
    body = {"@odata.context": f"{service_root(state)}/$metadata#Collection(Edm.String)",
            "value": list(ids)}
    return graph.graph_json_response(200, body, content_type=graph.JSON_ODATA,
                                     headers={"OData-Version": "4.0"})


def member_group_ids(state: EmulatorState, user_id: str, security_only: bool) -> list[str]:
    """Every group the user belongs to, nested groups included; securityEnabledOnly keeps the
    security groups. (`false` is accepted for users too, as Microsoft's sample sends it.)"""
    groups = state.directory.transitive_groups(user_id)
    return [g.id for g in groups if g.security_enabled or not security_only]


@bp.post("/v1.0/me/getMemberGroups", strict_slashes=False)
def get_member_groups() -> Response:
    state = current_state()
    user_id, scopes = caller(state)
    require(scopes, graph.ME_SCOPES, GROUP_READ_SCOPES)
    ids = member_group_ids(state, user_id, security_enabled_only("getMemberGroups"))
    if len(ids) > MEMBER_GROUPS_LIMIT:
        # Graph's code; its message text was not captured [inferred].
        raise GraphError(400, "Directory_ResultSizeLimitExceeded",
                         "Request Directory_ResultSizeLimitExceeded: the user is a member of "
                         f"more than {MEMBER_GROUPS_LIMIT} groups. Use "
                         "/me/transitiveMemberOf, which is paged.")
    return _string_collection(state, ids)


@bp.post("/v1.0/me/getMemberObjects", strict_slashes=False)
def get_member_objects() -> Response:
    # Groups, directory roles and administrative units; the emulator's directory has groups.
    state = current_state()
    user_id, scopes = caller(state)
    require(scopes, graph.ME_SCOPES)
    ids = member_group_ids(state, user_id, security_enabled_only("getMemberObjects"))
    return _string_collection(state, ids)


# ---------------------------------------------------------------------------------------------
# The collections: memberOf, transitiveMemberOf
# ---------------------------------------------------------------------------------------------

def query_option(name: str) -> str | None:
    """v1.0 takes query options with or without the `$` prefix."""
    return request.args.get(f"${name}", request.args.get(name))


def page_size() -> int:
    raw = query_option("top")
    if raw is None:
        return DEFAULT_PAGE_SIZE
    size = int(raw) if raw.strip().isdigit() and len(raw.strip()) < 6 else 0
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise _bad_request(f"Invalid page size specified: '{raw}'. Must be between 1 and "
                           f"{MAX_PAGE_SIZE} inclusive.")
    return size


def selection(select: str | None) -> tuple[str, ...] | None:
    """$select's property names in the schema's spelling, in the caller's order."""
    return parse_select(select, _PROPERTY_BY_LOWER, "microsoft.graph.directoryObject")


# $skiptoken: X'<hex>' like Graph's directory tokens, holding "<collection>|<offset>" [inferred].
def skip_token(collection: str, offset: int) -> str:
    return "X'" + f"{collection}|{offset}".encode().hex().upper() + "'"


def read_skip_token(collection: str) -> int:
    raw = query_option("skiptoken")
    if raw is None:
        return 0
    try:
        if not (raw.startswith("X'") and raw.endswith("'")):
            raise ValueError
        kind, _, offset = bytes.fromhex(raw[2:-1]).decode("ascii").partition("|")
        if kind != collection or not offset.isdigit() or len(offset) > 9:
            raise ValueError
        return int(offset)
    except ValueError:
        # What Graph answers for a page token it cannot use.
        raise GraphError(400, "Directory_ExpiredPageToken",
                         "The specified page token value has expired and can no longer be "
                         "included in your request.") from None


def group_object(group: Group, names: tuple[str, ...] | None, full: bool) -> dict[str, Any]:
    """A group as a directoryObject. Without a group permission Graph returns limited
    information: `@odata.type` and `id`, every other property null [inferred from Graph's
    limited-information rule]."""
    stored: Mapping[str, Any] = group.graph or {}
    known = {"id": group.id, "displayName": group.display_name,
             "description": group.description, "securityEnabled": group.security_enabled,
             "mailEnabled": group.mail_enabled, "groupTypes": list(group.group_types)}
    item: dict[str, Any] = {"@odata.type": "#microsoft.graph.group"}
    for name in names or GROUP_PROPERTIES:
        if name == "id":
            item[name] = group.id
        elif not full:
            item[name] = None
        elif name in known:
            item[name] = known[name]
        else:
            item[name] = stored.get(name, [] if name in _COLLECTIONS else None)
    return item


def next_link(state: EmulatorState, collection: str, offset: int) -> str:
    """The request's own query options, with the next page's $skiptoken."""
    options = [(name, value) for name, value in request.args.items(multi=True)
               if name.lstrip("$").lower() != "skiptoken"]
    options.append(("$skiptoken", skip_token(collection, offset)))
    query = "&".join(f"{quote(name, safe='$')}={quote(value, safe=',$')}"
                     for name, value in options)
    return f"{service_root(state)}/me/{collection}?{query}"


def directory_objects(collection: str, groups: Sequence[Group], full: bool) -> Response:
    state = current_state()
    for name in _UNSUPPORTED_OPTIONS:
        if query_option(name.lstrip("$")) is not None:
            raise GraphError(400, "Request_UnsupportedQuery",
                             f"The query option '{name}' is not supported by the emulator's "
                             "Graph.")
    names = selection(query_option("select"))
    size, offset = page_size(), read_skip_token(collection)
    context = "directoryObjects" + (f"({','.join(names)})" if names else "")
    body: dict[str, Any] = {"@odata.context": f"{service_root(state)}/$metadata#{context}"}
    if offset + size < len(groups):
        body["@odata.nextLink"] = next_link(state, collection, offset + size)
    body["value"] = [group_object(g, names, full) for g in groups[offset:offset + size]]
    return graph.graph_json_response(200, body, content_type=graph.JSON_ODATA,
                                     headers={"OData-Version": "4.0"})


@bp.get("/v1.0/me/memberOf", strict_slashes=False)
def member_of() -> Response:
    state = current_state()
    user_id, scopes = caller(state)
    require(scopes, graph.ME_SCOPES | GROUP_READ_SCOPES)
    return directory_objects("memberOf", state.directory.direct_groups(user_id),
                             full=bool(scopes & GROUP_READ_SCOPES))


@bp.get("/v1.0/me/transitiveMemberOf", strict_slashes=False)
def transitive_member_of() -> Response:
    state = current_state()
    user_id, scopes = caller(state)
    require(scopes, graph.ME_SCOPES | GROUP_READ_SCOPES)
    return directory_objects("transitiveMemberOf", state.directory.transitive_groups(user_id),
                             full=bool(scopes & GROUP_READ_SCOPES))
