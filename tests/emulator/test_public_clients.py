"""Public clients (issue 15): public-client redirect URIs, loopback URIs on any port, the device
code flow and its device-login pages, the password grant, and the user realm endpoint — at the
protocol level (MSAL drives them in test_msal_methods.py)."""

from __future__ import annotations

import re
import shutil
from typing import Any
from urllib.parse import urlencode

import pytest
import requests

from entra_emulator.device_testing import device_sign_in
from entra_emulator.directory import DirectoryError, parse_directory
from entra_emulator.server import EmulatorServer
from entra_emulator.testing import SignInError
from tests.support import (
    ADELE,
    DEFAULT_PASSWORD,
    WebApp,
    assert_entra_error,
    authorize_url,
    browser_sign_in,
    decode_jwt,
    default_directory_document,
    get_me,
    pkce_pair,
    token_url,
)

CONSOLE = "9c1e7a3b-5d2f-4e8a-b6c4-1f0d3e5a7b9c"   # python-console in the default directory
SCOPE = "User.Read offline_access openid profile"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def post(emu: Any, path: str, data: dict[str, str]) -> requests.Response:
    return requests.post(f"{emu.https_base}/{emu.tenant_id}/oauth2/v2.0/{path}", data=data,
                         verify=emu.ca_bundle, timeout=10)


def start_device_flow(emu: Any, client_id: str = CONSOLE, scope: str = SCOPE) -> dict[str, Any]:
    response = post(emu, "devicecode", {"client_id": client_id, "scope": scope})
    assert response.status_code == 200, response.text
    return response.json()


def poll(emu: Any, flow: dict[str, Any], client_id: str = CONSOLE,
         **extra: str) -> requests.Response:
    return post(emu, "token", {"grant_type": DEVICE_GRANT, "client_id": client_id,
                               "device_code": flow["device_code"], "client_info": "1", **extra})


def enter(flow: dict[str, Any], **options: Any) -> str:
    return device_sign_in(flow["verification_uri"], flow["user_code"], ADELE, DEFAULT_PASSWORD,
                          **options)


# ---------------------------------------------------------------------------------------------
# The device code flow
# ---------------------------------------------------------------------------------------------

def test_discovery_names_the_device_authorization_endpoint(emulator):
    document = requests.get(f"{emulator.authority}/v2.0/.well-known/openid-configuration",
                            verify=emulator.ca_bundle, timeout=10).json()
    assert document["device_authorization_endpoint"] == \
        f"{emulator.https_base}/{emulator.tenant_id}/oauth2/v2.0/devicecode"


def test_the_device_authorization_response_is_entras(emulator):
    response = post(emulator, "devicecode", {"client_id": CONSOLE, "scope": SCOPE})
    flow = response.json()
    assert list(flow) == ["user_code", "device_code", "verification_uri", "expires_in",
                          "interval", "message"]
    assert re.fullmatch(r"[A-Z0-9]{9}", flow["user_code"])
    assert flow["verification_uri"] == f"{emulator.http_base}/devicelogin"
    assert (flow["expires_in"], flow["interval"]) == (900, 5)
    assert flow["message"] == (
        f"To sign in, use a web browser to open the page {flow['verification_uri']} and enter "
        f"the code {flow['user_code']} to authenticate.")
    assert response.headers["Cache-Control"] == "no-store, no-cache"


@pytest.mark.parametrize(("data", "error", "code"), [
    ({"scope": SCOPE}, "invalid_request", 900144),
    ({"client_id": CONSOLE}, "invalid_request", 900144),
    ({"client_id": "11111111-2222-3333-4444-555555555555", "scope": SCOPE},
     "unauthorized_client", 700016),
    ({"client_id": CONSOLE, "scope": "api://nothing-here/read"}, "invalid_resource", 500011),
])
def test_device_authorization_errors(emulator, data, error, code):
    assert_entra_error(post(emulator, "devicecode", data), 400, error, code)


def test_polling_is_pending_until_the_user_signs_in_then_tokens_once(emulator):
    flow = start_device_flow(emulator)
    assert_entra_error(poll(emulator, flow), 400, "authorization_pending", 70016)
    assert "You have signed in to the python-console application" in enter(flow)
    response = poll(emulator, flow)
    body = response.json()
    assert response.status_code == 200, body
    assert {"access_token", "refresh_token", "id_token", "client_info"} <= set(body)
    assert body["scope"] == "User.Read profile openid email" or "User.Read" in body["scope"]
    _, claims = decode_jwt(body["access_token"])
    assert claims["appidacr"] == "0" and claims["upn"] == ADELE
    assert get_me(emulator, body["access_token"]).json()["userPrincipalName"] == ADELE
    # Spent: the device code is not recognized again.
    assert_entra_error(poll(emulator, flow), 400, "bad_verification_code", 70018)


