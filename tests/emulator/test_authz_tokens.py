"""Tokens as Entra writes them (issue 12, item 2), through unmodified MSAL Python: `roles`
(direct, through groups, app-only), `groups` (nested) and the overage, v1 and v2 access tokens
for the directory's own API, the two-resource refusal and AADSTS50105."""

from __future__ import annotations

from typing import Any

import jwt
import pytest
import requests

from tests.emulator.authz_support import (
    ADMIN_ROLE,
    ALEX,
    DEFAULT_ACCESS,
    DIEGO,
    GRAPH_SP,
    READ_ALL_ROLE,
    TODO_API,
    TODO_API_URI,
    TODO_READ,
    TODO_SP,
    WEB_SP,
    app_entry,
    directory_with,
    msal_app,
    sign_in_with_msal,
    sp_entry,
    web_msal_app,
)
from tests.support import ADELE, MEGAN, SignInError, decode_jwt

GRAPH_USER_READ_ALL_ROLE = "df021288-bdef-4463-88db-98f22de89214"


def group_id(emu: Any, name: str) -> str:
    return next(g.id for g in emu.directory.groups if g.display_name == name)


def user_id(emu: Any, username: str) -> str:
    return emu.directory.user_by_username(username).id


def verified(emu: Any, token: str, audience: str, issuer: str) -> dict[str, Any]:
    """The claims, after checking the signature with the emulator's published key."""
    kid = jwt.get_unverified_header(token)["kid"]
    key = emu.state.keys.public_key_for(kid)
    return jwt.decode(token, key, algorithms=["RS256"], audience=audience, issuer=issuer)


def v2_issuer(emu: Any) -> str:
    return f"{emu.authority}/v2.0"


def v1_issuer(emu: Any) -> str:
    return f"https://sts.windows.net/{emu.tenant_id}/"


def todo_token(emu: Any, default_app: Any, username: str,
               scopes: list[str] | None = None) -> dict[str, Any]:
    result = sign_in_with_msal(web_msal_app(emu, default_app), default_app.redirect_uri,
                               username, scopes or [TODO_READ])
    assert "error" not in result, result
    return result


# ---------------------------------------------------------------------------------------------
# roles and groups, delegated
# ---------------------------------------------------------------------------------------------

def test_v2_api_token_with_a_direct_app_role(emulator, default_app):
    result = todo_token(emulator, default_app, ADELE)
    assert result["scope"] == TODO_READ   # echoed as requested
    header, _ = decode_jwt(result["access_token"])
    assert set(header) == {"typ", "alg", "kid"}   # v2: no x5t, no nonce
    claims = verified(emulator, result["access_token"], TODO_API, v2_issuer(emulator))
    assert claims["ver"] == "2.0"
    assert claims["azp"] == default_app.client_id and claims["azpacr"] == "1"
    assert claims["scp"] == "ToDoList.Read"
    assert claims["roles"] == ["Admin"]
    assert claims["oid"] == user_id(emulator, ADELE) and claims["tid"] == emulator.tenant_id
    assert claims["preferred_username"] == ADELE
    assert "appid" not in claims and "upn" not in claims and "idtyp" not in claims
    assert len(claims["uti"]) == 22
    # The Todo API's groupMembershipClaims is SecurityGroup: the Microsoft 365 group is left out.
    assert claims["groups"] == [group_id(emulator, "All Staff")]
    # The ID token follows the client's registration: the web app's own Admin role (assigned
    # to Adele as well), its own group setting.
    id_claims = result["id_token_claims"]
    assert id_claims["roles"] == ["Admin"]
    assert id_claims["groups"] == [group_id(emulator, "All Staff")]
    # Megan holds the Todo API's Admin role (through a group) but not the web app's.
    megan = todo_token(emulator, default_app, MEGAN)
    assert "roles" not in megan["id_token_claims"]


def test_role_through_a_group_and_nested_groups(emulator, default_app):
    claims = decode_jwt(todo_token(emulator, default_app, MEGAN)["access_token"])[1]
    assert claims["roles"] == ["Admin"]   # Megan is a member of Todo Admins, which holds it
    assert claims["groups"] == [group_id(emulator, "Todo Admins"),
                                group_id(emulator, "All Staff")]   # All Staff nests Todo Admins


