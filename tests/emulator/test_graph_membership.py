"""Graph's membership calls on the emulator: POST /me/getMemberGroups and /me/getMemberObjects,
GET /me/memberOf and /me/transitiveMemberOf (entra-authorization.md §2.6), with tokens from
unmodified MSAL through the emulator's sign-in pages, against this module's own directory."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from entra_emulator.server import EmulatorServer
from tests.emulator.authz_support import msal_app, sign_in_with_msal
from tests.support import (
    ADELE,
    MEGAN,
    default_directory_document,
)

GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"


def ident(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"test-graph-membership:{name}"))


ENGINEERING, PLATFORM, ALL_COMPANY, FINANCE = (ident(n) for n in (
    "engineering", "platform", "all-company", "finance"))
MEGAN_GROUPS = [ident(f"megan-{i}") for i in range(250)]   # past the 200-group overage
READER, PLAIN = ident("app-reader"), ident("app-plain")
REDIRECT = "http://localhost:5000/getAToken"
SECRET = "membership-test-secret"
GRAPH_SP = ident("sp-graph")


def membership_directory() -> dict[str, Any]:
    document = default_directory_document()
    # The default directory's users and apps; its groups, grants and assignments are replaced
    # by this module's own, so these tests do not depend on them.
    for name in ("groups", "servicePrincipals", "appRoleAssignments", "oauth2PermissionGrants"):
        document.pop(name, None)
    users = {u["userPrincipalName"]: u["id"] for u in document["users"]}
    adele, megan = users[ADELE], users[MEGAN]
    document["groups"] = [
        {"id": ENGINEERING, "displayName": "Engineering", "description": "Builds things",
         "securityEnabled": True, "mailEnabled": False, "groupTypes": [],
         "mailNickname": "engineering", "members": [{"id": adele}]},
        # Nested: Adele is in Platform only through Engineering.
        {"id": PLATFORM, "displayName": "Platform", "securityEnabled": True,
         "mailEnabled": False, "groupTypes": [], "members": [ENGINEERING]},
        {"id": ALL_COMPANY, "displayName": "All Company", "securityEnabled": False,
         "mailEnabled": True, "groupTypes": ["Unified"], "mail": "allcompany@contoso.com",
         "members": [adele, megan]},
        {"id": FINANCE, "displayName": "Finance", "securityEnabled": True,
         "mailEnabled": False, "groupTypes": [], "members": [megan]},
        *({"id": gid, "displayName": f"Project {i:03}", "securityEnabled": True,
           "mailEnabled": False, "groupTypes": [], "members": [megan]}
          for i, gid in enumerate(MEGAN_GROUPS)),
    ]
    for app_id, name in ((READER, "Groups reader"), (PLAIN, "Plain app")):
        document["applications"].append({
            "appId": app_id, "displayName": name, "web": {"redirectUris": [REDIRECT]},
            "passwordCredentials": [{"secretText": SECRET}]})
    document["servicePrincipals"] = [
        {"id": GRAPH_SP, "appId": GRAPH_APP_ID},
        {"id": ident("sp-reader"), "appId": READER},
    ]
    # An administrator granted the reader app GroupMember.Read.All for everyone.
    document["oauth2PermissionGrants"] = [
        {"clientId": ident("sp-reader"), "consentType": "AllPrincipals", "principalId": None,
         "resourceId": GRAPH_SP, "scope": "User.Read GroupMember.Read.All"}]
    return document


def start(emulator: EmulatorServer, folder: Any, directory: dict[str, Any]) -> EmulatorServer:
    """An emulator for `directory`, trusted as the session's (it gets its certificates)."""
    shutil.copytree(emulator.state_dir / "tls", folder / "state" / "tls")
    path = folder / "directory.json"
    path.write_text(json.dumps(directory))
    return EmulatorServer(directory=path, state_dir=folder / "state", https_port=0,
                          http_port=0).start()


