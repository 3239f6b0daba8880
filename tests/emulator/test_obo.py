"""The on-behalf-of grant (entra-authorization.md §4) with unmodified MSAL Python: a front app
signs a user in for a middle-tier API, which trades that token for a Graph token with
`acquire_token_on_behalf_of`. This module's own directory holds the apps and the grants."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from typing import Any

import jwt
import msal
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa

from entra_emulator.server import EmulatorServer
from tests.support import (
    ADELE,
    DEFAULT_PASSWORD,
    MEGAN,
    WebApp,
    browser_sign_in,
    decode_jwt,
    default_directory_document,
    get_me,
    redeem_code,
    sign_in_for_code,
    token_url,
)

GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
GRAPH_USER_READ = "https://graph.microsoft.com/User.Read"


def ident(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"test-obo:{name}"))


FRONT, TODO_API, LEGACY_API, REPORTS_API = (ident(n) for n in (
    "front", "todo-api", "legacy-api", "reports-api"))
LEGACY_URI = "api://legacy.contoso.test"
SECRETS = {FRONT: "front-secret", TODO_API: "todo-secret", LEGACY_API: "legacy-secret",
           REPORTS_API: "reports-secret"}
FRONT_REDIRECT = "http://localhost:5000/getAToken"
API_REDIRECT = "http://localhost:7000/callback"
GRAPH_SP = ident("sp-graph")
SP = {app: ident(f"sp-{app}") for app in SECRETS}
ENGINEERING = ident("group-engineering")
APP_ROLE = ident("role-todo-read-all")


def api_app(app_id: str, name: str, uri: str, version: int | None) -> dict[str, Any]:
    return {
        "appId": app_id, "displayName": name, "identifierUris": [uri],
        "web": {"redirectUris": [API_REDIRECT]},
        "passwordCredentials": [{"secretText": SECRETS[app_id]}],
        "api": {"requestedAccessTokenVersion": version, "oauth2PermissionScopes": [{
            "id": ident(f"scope-{app_id}"), "value": "access_as_user", "type": "User",
            "isEnabled": True, "adminConsentDisplayName": f"Access {name}",
            "adminConsentDescription": f"Access {name} as the signed-in user.",
            "userConsentDisplayName": f"Access {name}",
            "userConsentDescription": f"Access {name} as you."}]},
    }


def obo_directory() -> dict[str, Any]:
    document = default_directory_document()
    # The default directory's users and apps; its groups, grants and assignments are replaced
    # by this module's own, so these tests do not depend on them.
    for name in ("groups", "servicePrincipals", "appRoleAssignments", "oauth2PermissionGrants"):
        document.pop(name, None)
    adele = next(u["id"] for u in document["users"] if u["userPrincipalName"] == ADELE)
    todo = api_app(TODO_API, "Todo API", f"api://{TODO_API}", 2)
    todo["appRoles"] = [{"id": APP_ROLE, "value": "Todo.Read.All", "displayName": "Read all",
                         "allowedMemberTypes": ["Application"], "isEnabled": True}]
    document["applications"] += [
        {"appId": FRONT, "displayName": "Front web app",
         "web": {"redirectUris": [FRONT_REDIRECT]},
         "passwordCredentials": [{"secretText": SECRETS[FRONT]}]},
        todo,
        api_app(LEGACY_API, "Legacy API", LEGACY_URI, None),
        api_app(REPORTS_API, "Reports API", f"api://{REPORTS_API}", 2),
    ]
    document["groups"] = [{"id": ENGINEERING, "displayName": "Engineering",
                           "securityEnabled": True, "members": [adele]}]
    document["servicePrincipals"] = [{"id": GRAPH_SP, "appId": GRAPH_APP_ID}] + [
        {"id": SP[app], "appId": app} for app in SECRETS]
    # Admin consent: Todo API and Legacy API may call Graph for every user; Reports API has no
    # grant (consent_required until the user consents).
    document["oauth2PermissionGrants"] = [
        {"clientId": SP[TODO_API], "consentType": "AllPrincipals", "principalId": None,
         "resourceId": GRAPH_SP, "scope": "User.Read GroupMember.Read.All"},
        {"clientId": SP[LEGACY_API], "consentType": "AllPrincipals", "principalId": None,
         "resourceId": GRAPH_SP, "scope": "User.Read"},
        # Todo API may also call Reports API for every user.
        {"clientId": SP[TODO_API], "consentType": "AllPrincipals", "principalId": None,
         "resourceId": SP[REPORTS_API], "scope": "access_as_user"},
    ]
    # The front app holds Todo API's application permission (for an app-only token).
    document["appRoleAssignments"] = [
        {"principalId": SP[FRONT], "principalType": "ServicePrincipal",
         "resourceId": SP[TODO_API], "appRoleId": APP_ROLE}]
    return document


@pytest.fixture(scope="module")
def emu(emulator: EmulatorServer, tmp_path_factory: Any) -> Iterator[EmulatorServer]:
    folder = tmp_path_factory.mktemp("obo")
    shutil.copytree(emulator.state_dir / "tls", folder / "state" / "tls")
    (folder / "directory.json").write_text(json.dumps(obo_directory()))
    server = EmulatorServer(directory=folder / "directory.json", state_dir=folder / "state",
                            https_port=0, http_port=0).start()
    yield server
    server.stop()


def confidential(emu: EmulatorServer, app_id: str,
                 credential: Any = "default") -> msal.ConfidentialClientApplication:
    return msal.ConfidentialClientApplication(
        app_id, client_credential=SECRETS[app_id] if credential == "default" else credential,
        authority=emu.authority, instance_discovery=False, verify=emu.ca_bundle,
        token_cache=msal.TokenCache())


def user_token(emu: EmulatorServer, app_id: str, scopes: list[str], username: str = ADELE,
               redirect_uri: str = FRONT_REDIRECT) -> dict[str, Any]:
    """The auth code flow with unmodified MSAL through the emulator's pages."""
    app = confidential(emu, app_id)
    flow = app.initiate_auth_code_flow(scopes, redirect_uri=redirect_uri,
                                       response_mode="form_post")
    result = app.acquire_token_by_auth_code_flow(
        flow, browser_sign_in(flow["auth_uri"], username, DEFAULT_PASSWORD).params)
    assert "access_token" in result, result
    return result