def test_nested_group_membership_gives_no_role_and_no_empty_claims(emulator, default_app):
    result = todo_token(emulator, default_app, DIEGO)
    claims = decode_jwt(result["access_token"])[1]
    assert "roles" not in claims   # claims are present only with a value
    assert claims["groups"] == [group_id(emulator, "Engineering"),
                                group_id(emulator, "All Staff")]   # through Engineering
    assert result["id_token_claims"]["groups"] == claims["groups"]


def test_more_than_200_groups_is_the_overage(emulator, default_app):
    result = todo_token(emulator, default_app, ALEX)
    oid = user_id(emulator, ALEX)
    overage = {
        "_claim_names": {"groups": "src1"},
        "_claim_sources": {"src1": {"endpoint": f"https://graph.windows.net/{emulator.tenant_id}"
                                                f"/users/{oid}/getMemberObjects"}}}
    assert len(emulator.directory.transitive_groups(oid)) == 212
    for claims in (decode_jwt(result["access_token"])[1], result["id_token_claims"]):
        assert "groups" not in claims
        assert {k: claims[k] for k in overage} == overage


def test_application_group_setting_counts_only_assigned_groups(start_emulator, default_app):
    def change(document: dict[str, Any]) -> None:
        app_entry(document, "Todo API")["groupMembershipClaims"] = "ApplicationGroup"
    emu = start_emulator(directory_with(change))
    result = todo_token(emu, default_app, MEGAN)
    claims = decode_jwt(result["access_token"])[1]
    assert claims["groups"] == [group_id(emu, "Todo Admins")]   # assigned to the Todo API
    # The ID token follows the client's setting (SecurityGroup), nested groups included.
    assert result["id_token_claims"]["groups"] == [group_id(emu, "Todo Admins"),
                                                   group_id(emu, "All Staff")]
    assert "groups" not in decode_jwt(todo_token(emu, default_app, DIEGO)["access_token"])[1]


def test_id_token_roles_are_the_clients_app_roles(start_emulator, default_app):
    reader_role = "0d3f5b7c-9e1a-4c2d-8f4b-6a8c0e2d4f61"

    def change(document: dict[str, Any]) -> None:
        app_entry(document, "python-webapp")["appRoles"].append(
            {"id": reader_role, "allowedMemberTypes": ["User"], "value": "Reader",
             "displayName": "Readers", "isEnabled": True})
        document["appRoleAssignments"].append(
            {"principalId": group_id_of(document, "Engineering"), "resourceId": WEB_SP,
             "appRoleId": reader_role})
    emu = start_emulator(directory_with(change))
    result = todo_token(emu, default_app, DIEGO, ["User.Read"])
    assert result["id_token_claims"]["roles"] == ["Reader"]   # through Engineering
    adele = todo_token(emu, default_app, ADELE, ["User.Read"])
    assert adele["id_token_claims"]["roles"] == ["Admin"]
    # A Graph token carries none of the client's roles.
    assert "roles" not in decode_jwt(result["access_token"])[1]


def group_id_of(document: dict[str, Any], name: str) -> str:
    return next(g["id"] for g in document["groups"] if g["displayName"] == name)


# ---------------------------------------------------------------------------------------------
# v1 tokens, scope forms, one resource per request
# ---------------------------------------------------------------------------------------------

OTHER_URI = "https://contoso.onmicrosoft.com/todo-api"


def v1_todo_api(document: dict[str, Any]) -> None:
    app_entry(document, "Todo API")["api"]["requestedAccessTokenVersion"] = None
    app_entry(document, "Todo API")["identifierUris"].append(OTHER_URI)