@pytest.fixture(scope="module")
def emu(emulator: EmulatorServer, tmp_path_factory: Any) -> Iterator[EmulatorServer]:
    server = start(emulator, tmp_path_factory.mktemp("membership"), membership_directory())
    yield server
    server.stop()


def sign_in(emu: EmulatorServer, app_id: str, scopes: list[str], username: str = ADELE) -> str:
    """A Graph access token from unmodified MSAL's auth code flow."""
    result = sign_in_with_msal(msal_app(emu, app_id, SECRET), REDIRECT, username, scopes)
    assert "access_token" in result, result
    return result["access_token"]


@pytest.fixture(scope="module")
def reader_token(emu: EmulatorServer) -> str:
    return sign_in(emu, READER, ["User.Read", "GroupMember.Read.All"])


@pytest.fixture(scope="module")
def plain_token(emu: EmulatorServer) -> str:
    return sign_in(emu, PLAIN, ["User.Read"])


@pytest.fixture(scope="module")
def megan_token(emu: EmulatorServer) -> str:
    return sign_in(emu, READER, ["User.Read", "GroupMember.Read.All"], username=MEGAN)


def call(emu: EmulatorServer, method: str, path: str, token: str | None, *,
         json_body: Any = None, data: str | None = None) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = path if path.startswith("https://") else f"{emu.https_base}/v1.0{path}"
    if data is not None:
        headers["Content-Type"] = "application/json"
    return requests.request(method, url, headers=headers, json=json_body, data=data,
                            verify=emu.ca_bundle, timeout=30)