def test_a_user_who_cancels_declines_the_device(emulator):
    flow = start_device_flow(emulator)
    assert "You declined to sign in" in enter(flow, confirm="cancel")
    assert_entra_error(poll(emulator, flow), 400, "authorization_declined", 65004)


def test_declining_consent_declines_the_device(emulator):
    # Calendars.Read is not granted to python-console: the consent page asks for it.
    flow = start_device_flow(emulator, scope="Calendars.Read offline_access openid profile")
    assert "You declined to sign in" in enter(flow, consent="cancel")
    assert_entra_error(poll(emulator, flow), 400, "authorization_declined", 65004)


def test_consent_on_the_device_login_pages_is_remembered(emulator):
    flow = start_device_flow(emulator, scope="Calendars.Read offline_access openid profile")
    enter(flow)
    body = poll(emulator, flow).json()
    assert "Calendars.Read" in body["scope"]


def test_an_expired_device_code(emulator):
    flow = start_device_flow(emulator)
    emulator.clock.advance(901)
    assert_entra_error(poll(emulator, flow), 400, "expired_token", 70019)
    with pytest.raises(SignInError, match="That code has expired"):
        enter(flow)


def test_unknown_device_codes_and_other_clients_codes(emulator, default_app):
    flow = start_device_flow(emulator)
    assert_entra_error(poll(emulator, {"device_code": "DAQAB-made-up"}), 400,
                       "bad_verification_code", 70018)
    assert_entra_error(poll(emulator, flow, client_id=default_app.client_id,
                            client_secret=default_app.client_secret),
                       400, "bad_verification_code", 70018)


def test_a_wrong_user_code_is_said_so_on_the_page(emulator):
    with pytest.raises(SignInError, match="That code didn't work"):
        device_sign_in(f"{emulator.http_base}/devicelogin", "NOTACODE9", ADELE, DEFAULT_PASSWORD)


def test_a_wrong_password_on_the_device_login_pages(emulator):
    flow = start_device_flow(emulator)
    with pytest.raises(SignInError, match="password is incorrect"):
        device_sign_in(flow["verification_uri"], flow["user_code"], ADELE, "wrong")
    assert_entra_error(poll(emulator, flow), 400, "authorization_pending", 70016)


def test_a_code_is_used_once_on_the_pages(emulator):
    flow = start_device_flow(emulator)
    enter(flow)
    with pytest.raises(SignInError, match="already used"):
        enter(flow)


def test_the_browser_sso_session_serves_a_second_device(emulator):
    browser = requests.Session()
    enter(start_device_flow(emulator), session=browser)
    flow = start_device_flow(emulator)
    # No password this time: the SSO cookie signs the user in.
    text = device_sign_in(flow["verification_uri"], flow["user_code"], ADELE, "not-asked",
                          session=browser)
    assert "You have signed in" in text
    assert poll(emulator, flow).status_code == 200


def test_a_confidential_client_polls_with_its_secret(emulator, default_app):
    flow = start_device_flow(emulator, client_id=default_app.client_id)
    enter(flow)
    assert_entra_error(poll(emulator, flow, client_id=default_app.client_id), 401,
                       "invalid_client", 7000218)
    response = poll(emulator, flow, client_id=default_app.client_id,
                    client_secret=default_app.client_secret)
    assert response.status_code == 200, response.text
    assert decode_jwt(response.json()["access_token"])[1]["appidacr"] == "1"


def test_a_public_client_presenting_a_secret_is_refused(emulator):
    flow = start_device_flow(emulator)
    enter(flow)
    assert_entra_error(poll(emulator, flow, client_secret="anything"), 401, "invalid_client",
                       700025)


def test_a_device_flow_spans_workers(emulator, tmp_path):
    """Issued on one worker, entered and signed in on another's pages, polled on the first:
    device codes live in the shared state database."""
    shared = tmp_path / "shared-state"
    shutil.copytree(emulator.state_dir / "tls", shared / "tls")
    first = EmulatorServer(state_dir=shared, https_port=0, http_port=0).start()
    second = EmulatorServer(state_dir=shared, https_port=0, http_port=0).start()
    try:
        flow = start_device_flow(first)
        assert_entra_error(poll(second, flow), 400, "authorization_pending", 70016)
        device_sign_in(f"{second.http_base}/devicelogin", flow["user_code"], ADELE,
                       DEFAULT_PASSWORD)
        assert poll(first, flow).status_code == 200
        assert_entra_error(poll(second, flow), 400, "bad_verification_code", 70018)
    finally:
        first.stop()
        second.stop()