@pytest.fixture(scope="module")
def todo_assertion(emu: EmulatorServer) -> str:
    """What the front app sends Todo API: Adele's access token for it."""
    return user_token(emu, FRONT, [f"api://{TODO_API}/access_as_user"])["access_token"]


def assert_obo_error(result: dict[str, Any], error: str, code: int) -> str:
    assert "access_token" not in result, result
    assert result["error"] == error, result
    assert result["error_codes"] == [code], result
    assert result["error_description"].startswith(f"AADSTS{code}: "), result
    return result["error_description"]


# ---------------------------------------------------------------------------------------------
# Success
# ---------------------------------------------------------------------------------------------

def test_obo_trades_the_users_api_token_for_a_graph_token(emu, todo_assertion):
    adele = emu.directory.user_by_username(ADELE)
    assert decode_jwt(todo_assertion)[1]["aud"] == TODO_API   # a v2 token for Todo API

    middle_tier = confidential(emu, TODO_API)
    result = middle_tier.acquire_token_on_behalf_of(todo_assertion, [GRAPH_USER_READ])
    assert "access_token" in result, result
    assert result["token_type"] == "Bearer"
    assert GRAPH_USER_READ in result["scope"].split()
    assert "offline_access" not in result["scope"].split()
    assert result["refresh_token"]

    header, claims = decode_jwt(result["access_token"])
    assert header["alg"] == "RS256" and "x5t" in header        # a v1 Graph token
    assert claims["aud"] in (GRAPH_APP_ID, "https://graph.microsoft.com")
    assert claims["iss"] == f"https://sts.windows.net/{emu.tenant_id}/"
    assert claims["ver"] == "1.0"
    # The user is kept; the middle tier is the client.
    assert (claims["oid"], claims["upn"], claims["tid"]) == (adele.id, ADELE, emu.tenant_id)
    assert (claims["appid"], claims["app_displayname"], claims["appidacr"]) == (
        TODO_API, "Todo API", "1")
    # scp: the middle tier's granted Graph permissions (an admin granted these two).
    assert {"User.Read", "GroupMember.Read.All"} <= set(claims["scp"].split())
    assert "access_as_user" not in claims["scp"].split()
    assert "roles" not in claims

    # The ID token (openid, added by MSAL) is the middle tier's, about the same user.
    id_claims = result["id_token_claims"]
    assert (id_claims["aud"], id_claims["oid"]) == (TODO_API, adele.id)

    # The emulator's Graph takes it, group permission included.
    me = get_me(emu, result["access_token"])
    assert me.status_code == 200 and me.json()["userPrincipalName"] == ADELE
    groups = requests.post(f"{emu.https_base}/v1.0/me/getMemberGroups",
                           json={"securityEnabledOnly": True}, verify=emu.ca_bundle,
                           headers={"Authorization": f"Bearer {result['access_token']}"})
    assert groups.status_code == 200 and groups.json()["value"] == [ENGINEERING]

    # The refresh token works for the middle tier.
    refreshed = middle_tier.acquire_token_by_refresh_token(result["refresh_token"],
                                                           [GRAPH_USER_READ])
    assert "access_token" in refreshed, refreshed
    assert decode_jwt(refreshed["access_token"])[1]["appid"] == TODO_API