@pytest.mark.parametrize("resource", [TODO_API_URI, OTHER_URI, TODO_API])
def test_v1_api_token_names_the_resource_as_requested(start_emulator, default_app, resource):
    emu = start_emulator(directory_with(v1_todo_api))
    result = todo_token(emu, default_app, ADELE, [f"{resource}/ToDoList.Read"])
    assert result["scope"] == f"{resource}/ToDoList.Read"
    header, _ = decode_jwt(result["access_token"])
    assert header["x5t"] == header["kid"] and "nonce" not in header
    claims = verified(emu, result["access_token"], resource, v1_issuer(emu))
    assert claims["ver"] == "1.0"
    assert claims["appid"] == default_app.client_id and claims["appidacr"] == "1"
    assert claims["scp"] == "ToDoList.Read" and claims["roles"] == ["Admin"]
    assert claims["upn"] == ADELE and claims["unique_name"] == ADELE
    assert "azp" not in claims and "preferred_username" not in claims


def test_default_scope_of_the_api_asks_for_its_static_permissions(emulator, default_app):
    result = todo_token(emulator, default_app, ADELE, [f"{TODO_API}/.default"])
    assert set(result["scope"].split()) == {f"{TODO_API}/ToDoList.Read",
                                            f"{TODO_API}/ToDoList.ReadWrite"}
    claims = decode_jwt(result["access_token"])[1]
    assert claims["aud"] == TODO_API and claims["scp"] == "ToDoList.Read ToDoList.ReadWrite"


def test_a_token_request_for_two_resources_is_refused(emulator, default_app):
    result = sign_in_with_msal(web_msal_app(emulator, default_app), default_app.redirect_uri,
                               ADELE, ["User.Read", TODO_READ])
    assert result["error"] == "invalid_scope", result
    assert result["error_codes"] == [28000]
    assert "contains more than one resource" in result["error_description"]


def test_unknown_api_scope_is_invalid_scope(emulator, default_app):
    app = web_msal_app(emulator, default_app)
    flow = app.initiate_auth_code_flow([f"{TODO_API_URI}/ToDoList.Delete"],
                                       redirect_uri=default_app.redirect_uri)
    answer = requests.get(flow["auth_uri"], allow_redirects=False, verify=emulator.ca_bundle)
    assert answer.status_code == 302
    assert "AADSTS70011" in answer.headers["Location"]


# ---------------------------------------------------------------------------------------------
# app-only tokens
# ---------------------------------------------------------------------------------------------

def assign_read_all_to_web_app(document: dict[str, Any]) -> None:
    document["appRoleAssignments"].append(
        {"principalId": WEB_SP, "principalType": "ServicePrincipal", "resourceId": TODO_SP,
         "appRoleId": READ_ALL_ROLE})


@pytest.mark.parametrize("scope", [f"{TODO_API_URI}/.default", f"{TODO_API}/.default"])
def test_app_only_token_carries_the_clients_application_permissions(start_emulator,
                                                                     default_app, scope):
    emu = start_emulator(directory_with(assign_read_all_to_web_app))
    result = msal_app(emu, default_app.client_id,
                      default_app.client_secret).acquire_token_for_client([scope])
    assert "error" not in result, result
    claims = verified(emu, result["access_token"], TODO_API, v2_issuer(emu))
    assert claims["roles"] == ["ToDoList.Read.All"]
    assert claims["idtyp"] == "app"   # the Todo API asks for this optional claim
    assert claims["oid"] == claims["sub"] == WEB_SP
    assert claims["azp"] == default_app.client_id and claims["ver"] == "2.0"
    assert "scp" not in claims


def test_app_only_token_without_permissions_has_no_roles(emulator, default_app):
    result = web_msal_app(emulator, default_app).acquire_token_for_client(
        [f"{TODO_API_URI}/.default"])
    claims = decode_jwt(result["access_token"])[1]
    assert "roles" not in claims and "scp" not in claims


def test_app_only_graph_token_carries_graph_application_permissions(start_emulator,
                                                                    default_app):
    def change(document: dict[str, Any]) -> None:
        document["appRoleAssignments"].append(
            {"principalId": WEB_SP, "resourceId": GRAPH_SP, "appRoleId": GRAPH_USER_READ_ALL_ROLE})
    emu = start_emulator(directory_with(change))
    result = msal_app(emu, default_app.client_id, default_app.client_secret)\
        .acquire_token_for_client(["https://graph.microsoft.com/.default"])
    claims = decode_jwt(result["access_token"])[1]
    assert claims["roles"] == ["User.Read.All"] and claims["idtyp"] == "app"