def assert_graph_error(response: requests.Response, status: int, code: str) -> dict[str, Any]:
    """Graph's error shape: {"error": {code, message, innerError: {date, request-id, ...}}}."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    assert error["message"]
    assert set(error["innerError"]) == {"date", "request-id", "client-request-id"}
    assert response.headers["request-id"] == error["innerError"]["request-id"]
    return error


def all_pages(emu: EmulatorServer, path: str, token: str) -> list[dict[str, Any]]:
    pages = []
    url: str | None = path
    while url is not None:
        response = call(emu, "GET", url, token)
        assert response.status_code == 200, response.text
        pages.append(response.json())
        url = pages[-1].get("@odata.nextLink")
    return pages


# ---------------------------------------------------------------------------------------------
# getMemberGroups / getMemberObjects
# ---------------------------------------------------------------------------------------------

def test_get_member_groups_returns_transitive_group_ids(emu, reader_token):
    response = call(emu, "POST", "/me/getMemberGroups", reader_token,
                    json_body={"securityEnabledOnly": True})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["@odata.context"] == f"{emu.https_base}/v1.0/$metadata#Collection(Edm.String)"
    # Platform comes through Engineering; All Company is not a security group.
    assert body["value"] == [ENGINEERING, PLATFORM]

    everything = call(emu, "POST", "/me/getMemberGroups", reader_token,
                      json_body={"securityEnabledOnly": False}).json()["value"]
    assert everything == [ENGINEERING, PLATFORM, ALL_COMPANY]


def test_get_member_groups_needs_a_group_permission(emu, plain_token):
    response = call(emu, "POST", "/me/getMemberGroups", plain_token,
                    json_body={"securityEnabledOnly": True})
    error = assert_graph_error(response, 403, "Authorization_RequestDenied")
    assert error["message"] == "Insufficient privileges to complete the operation."


def test_get_member_objects_needs_only_user_read(emu, plain_token):
    response = call(emu, "POST", "/me/getMemberObjects", plain_token,
                    json_body={"securityEnabledOnly": False})
    assert response.status_code == 200, response.text
    assert response.json()["value"] == [ENGINEERING, PLATFORM, ALL_COMPANY]


def test_overage_user_gets_all_groups_unpaged(emu, megan_token):
    response = call(emu, "POST", "/me/getMemberGroups", megan_token,
                    json_body={"securityEnabledOnly": True})
    assert response.status_code == 200, response.text
    body = response.json()
    assert "@odata.nextLink" not in body
    assert body["value"] == [FINANCE, *MEGAN_GROUPS]


@pytest.mark.parametrize(("data", "message"), [
    ("{not json", "Unable to read JSON request payload"),
    ("", "Unable to read JSON request payload"),
    ("[true]", "Unable to read JSON request payload"),
    ("[" * 5000, "Unable to read JSON request payload"),
    ("{}", "'securityEnabledOnly'"),
    ('{"securityEnabledOnly": null}', "'securityEnabledOnly'"),
    ('{"securityEnabledOnly": "yes"}', "Edm.Boolean"),
    ('{"securityEnabledOnly": true, "other": 1}', "'other'"),
])
def test_request_bodies_are_checked(emu, reader_token, data, message):
    for action in ("getMemberGroups", "getMemberObjects"):
        response = call(emu, "POST", f"/me/{action}", reader_token, data=data)
        error = assert_graph_error(response, 400, "BadRequest")
        assert message in error["message"]


def test_actions_are_post_only(emu, reader_token):
    assert_graph_error(call(emu, "GET", "/me/getMemberGroups", reader_token), 405,
                       "Request_BadRequest")


def test_app_only_and_missing_tokens_are_refused(emu):
    app_token = msal_app(emu, READER, SECRET).acquire_token_for_client(["https://graph.microsoft.com/.default"])
    assert "access_token" in app_token, app_token
    for method, path in (("POST", "/me/getMemberGroups"), ("GET", "/me/memberOf")):
        response = call(emu, method, path, app_token["access_token"],
                        json_body={"securityEnabledOnly": True})
        error = assert_graph_error(response, 400, "BadRequest")
        assert error["message"] == "/me request is only valid with delegated authentication flow."
        response = call(emu, method, path, None, json_body={"securityEnabledOnly": True})
        assert_graph_error(response, 401, "InvalidAuthenticationToken")


# ---------------------------------------------------------------------------------------------
# memberOf / transitiveMemberOf
# ---------------------------------------------------------------------------------------------

def test_member_of_is_direct_and_transitive_member_of_nested(emu, reader_token):
    direct = call(emu, "GET", "/me/memberOf", reader_token)
    assert direct.status_code == 200, direct.text
    body = direct.json()
    assert body["@odata.context"] == f"{emu.https_base}/v1.0/$metadata#directoryObjects"
    assert [g["id"] for g in body["value"]] == [ENGINEERING, ALL_COMPANY]

    transitive = call(emu, "GET", "/me/transitiveMemberOf", reader_token).json()["value"]
    assert [g["id"] for g in transitive] == [ENGINEERING, PLATFORM, ALL_COMPANY]
    engineering, platform, everyone = transitive
    assert engineering["@odata.type"] == "#microsoft.graph.group"
    assert engineering["displayName"] == "Engineering"
    assert engineering["description"] == "Builds things"
    assert engineering["mailNickname"] == "engineering"
    assert (engineering["securityEnabled"], engineering["mailEnabled"]) == (True, False)
    assert engineering["groupTypes"] == [] and engineering["proxyAddresses"] == []
    assert platform["description"] is None
    assert everyone["groupTypes"] == ["Unified"] and everyone["mail"] == "allcompany@contoso.com"


def test_user_read_alone_gets_limited_information(emu, plain_token):
    response = call(emu, "GET", "/me/transitiveMemberOf", plain_token)
    assert response.status_code == 200, response.text
    groups = response.json()["value"]
    assert [g["id"] for g in groups] == [ENGINEERING, PLATFORM, ALL_COMPANY]
    for group in groups:
        assert group["@odata.type"] == "#microsoft.graph.group"
        assert {k for k, v in group.items() if v is not None} == {"@odata.type", "id"}


def test_paging_through_the_overage_users_groups(emu, megan_token):
    pages = all_pages(emu, "/me/transitiveMemberOf", megan_token)
    assert [len(p["value"]) for p in pages] == [100, 100, 52]
    ids = [g["id"] for p in pages for g in p["value"]]
    assert ids == [ALL_COMPANY, FINANCE, *MEGAN_GROUPS]
    first = urlsplit(pages[0]["@odata.nextLink"])
    assert first.path == "/v1.0/me/transitiveMemberOf"
    assert set(parse_qs(first.query)) == {"$skiptoken"}
    assert "@odata.nextLink" not in pages[-1]


def test_top_and_select_are_kept_across_pages(emu, megan_token):
    pages = all_pages(emu, "/me/memberOf?$top=120&$select=displayName,id", megan_token)
    assert [len(p["value"]) for p in pages] == [120, 120, 12]
    for page in pages:
        assert page["@odata.context"].endswith("$metadata#directoryObjects(displayName,id)")
        for group in page["value"]:
            assert list(group) == ["@odata.type", "displayName", "id"]
    query = parse_qs(urlsplit(pages[0]["@odata.nextLink"]).query)
    assert query["$top"] == ["120"] and query["$select"] == ["displayName,id"]
    assert pages[1]["value"][0]["displayName"] == "Project 118"


@pytest.mark.parametrize(("query", "status", "code", "message"), [
    ("$top=1000", 400, "BadRequest", "Invalid page size specified: '1000'"),
    ("$top=0", 400, "BadRequest", "Must be between 1 and 999 inclusive"),
    ("$top=ten", 400, "BadRequest", "Invalid page size"),
    ("$select=id,shoeSize", 400, "BadRequest", "Could not find a property named 'shoeSize'"),
    ("$skiptoken=garbage", 400, "Directory_ExpiredPageToken", "page token"),
    ("$filter=startswith(displayName,'P')", 400, "Request_UnsupportedQuery", "$filter"),
])
def test_bad_query_options(emu, reader_token, query, status, code, message):
    response = call(emu, "GET", f"/me/transitiveMemberOf?{query}", reader_token)
    assert message in assert_graph_error(response, status, code)["message"]


def test_a_skiptoken_is_bound_to_its_collection(emu, megan_token):
    next_link = call(emu, "GET", "/me/memberOf", megan_token).json()["@odata.nextLink"]
    token = parse_qs(urlsplit(next_link).query)["$skiptoken"][0]
    other = requests.get(f"{emu.https_base}/v1.0/me/transitiveMemberOf",
                         params={"$skiptoken": token}, verify=emu.ca_bundle,
                         headers={"Authorization": f"Bearer {megan_token}"})
    assert_graph_error(other, 400, "Directory_ExpiredPageToken")


# ---------------------------------------------------------------------------------------------
# More than 11,000 groups
# ---------------------------------------------------------------------------------------------

def test_get_member_groups_refuses_more_than_11000_results(emulator, tmp_path):
    document = membership_directory()
    megan = next(u["id"] for u in document["users"] if u["userPrincipalName"] == MEGAN)
    document["groups"] += [{"id": ident(f"big-{i}"), "displayName": f"Big {i}",
                            "securityEnabled": True, "members": [megan]}
                           for i in range(11_000)]
    server = start(emulator, tmp_path, document)
    try:
        token = sign_in(server, READER, ["User.Read", "GroupMember.Read.All"], username=MEGAN)
        response = call(server, "POST", "/me/getMemberGroups", token,
                        json_body={"securityEnabledOnly": True})
        assert_graph_error(response, 400, "Directory_ResultSizeLimitExceeded")
        # The paged collection still answers, a page at a time.
        page = call(server, "GET", "/me/transitiveMemberOf?$top=999&$select=id", token)
        assert page.status_code == 200 and len(page.json()["value"]) == 999
    finally:
        server.stop()