def test_one_assertion_may_be_redeemed_again(emu, todo_assertion):
    middle_tier = confidential(emu, TODO_API)
    first = middle_tier.acquire_token_on_behalf_of(todo_assertion, [GRAPH_USER_READ])
    second = middle_tier.acquire_token_on_behalf_of(todo_assertion, [GRAPH_USER_READ])
    assert "access_token" in first and "access_token" in second, (first, second)
    assert first["access_token"] != second["access_token"]


def test_default_scope_gets_every_granted_permission(emu, todo_assertion):
    result = confidential(emu, TODO_API).acquire_token_on_behalf_of(
        todo_assertion, ["https://graph.microsoft.com/.default"])
    assert "access_token" in result, result
    scp = decode_jwt(result["access_token"])[1]["scp"].split()
    assert {"User.Read", "GroupMember.Read.All"} <= set(scp)


def test_a_v1_api_token_for_an_identifier_uri_is_accepted(emu):
    assertion = user_token(emu, FRONT, [f"{LEGACY_URI}/access_as_user"])["access_token"]
    assert decode_jwt(assertion)[1]["aud"] == LEGACY_URI   # a v1 token names the URI
    result = confidential(emu, LEGACY_API).acquire_token_on_behalf_of(
        assertion, [GRAPH_USER_READ])
    assert "access_token" in result, result
    claims = decode_jwt(result["access_token"])[1]
    # Graph tokens carry the OIDC scopes in scp too; the admin granted only User.Read.
    assert claims["appid"] == LEGACY_API
    assert "User.Read" in claims["scp"].split()
    assert "GroupMember.Read.All" not in claims["scp"].split()


def test_a_downstream_api_of_the_directory_gets_its_own_token_format(emu, todo_assertion):
    adele = emu.directory.user_by_username(ADELE)
    scope = f"api://{REPORTS_API}/access_as_user"
    result = confidential(emu, TODO_API).acquire_token_on_behalf_of(todo_assertion, [scope])
    assert "access_token" in result, result
    assert scope in result["scope"].split()
    header, claims = decode_jwt(result["access_token"])
    # Reports API asks for v2 tokens: aud is its appId, the middle tier is azp.
    assert "x5t" not in header
    assert (claims["aud"], claims["ver"], claims["iss"]) == (
        REPORTS_API, "2.0", f"{emu.authority}/v2.0")
    assert (claims["azp"], claims["azpacr"]) == (TODO_API, "1")
    assert (claims["oid"], claims["preferred_username"]) == (adele.id, ADELE)
    assert claims["scp"] == "access_as_user"


def test_a_request_spanning_two_resources_is_refused(emu, todo_assertion):
    result = confidential(emu, TODO_API).acquire_token_on_behalf_of(
        todo_assertion, [GRAPH_USER_READ, f"api://{REPORTS_API}/access_as_user"])
    assert_obo_error(result, "invalid_scope", 28000)