# ---------------------------------------------------------------------------------------------
# appRoleAssignmentRequired: AADSTS50105
# ---------------------------------------------------------------------------------------------

def test_client_credentials_without_assignment_is_50105(start_emulator, default_app):
    def change(document: dict[str, Any]) -> None:
        sp_entry(document, TODO_SP)["appRoleAssignmentRequired"] = True
    emu = start_emulator(directory_with(change))
    result = msal_app(emu, default_app.client_id, default_app.client_secret)\
        .acquire_token_for_client([f"{TODO_API_URI}/.default"])
    assert result["error"] == "invalid_grant", result
    assert result["error_codes"] == [50105]
    assert result["error_description"].startswith(
        f"AADSTS50105: Application '{default_app.client_id}' is not assigned to a role for the "
        f"application '{TODO_API_URI}'.")

    assigned = start_emulator(directory_with(lambda d: (change(d), assign_read_all_to_web_app(d))))
    ok = msal_app(assigned, default_app.client_id, default_app.client_secret)\
        .acquire_token_for_client([f"{TODO_API_URI}/.default"])
    assert decode_jwt(ok["access_token"])[1]["roles"] == ["ToDoList.Read.All"]


def test_users_without_assignment_get_50105_at_sign_in(start_emulator, default_app):
    def change(document: dict[str, Any]) -> None:
        sp_entry(document, WEB_SP)["appRoleAssignmentRequired"] = True
        adele = next(u["id"] for u in document["users"] if u["userPrincipalName"] == ADELE)
        document["appRoleAssignments"] += [
            {"principalId": adele, "resourceId": WEB_SP, "appRoleId": DEFAULT_ACCESS},
            # Covers Diego (a direct member), not Megan (a member through Todo Admins).
            {"principalId": group_id_of(document, "All Staff"), "resourceId": WEB_SP,
             "appRoleId": DEFAULT_ACCESS},
            {"principalId": group_id_of(document, "Engineering"), "resourceId": WEB_SP,
             "appRoleId": DEFAULT_ACCESS}]
    emu = start_emulator(directory_with(change))
    app = msal_app(emu, default_app.client_id, default_app.client_secret)
    for username in (ADELE, DIEGO):
        assert "error" not in sign_in_with_msal(app, default_app.redirect_uri, username,
                                                ["User.Read"])
    with pytest.raises(SignInError) as refused:
        sign_in_with_msal(app, default_app.redirect_uri, MEGAN, ["User.Read"])
    assert "emulator answered 400" in str(refused.value)
    assert (f"AADSTS50105: The signed in user '{MEGAN}' is not assigned to a role for the "
            f"application '{default_app.client_id}'(python-webapp).") in str(refused.value)


def test_default_directory_assigns_the_admin_roles(emulator, default_app):
    todo = emulator.directory.application(TODO_API)
    assert [r.value for r in todo.app_roles] == ["Admin", "ToDoList.Read.All"]
    assignments = emulator.directory.assignments_to(TODO_API)
    assert {(a.principal_type, a.app_role_id) for a in assignments} == {
        ("User", ADMIN_ROLE), ("Group", ADMIN_ROLE)}
    web_admins = emulator.directory.assignments_to(default_app.client_id)
    assert [(a.principal_type, a.principal_id) for a in web_admins] == [
        ("User", user_id(emulator, ADELE))]


def test_the_todo_api_is_a_confidential_client_too(emulator):
    result = msal_app(emulator, TODO_API, "todo-api-dev-secret").acquire_token_for_client(
        ["https://graph.microsoft.com/.default"])
    assert "error" not in result, result
    claims = decode_jwt(result["access_token"])[1]
    assert claims["appid"] == TODO_API and claims["oid"] == TODO_SP
    # An administrator granted it Graph's User.Read for its on-behalf-of calls.
    assert emulator.directory.granted_scopes(
        TODO_API, "00000003-0000-0000-c000-000000000000") == {"User.Read"}