# ---------------------------------------------------------------------------------------------
# Public-client redirect URIs, loopback on any port
# ---------------------------------------------------------------------------------------------

def sign_in_at(emu: Any, client_id: str, redirect_uri: str) -> tuple[str, str]:
    verifier, challenge = pkce_pair()
    result = browser_sign_in(authorize_url(
        emu, client_id, redirect_uri=redirect_uri, code_challenge=challenge,
        code_challenge_method="S256", state="s"), ADELE, DEFAULT_PASSWORD)
    assert result.url.startswith(redirect_uri + "?"), result.url
    return result.params["code"], verifier


def redeem(emu: Any, client_id: str, code: str, verifier: str, redirect_uri: str,
           **extra: str) -> requests.Response:
    return requests.post(token_url(emu), data={
        "client_id": client_id, "grant_type": "authorization_code", "code": code,
        "code_verifier": verifier, "redirect_uri": redirect_uri, "scope": SCOPE,
        "client_info": "1", **extra}, verify=emu.ca_bundle, timeout=10)


def test_a_public_client_redeems_its_code_without_a_secret_on_any_loopback_port(emulator):
    code, verifier = sign_in_at(emulator, CONSOLE, "http://localhost:54321")
    response = redeem(emulator, CONSOLE, code, verifier, "http://localhost:54321")
    assert response.status_code == 200, response.text
    body = response.json()
    assert decode_jwt(body["access_token"])[1]["appidacr"] == "0"
    # Its refresh token needs no secret either.
    refreshed = requests.post(token_url(emulator), data={
        "client_id": CONSOLE, "grant_type": "refresh_token", "scope": SCOPE,
        "refresh_token": body["refresh_token"]}, verify=emulator.ca_bundle, timeout=10)
    assert refreshed.status_code == 200, refreshed.text


def test_a_public_clients_code_with_a_secret_is_refused(emulator):
    code, verifier = sign_in_at(emulator, CONSOLE, "http://localhost:40000")
    assert_entra_error(redeem(emulator, CONSOLE, code, verifier, "http://localhost:40000",
                              client_secret="a-secret"), 401, "invalid_client", 700025)


@pytest.mark.parametrize("redirect_uri", [
    "http://localhost:54321/elsewhere",   # the path matters
    "https://localhost:54321",            # so does the scheme
    "http://127.0.0.1:54321",             # and the host
    "http://example.com",
])
def test_loopback_uris_match_on_any_port_only(emulator, redirect_uri):
    response = requests.get(authorize_url(emulator, CONSOLE, redirect_uri=redirect_uri),
                            allow_redirects=False, timeout=10)
    assert response.status_code == 400
    assert "AADSTS50011" in response.text


def test_a_web_apps_loopback_uri_matches_on_any_port_and_still_needs_its_secret(
        emulator, default_app: WebApp):
    moved = "http://localhost:5999/getAToken"
    code, verifier = sign_in_at(emulator, default_app.client_id, moved)
    assert_entra_error(redeem(emulator, default_app.client_id, code, verifier, moved), 401,
                       "invalid_client", 7000218)
    response = redeem(emulator, default_app.client_id, code, verifier, moved,
                      client_secret=default_app.client_secret)
    assert response.status_code == 200, response.text
    # And its refresh token needs the secret too.
    assert_entra_error(requests.post(token_url(emulator), data={
        "client_id": default_app.client_id, "grant_type": "refresh_token", "scope": SCOPE,
        "refresh_token": response.json()["refresh_token"]}, verify=emulator.ca_bundle,
        timeout=10), 401, "invalid_client", 7000218)


# ---------------------------------------------------------------------------------------------
# The password grant and the user realm
# ---------------------------------------------------------------------------------------------

def password(emu: Any, username: str = ADELE, secret: str = DEFAULT_PASSWORD,
             client_id: str = CONSOLE, **extra: str) -> requests.Response:
    return post(emu, "token", {"grant_type": "password", "client_id": client_id,
                               "username": username, "password": secret, "scope": SCOPE,
                               "client_info": "1", **extra})