def test_without_offline_access_or_openid_no_refresh_or_id_token(emu, todo_assertion):
    # MSAL always adds both; a raw request shows what each one brings.
    response = requests.post(token_url(emu), verify=emu.ca_bundle, data={
        "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
        "requested_token_use": "on_behalf_of", "client_id": TODO_API,
        "client_secret": SECRETS[TODO_API], "assertion": todo_assertion,
        "scope": GRAPH_USER_READ})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["scope"] == GRAPH_USER_READ
    assert "refresh_token" not in body and "id_token" not in body


# ---------------------------------------------------------------------------------------------
# Refusals
# ---------------------------------------------------------------------------------------------

def test_a_graph_token_is_not_an_assertion_for_the_middle_tier(emu):
    graph_token = user_token(emu, FRONT, ["User.Read"])["access_token"]
    result = confidential(emu, TODO_API).acquire_token_on_behalf_of(graph_token,
                                                                   [GRAPH_USER_READ])
    text = assert_obo_error(result, "invalid_grant", 500131)
    assert "Assertion audience does not match the Client app presenting the assertion." in text
    assert f"The audience in the assertion was '{GRAPH_APP_ID}'" in text
    assert f"the expected audience is '{TODO_API}'" in text
    assert f"App ID '{TODO_API}'(Todo API)" in text
    assert result["error_uri"].endswith("?code=500131")


def test_a_token_for_another_api_is_refused(emu, todo_assertion):
    result = confidential(emu, REPORTS_API).acquire_token_on_behalf_of(todo_assertion,
                                                                      [GRAPH_USER_READ])
    assert f"'{TODO_API}'" in assert_obo_error(result, "invalid_grant", 500131)


def test_a_token_the_emulator_did_not_sign_is_refused(emu, todo_assertion):
    header, claims = decode_jwt(todo_assertion)
    foreign_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(claims, foreign_key, algorithm="RS256", headers={"kid": header["kid"]})
    middle_tier = confidential(emu, TODO_API)
    text = assert_obo_error(middle_tier.acquire_token_on_behalf_of(forged, [GRAPH_USER_READ]),
                            "invalid_grant", 50013)
    assert "Assertion failed signature validation." in text

    # A genuine token with a payload changed after signing.
    head, _, signature = todo_assertion.split(".")
    other = {**claims, "oid": emu.directory.user_by_username(MEGAN).id}
    payload = jwt.utils.base64url_encode(json.dumps(other).encode()).decode()
    tampered = f"{head}.{payload}.{signature}"
    assert_obo_error(middle_tier.acquire_token_on_behalf_of(tampered, [GRAPH_USER_READ]),
                     "invalid_grant", 50013)

    # Signed by a key the emulator does not publish, and no JWT at all.
    unknown = jwt.encode(claims, foreign_key, algorithm="RS256", headers={"kid": "nope"})
    for bad in (unknown, "not-a-jwt"):
        assert_obo_error(middle_tier.acquire_token_on_behalf_of(bad, [GRAPH_USER_READ]),
                         "invalid_grant", 50013)


def test_an_id_token_is_not_an_assertion(emu):
    # Its audience is the app itself, but it is no access token.
    id_token = user_token(emu, FRONT, ["User.Read"])["id_token"]
    result = confidential(emu, FRONT).acquire_token_on_behalf_of(id_token, [GRAPH_USER_READ])
    assert "not an access token" in assert_obo_error(result, "invalid_grant", 50013)


def test_a_revoked_assertion_is_refused(emu):
    # A code redeemed twice revokes the tokens of its first redemption (RFC 6749 §4.1.2).
    front = WebApp(FRONT, SECRETS[FRONT], FRONT_REDIRECT, FRONT_REDIRECT)
    scope = f"api://{TODO_API}/access_as_user openid offline_access"
    grant = sign_in_for_code(emu, front, scope=scope)
    first = redeem_code(emu, front, grant, scope=scope)
    assert first.status_code == 200, first.text
    assert redeem_code(emu, front, grant, scope=scope).status_code == 400
    result = confidential(emu, TODO_API).acquire_token_on_behalf_of(
        first.json()["access_token"], [GRAPH_USER_READ])
    assert "revoked" in assert_obo_error(result, "invalid_grant", 50013)


