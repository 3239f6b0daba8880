"""The directory file's authorization part (issue 12, item 1): groups (nested), app roles,
exposed scopes, service principals, app-role assignments and permission grants in Graph's
shapes, and malformed entries refused at start naming the file, the entry and the field."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from entra_emulator.directory import DirectoryError, load_directory
from tests.emulator.authz_support import (
    ADMIN_ROLE,
    ALEX,
    DIEGO,
    GRAPH_SP,
    READ_ALL_ROLE,
    TODO_API,
    TODO_SP,
    WEB_SP,
    app_entry,
    directory_with,
    sp_entry,
)
from tests.support import ADELE, MEGAN


def test_default_directory_shows_the_authorization_model():
    directory = load_directory()
    todo = directory.application(TODO_API)
    assert todo.display_name == "Todo API"
    assert todo.identifier_uris == (f"api://{TODO_API}",)
    assert todo.requested_access_token_version == 2
    assert [(s.value, s.type) for s in todo.api_scopes] == [
        ("ToDoList.Read", "User"), ("ToDoList.ReadWrite", "User")]
    assert todo.api_scope("todolist.read").user_consent_display_name == "Read your todo lists"
    assert todo.group_membership_claims == "SecurityGroup"
    assert todo.password_credentials[0].secret_text == "todo-api-dev-secret"
    assert todo.service_principal_id == TODO_SP
    web = directory.application("3cf2e0af-856d-474a-8a72-c78c404b4571")
    assert web.service_principal_id == WEB_SP
    assert {r.resource_app_id for r in web.required_resource_access} == {
        "00000003-0000-0000-c000-000000000000", TODO_API}
    assert directory.service_principal_for("00000003-0000-0000-c000-000000000000").id == GRAPH_SP
    assert directory.granted_scopes(web.app_id, "00000003-0000-0000-c000-000000000000") == {
        "GroupMember.Read.All"}


def test_groups_nested_and_transitive():
    directory = load_directory()
    names = {g.id: g.display_name for g in directory.groups}

    def transitive(username: str) -> list[str]:
        return [names[g.id] for g in directory.transitive_groups(
            directory.user_by_username(username).id)][:3]

    megan = directory.user_by_username(MEGAN).id
    assert [g.display_name for g in directory.direct_groups(megan)] == [
        "Todo Admins", "Sales and Marketing"]
    assert transitive(MEGAN) == ["Todo Admins", "All Staff", "Sales and Marketing"]
    assert transitive(DIEGO) == ["Engineering", "All Staff"]
    assert len(directory.transitive_groups(directory.user_by_username(ALEX).id)) == 212
    sales = next(g for g in directory.groups if g.display_name == "Sales and Marketing")
    assert sales.group_types == ("Unified",) and not sales.security_enabled and sales.mail_enabled
    adele = directory.user_by_username(ADELE).id
    assert directory.user_role_ids(TODO_API, adele) == [ADMIN_ROLE]
    assert directory.user_role_ids(TODO_API, megan) == [ADMIN_ROLE]   # through Todo Admins
    assert directory.user_role_ids(TODO_API, directory.user_by_username(DIEGO).id) == []


def test_group_cycles_are_safe(tmp_path):
    def change(document: dict[str, Any]) -> None:
        first, second = document["groups"][0], document["groups"][1]
        first["members"].append({"id": second["id"]})
        second["members"].append(first["id"])   # a bare id is accepted too
    directory = load_directory(write(tmp_path, directory_with(change)))
    megan = directory.user_by_username(MEGAN).id
    assert {g.display_name for g in directory.transitive_groups(megan)} == {
        "Todo Admins", "Engineering", "All Staff", "Sales and Marketing"}


def test_principal_type_is_filled_in_from_the_principal(tmp_path):
    def change(document: dict[str, Any]) -> None:
        for assignment in document["appRoleAssignments"]:
            del assignment["principalType"]
    directory = load_directory(write(tmp_path, directory_with(change)))
    assert sorted(a.principal_type for a in directory.app_role_assignments) == [
        "Group", "User", "User"]


def write(tmp_path, document: dict[str, Any]) -> str:
    path = tmp_path / "directory.json"
    path.write_text(json.dumps(document))
    return str(path)


def first_group(document: dict[str, Any]) -> dict[str, Any]:
    return document["groups"][0]


def todo(document: dict[str, Any]) -> dict[str, Any]:
    return app_entry(document, "Todo API")


def assignment(document: dict[str, Any]) -> dict[str, Any]:
    return document["appRoleAssignments"][0]


def grant(document: dict[str, Any]) -> dict[str, Any]:
    return document["oauth2PermissionGrants"][0]


MALFORMED: list[tuple[str, Callable[[dict[str, Any]], Any], str, str]] = [
    ("unknown group member", lambda d: first_group(d)["members"].append(
        {"id": "11111111-1111-1111-1111-111111111111"}),
     "groups[0] (Todo Admins)", "field 'members[1]': no user or group has id"),
    ("group member not a GUID", lambda d: first_group(d)["members"].append("megan"),
     "groups[0] (Todo Admins)", "field 'members[1]': must be a GUID"),
    ("group id reused", lambda d: d["groups"][1].update(id=d["groups"][0]["id"]),
     "groups[1]", "field 'id': duplicates another entry"),
    ("group securityEnabled", lambda d: first_group(d).update(securityEnabled="yes"),
     "groups[0] (Todo Admins)", "field 'securityEnabled': must be true or false"),
    ("groups not an array", lambda d: d.update(groups={}),
     "(top level)", "field 'groups': must be a JSON array"),
    ("token version", lambda d: todo(d)["api"].update(requestedAccessTokenVersion=3),
     "applications[1] (Todo API)", "field 'api.requestedAccessTokenVersion': must be 1, 2"),
    ("scope type", lambda d: todo(d)["api"]["oauth2PermissionScopes"][0].update(type="Anyone"),
     "applications[1] (Todo API).api.oauth2PermissionScopes[0]",
     "field 'type': must be User or Admin"),
    ("scope value with a space",
     lambda d: todo(d)["api"]["oauth2PermissionScopes"][0].update(value="ToDo Read"),
     "applications[1] (Todo API).api.oauth2PermissionScopes[0]", "field 'value': must be"),
    ("app role member type", lambda d: todo(d)["appRoles"][0].update(
        allowedMemberTypes=["Device"]),
     "applications[1] (Todo API).appRoles[0]", "field 'allowedMemberTypes'"),
    ("group membership claims", lambda d: todo(d).update(groupMembershipClaims="Some"),
     "applications[1] (Todo API)", "field 'groupMembershipClaims': must be one of None"),
    ("required access type", lambda d: app_entry(d, "python-webapp")["requiredResourceAccess"][0]
     ["resourceAccess"][0].update(type="Permission"),
     "applications[0] (python-webapp).requiredResourceAccess[0]",
     "field 'resourceAccess[0].type': must be \"Scope\" or \"Role\""),
    ("required access of an unknown scope", lambda d: app_entry(d, "python-webapp")
     ["requiredResourceAccess"][1]["resourceAccess"][0].update(
         id="22222222-2222-2222-2222-222222222222"),
     "applications[0] (python-webapp)", "field 'requiredResourceAccess[1].resourceAccess': "
     "22222222-2222-2222-2222-222222222222 is not a permission scope or app role of Todo API"),
    ("service principal of no app", lambda d: d["servicePrincipals"][2].update(
        appId="33333333-3333-3333-3333-333333333333"),
     "servicePrincipals[2] (33333333-3333-3333-3333-333333333333)",
     "field 'appId': no application has this appId"),
    ("assignment required not a boolean", lambda d: sp_entry(d, TODO_SP).update(
        appRoleAssignmentRequired="true"),
     "servicePrincipals[2] (" + TODO_API + ")",
     "field 'appRoleAssignmentRequired': must be true or false"),
    ("assignment to an unknown principal", lambda d: assignment(d).update(
        principalId="44444444-4444-4444-4444-444444444444"),
     "appRoleAssignments[0]", "field 'principalId': no user, group or service"),
    ("assignment naming the appId", lambda d: assignment(d).update(resourceId=TODO_API),
     "appRoleAssignments[0]", "field 'resourceId': no service principal has id"),
    ("assignment of a role the resource lacks", lambda d: assignment(d).update(
        appRoleId="55555555-5555-5555-5555-555555555555"),
     "appRoleAssignments[0]", "field 'appRoleId': 55555555-5555-5555-5555-555555555555 is not"),
    ("application role given to a user", lambda d: assignment(d).update(
        appRoleId=READ_ALL_ROLE),
     "appRoleAssignments[0]", "open to User members"),
    ("principal type mismatch", lambda d: assignment(d).update(principalType="Group"),
     "appRoleAssignments[0]", "field 'principalType': is Group but"),
    ("grant consent type", lambda d: grant(d).update(consentType="Everyone"),
     "oauth2PermissionGrants[0] (overage-python-webapp-graph)",
     "field 'consentType': must be AllPrincipals or Principal"),
    ("admin grant naming a user", lambda d: grant(d).update(
        principalId="87d349ed-44d7-43e1-9a83-5f2406dee5bd"),
     "oauth2PermissionGrants[0]", "field 'principalId': must be null"),
    ("grant of an unknown scope", lambda d: grant(d).update(scope="GroupMember.Read.Everything"),
     "oauth2PermissionGrants[0]", "field 'scope': 'GroupMember.Read.Everything' is not"),
    ("grant to an unknown client", lambda d: grant(d).update(clientId=GRAPH_SP),
     "oauth2PermissionGrants[0]", "field 'clientId': no application's service principal"),
]


@pytest.mark.parametrize(("case", "change", "entry", "problem"), MALFORMED,
                         ids=[case for case, *_ in MALFORMED])
def test_malformed_entries_are_refused_naming_file_entry_and_field(tmp_path, case, change,
                                                                   entry, problem):
    path = write(tmp_path, directory_with(change))
    with pytest.raises(DirectoryError) as refused:
        load_directory(path)
    message = str(refused.value)
    assert message.startswith(f"{path}: {entry}"), message
    assert re.search(re.escape(problem), message), message


def test_the_emulator_refuses_to_start_with_a_malformed_directory(tmp_path, start_emulator):
    path = write(tmp_path, directory_with(lambda d: todo(d).update(groupMembershipClaims=1)))
    with pytest.raises(DirectoryError, match="groupMembershipClaims"):
        start_emulator(path)


def test_the_readme_example_is_a_valid_directory(tmp_path):
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    [example] = [block for block in re.findall(r"```json\n(.*?)```", readme, re.S)
                 if '"oauth2PermissionGrants"' in block]
    path = tmp_path / "example.json"
    path.write_text(example)
    directory = load_directory(path)
    megan = directory.user_by_username(MEGAN).id
    assert [g.display_name for g in directory.transitive_groups(megan)] == [
        "Todo Admins", "All Staff"]
    assert directory.user_role_ids(TODO_API, megan) == [ADMIN_ROLE]
    assert directory.client_role_ids(TODO_API, "3cf2e0af-856d-474a-8a72-c78c404b4571") == [
        READ_ALL_ROLE]