def test_the_password_grant_for_a_public_client(emulator):
    response = password(emulator)
    body = response.json()
    assert response.status_code == 200, body
    assert {"access_token", "refresh_token", "id_token", "client_info"} <= set(body)
    _, claims = decode_jwt(body["access_token"])
    assert claims["appidacr"] == "0" and claims["upn"] == ADELE and claims["amr"] == ["pwd"]


@pytest.mark.parametrize(("username", "secret", "code"), [
    (ADELE, "wrong", 50126),
    ("nobody@contoso.onmicrosoft.com", DEFAULT_PASSWORD, 50034),
])
def test_the_password_grant_refuses_bad_credentials(emulator, username, secret, code):
    body = assert_entra_error(password(emulator, username, secret), 400, "invalid_grant", code)
    assert "nobody@" not in body["error_description"]


def test_the_password_grant_for_a_confidential_client(emulator, default_app):
    # Without a credential: the web app is not a public client.
    assert_entra_error(password(emulator, client_id=default_app.client_id), 401,
                       "invalid_client", 7000218)
    # With it, but the user never consented to the web app: no prompt can ask.
    body = assert_entra_error(password(emulator, client_id=default_app.client_id,
                                       client_secret=default_app.client_secret),
                              400, "invalid_grant", 65001)
    assert body["suberror"] == "consent_required"
    # Once the user has consented (a sign-in through the pages), the grant works.
    browser_sign_in(authorize_url(emulator, default_app.client_id,
                                  redirect_uri=default_app.redirect_uri), ADELE,
                    DEFAULT_PASSWORD)
    response = password(emulator, client_id=default_app.client_id,
                        client_secret=default_app.client_secret)
    assert response.status_code == 200, response.text
    assert decode_jwt(response.json()["access_token"])[1]["appidacr"] == "1"


def test_the_password_grant_refuses_accounts_that_need_mfa(start_emulator):
    document = default_directory_document()
    adele = next(u for u in document["users"] if u["userPrincipalName"] == ADELE)
    adele["perUserMfaState"] = "enforced"
    emu = start_emulator(directory=document)
    body = assert_entra_error(password(emu), 400, "invalid_grant", 50076)
    assert body["suberror"] == "basic_action"
    assert "00000003-0000-0000-c000-000000000000" in body["error_description"]
    # Graph does not show the field; interactive sign-in still works (no second factor here).
    user = emu.directory.user_by_username(ADELE)
    assert "perUserMfaState" not in user.graph and user.mfa_required
    flow = start_device_flow(emu)
    enter(flow)
    assert poll(emu, flow).status_code == 200


@pytest.mark.parametrize(("username", "expected"), [
    (ADELE, {"ver": "1.0", "account_type": "Managed", "domain_name": "contoso.onmicrosoft.com",
             "cloud_instance_name": "microsoftonline.com",
             "cloud_audience_urn": "urn:federation:MicrosoftOnline"}),
    ("someone@fabrikam.com", {"ver": "1.0", "account_type": "Unknown",
                              "cloud_instance_name": "microsoftonline.com"}),
])
def test_the_user_realm(emulator, username, expected):
    response = requests.get(f"{emulator.https_base}/common/userrealm/{username}?"
                            f"{urlencode({'api-version': '1.0'})}", verify=emulator.ca_bundle,
                            timeout=10)
    assert response.status_code == 200
    assert response.json() == expected


# ---------------------------------------------------------------------------------------------
# The directory file
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("change", "field"), [
    (lambda a: a.update(publicClient=["http://localhost"]), "publicClient"),
    (lambda a: a.update(publicClient={"redirectUris": "http://localhost"}),
     "publicClient.redirectUris"),
    (lambda a: a.update(publicClient={"redirectUris": ["no-scheme"]}),
     "publicClient.redirectUris"),
    (lambda a: a.update(isFallbackPublicClient="yes"), "isFallbackPublicClient"),
])
def test_malformed_public_client_fields_are_named(tmp_path, change, field):
    document = default_directory_document()
    change(document["applications"][2])
    with pytest.raises(DirectoryError, match=f"field '{re.escape(field)}'"):
        parse_directory(document, tmp_path / "directory.json")


def test_a_malformed_mfa_state_is_named(tmp_path):
    document = default_directory_document()
    document["users"][0]["perUserMfaState"] = "always"
    with pytest.raises(DirectoryError, match="field 'perUserMfaState'"):
        parse_directory(document, tmp_path / "directory.json")