def test_an_expired_assertion_is_refused(emu, todo_assertion):
    expires = decode_jwt(todo_assertion)[1]["exp"]
    emu.clock.advance(expires - emu.clock.now() + 301)   # past the 5 minutes of skew
    try:
        result = confidential(emu, TODO_API).acquire_token_on_behalf_of(todo_assertion,
                                                                       [GRAPH_USER_READ])
    finally:
        emu.clock.reset()
    text = assert_obo_error(result, "invalid_grant", 500133)
    assert "Assertion isn't within its valid time range." in text
    assert "expiry time of assertion" in text


def test_a_client_without_a_credential_is_refused(emu, todo_assertion):
    # OBO is for confidential clients: MSAL without a credential sends none.
    result = confidential(emu, TODO_API, credential=None).acquire_token_on_behalf_of(
        todo_assertion, [GRAPH_USER_READ])
    assert_obo_error(result, "invalid_client", 7000218)
    # And a wrong secret is a wrong secret.
    result = confidential(emu, TODO_API, credential="wrong").acquire_token_on_behalf_of(
        todo_assertion, [GRAPH_USER_READ])
    assert_obo_error(result, "invalid_client", 7000215)


def test_an_app_only_assertion_is_refused(emu):
    app_token = confidential(emu, FRONT).acquire_token_for_client([f"api://{TODO_API}/.default"])
    assert "access_token" in app_token, app_token
    claims = decode_jwt(app_token["access_token"])[1]
    assert claims["aud"] == TODO_API and claims["roles"] == ["Todo.Read.All"]
    result = confidential(emu, TODO_API).acquire_token_on_behalf_of(app_token["access_token"],
                                                                   [GRAPH_USER_READ])
    text = assert_obo_error(result, "invalid_grant", 7000114)
    assert "isn't allowed to make application on-behalf-of calls" in text


def test_consent_is_required_for_the_downstream_scopes(emu):
    assertion = user_token(emu, FRONT, [f"api://{REPORTS_API}/access_as_user"])["access_token"]
    reports = confidential(emu, REPORTS_API)
    for scopes in ([GRAPH_USER_READ], ["https://graph.microsoft.com/.default"]):
        result = reports.acquire_token_on_behalf_of(assertion, scopes)
        text = assert_obo_error(result, "invalid_grant", 65001)
        assert result["suberror"] == "consent_required"
        assert f"application with ID '{REPORTS_API}' named 'Reports API'" in text

    # Once the user has consented to the middle tier itself, the same assertion works. (A new
    # MSAL instance: MSAL replays an identical request's HTTP 400 for a while.)
    user_token(emu, REPORTS_API, ["User.Read"], redirect_uri=API_REDIRECT)
    reports = confidential(emu, REPORTS_API)
    result = reports.acquire_token_on_behalf_of(assertion, [GRAPH_USER_READ])
    assert "access_token" in result, result
    assert decode_jwt(result["access_token"])[1]["appid"] == REPORTS_API
    # ... for what was consented to, not more.
    more = reports.acquire_token_on_behalf_of(assertion, ["https://graph.microsoft.com/Mail.Read"])
    assert assert_obo_error(more, "invalid_grant", 65001) and more["suberror"] == \
        "consent_required"


def test_an_admin_grant_covers_only_its_scopes(emu, todo_assertion):
    result = confidential(emu, TODO_API).acquire_token_on_behalf_of(
        todo_assertion, ["https://graph.microsoft.com/Mail.Read"])
    assert_obo_error(result, "invalid_grant", 65001)
    assert result["suberror"] == "consent_required"


def test_malformed_requests(emu, todo_assertion):
    base = {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
            "requested_token_use": "on_behalf_of", "client_id": TODO_API,
            "client_secret": SECRETS[TODO_API], "assertion": todo_assertion,
            "scope": GRAPH_USER_READ}
    for missing in ("requested_token_use", "assertion", "scope"):
        response = requests.post(token_url(emu), verify=emu.ca_bundle,
                                 data={k: v for k, v in base.items() if k != missing})
        body = response.json()
        assert response.status_code == 400 and body["error_codes"] == [900144], body
        assert f"'{missing}'" in body["error_description"]
    response = requests.post(token_url(emu), verify=emu.ca_bundle,
                             data={**base, "requested_token_use": "exchange"})
    assert response.status_code == 400 and response.json()["error_codes"] == [90100]
