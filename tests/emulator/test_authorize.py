"""The authorize endpoint: error pages vs error redirects, prompt variants, SSO, consent, hints,
response modes. Driven over real HTTP with a cookie-keeping requests.Session."""

from __future__ import annotations

import base64
import json
import uuid
from urllib.parse import urlsplit

import pytest
import requests

from entra_emulator import authorize
from tests.support import (
    ADELE,
    DEFAULT_PASSWORD,
    MEGAN,
    SignInError,
    authorize_url,
    browser_sign_in,
    decode_jwt,
    params_of,
    pkce_pair,
    redeem_code,
    sign_in_for_code,
)

MIRIAM = "MiriamG@contoso.onmicrosoft.com"
LEE = "LeeG@contoso.onmicrosoft.com"


def assert_page_headers(response: requests.Response) -> None:
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "no-store" in response.headers["Cache-Control"]


def assert_error_redirect(response: requests.Response, redirect_uri: str, error: str,
                          code: int, state: str | None = "xyz") -> dict[str, str]:
    assert response.status_code == 302, response.text[:300]
    location = response.headers["Location"]
    assert location.startswith(redirect_uri + "?")
    params = params_of(location)
    assert params["error"] == error
    assert params["error_description"].startswith(f"AADSTS{code}: ")
    assert params.get("state") == state
    return params


@pytest.fixture
def url(emulator, default_app):
    def build(**params: str) -> str:
        query = {"redirect_uri": default_app.redirect_uri, "state": "xyz", **params}
        return authorize_url(emulator, default_app.client_id, **query)
    return build


# ---------------------------------------------------------------------------------------------
# Failures shown as Entra's error page: never a redirect to an untrusted URI
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("change", "code"), [
    ({"client_id": "11111111-2222-3333-4444-555555555555"}, 700016),
    ({"redirect_uri": "https://evil.example/callback"}, 50011),
    ({"redirect_uri": "http://localhost:5000/getAToken/"}, 50011),   # exact match only
    ({"redirect_uri": None}, 900971),   # omitted, and the app registers two
    ({"client_id": None}, 900144),
])
def test_untrusted_requests_get_an_error_page(emulator, default_app, change, code):
    query = {"client_id": default_app.client_id, "response_type": "code", "scope": "openid",
             "redirect_uri": default_app.redirect_uri, "state": "xyz", **change}
    response = requests.get(
        f"{emulator.http_base}/{emulator.tenant_id}/oauth2/v2.0/authorize",
        params={k: v for k, v in query.items() if v is not None}, allow_redirects=False)
    assert response.status_code == 400
    assert "Location" not in response.headers
    assert response.headers["Content-Type"].startswith("text/html")
    assert f"AADSTS{code}:" in response.text
    assert_page_headers(response)


def test_unknown_tenant_gets_an_error_page(emulator, default_app):
    response = requests.get(authorize_url(emulator, default_app.client_id,
                                          tenant="fabrikam.onmicrosoft.com",
                                          redirect_uri=default_app.redirect_uri),
                            allow_redirects=False)
    assert response.status_code == 400
    assert "AADSTS90002:" in response.text and "fabrikam.onmicrosoft.com" in response.text
    assert_page_headers(response)


def test_error_page_escapes_what_the_request_said(emulator, default_app):
    response = requests.get(authorize_url(emulator, default_app.client_id,
                                          redirect_uri="http://x/<script>alert(1)</script>"),
                            allow_redirects=False)
    assert response.status_code == 400
    assert "<script>alert(1)" not in response.text
    assert "&lt;script&gt;" in response.text


# ---------------------------------------------------------------------------------------------
# Failures told to the app at its redirect URI, with state
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("params", "error", "code"), [
    ({"response_type": "token"}, "unsupported_response_type", 70005),
    ({"response_type": ""}, "invalid_request", 900144),
    ({"scope": "User.Read Foo.Bar"}, "invalid_scope", 70011),
    ({"scope": "api://11111111-2222-3333-4444-555555555555/read"}, "invalid_resource", 500011),
    ({"scope": ""}, "invalid_request", 900144),
    ({"prompt": "sometimes"}, "invalid_request", 90023),
    ({"prompt": "none login"}, "invalid_request", 90023),
    ({"code_challenge": "short"}, "invalid_request", 501491),
    ({"code_challenge": "a" * 43, "code_challenge_method": "S512"}, "invalid_request", 90100),
    ({"code_challenge_method": "S256"}, "invalid_request", 900144),
    ({"max_age": "soon"}, "invalid_request", 90100),
    ({"id_token_hint": "not-a-token"}, "invalid_request", 50027),
    ({"response_mode": "carrier_pigeon"}, "invalid_request", 70007),
])
def test_invalid_requests_are_reported_to_the_app(url, default_app, params, error, code):
    response = requests.get(url(**params), allow_redirects=False)
    assert_error_redirect(response, default_app.redirect_uri, error, code)


# ---------------------------------------------------------------------------------------------
# The order of the checks: with two faults in one request, the earlier check speaks
# ---------------------------------------------------------------------------------------------

def test_the_checks_are_listed_in_the_order_entra_applies_them():
    assert [check.__name__ for check in authorize.ERROR_PAGE_CHECKS] == [
        "check_tenant", "check_client", "check_redirect_uri"]
    assert [check.__name__ for check in authorize.ERROR_REDIRECT_CHECKS] == [
        "check_response_mode", "check_response_type", "check_scope", "check_pkce",
        "check_prompt", "check_max_age", "check_id_token_hint", "check_claims"]


@pytest.mark.parametrize(("tenant", "change", "code"), [
    ("fabrikam.onmicrosoft.com", {"client_id": "11111111-2222-3333-4444-555555555555"}, 90002),
    (None, {"client_id": "11111111-2222-3333-4444-555555555555",
            "redirect_uri": "https://evil.example/callback"}, 700016),
    (None, {"redirect_uri": "https://evil.example/callback", "response_type": "token",
            "response_mode": "carrier_pigeon"}, 50011),
])
def test_error_page_checks_come_first_in_order(emulator, default_app, tenant, change, code):
    query = {"redirect_uri": default_app.redirect_uri, "state": "xyz", **change}
    client_id = query.pop("client_id", default_app.client_id)
    response = requests.get(authorize_url(emulator, client_id, tenant=tenant, **query),
                            allow_redirects=False)
    assert response.status_code == 400
    assert "Location" not in response.headers
    assert f"AADSTS{code}:" in response.text


@pytest.mark.parametrize(("params", "error", "code"), [
    ({"response_mode": "carrier_pigeon", "response_type": "token"}, "invalid_request", 70007),
    ({"response_type": "token", "scope": "Foo.Bar"}, "unsupported_response_type", 70005),
    ({"scope": "Foo.Bar", "code_challenge": "short"}, "invalid_scope", 70011),
    ({"code_challenge": "short", "prompt": "sometimes"}, "invalid_request", 501491),
    ({"prompt": "sometimes", "max_age": "soon"}, "invalid_request", 90023),
    ({"max_age": "soon", "id_token_hint": "not-a-token"}, "invalid_request", 90100),
])
def test_error_redirect_checks_run_in_order(url, default_app, params, error, code):
    response = requests.get(url(**params), allow_redirects=False)
    assert_error_redirect(response, default_app.redirect_uri, error, code)


def test_errors_after_response_mode_use_it_and_its_own_error_uses_the_query(url, default_app):
    # A bad response_mode cannot say how to answer, so that error comes back in the query...
    refused = requests.get(url(response_mode="form-post", response_type="token"),
                           allow_redirects=False)
    assert_error_redirect(refused, default_app.redirect_uri, "invalid_request", 70007)
    # ...while a later check's error comes back the way response_mode asked.
    response = requests.get(url(response_mode="form_post", response_type="token"),
                            allow_redirects=False)
    assert response.status_code == 200
    assert f'action="{default_app.redirect_uri}"' in response.text
    assert 'name="error" value="unsupported_response_type"' in response.text
    assert 'name="state" value="xyz"' in response.text


def test_error_redirect_without_state_has_no_state(emulator, default_app):
    response = requests.get(authorize_url(emulator, default_app.client_id, scope="Foo.Bar",
                                          redirect_uri=default_app.redirect_uri),
                            allow_redirects=False)
    params = assert_error_redirect(response, default_app.redirect_uri, "invalid_scope", 70011,
                                   state=None)
    assert params["error_uri"].endswith("?code=70011")


def test_prompt_none_without_a_session_is_login_required(url, default_app):
    response = requests.get(url(prompt="none"), allow_redirects=False)
    assert_error_redirect(response, default_app.redirect_uri, "login_required", 50058)


def test_prompt_none_error_can_come_back_as_form_post(url, default_app):
    response = requests.get(url(prompt="none", response_mode="form_post"),
                            allow_redirects=False)
    assert response.status_code == 200
    assert f'action="{default_app.redirect_uri}"' in response.text
    assert 'name="error" value="login_required"' in response.text
    assert 'name="state" value="xyz"' in response.text


# ---------------------------------------------------------------------------------------------
# The sign-in page
# ---------------------------------------------------------------------------------------------

def test_sign_in_page_is_the_documented_form(url):
    response = requests.get(url(), allow_redirects=False)
    assert response.status_code == 200
    assert_page_headers(response)
    html = response.text
    assert '<form method="post"' in html
    assert 'name="username"' in html and 'name="password" type="password"' in html
    assert '<button type="submit">' in html
    assert ADELE in html   # the account list that pre-fills the username
    assert DEFAULT_PASSWORD not in html


def test_wrong_password_shows_the_form_again_with_a_message(url):
    with pytest.raises(SignInError, match="account or password is incorrect"):
        browser_sign_in(url(), ADELE, "wrong")


def test_unknown_user_shows_the_form_again_with_a_message(url):
    with pytest.raises(SignInError, match="username may be incorrect"):
        browser_sign_in(url(), "nobody@contoso.onmicrosoft.com", DEFAULT_PASSWORD)


def test_wrong_password_page_keeps_status_200_and_the_username(emulator, url):
    browser = requests.Session()
    page = browser.get(url())
    ctx = page.text.split('name="ctx" value="')[1].split('"')[0]
    again = browser.post(f"{emulator.http_base}/{emulator.tenant_id}/login",
                         data={"ctx": ctx, "username": ADELE, "password": "nope"})
    assert again.status_code == 200
    assert 'class="error"' in again.text and f'value="{ADELE}"' in again.text
    assert_page_headers(again)


def test_expired_sign_in_flow_is_an_error_page(emulator):
    response = requests.post(f"{emulator.http_base}/{emulator.tenant_id}/login",
                             data={"ctx": "made-up", "username": ADELE, "password": "x"})
    assert response.status_code == 400
    assert "AADSTS50089:" in response.text
    assert_page_headers(response)


def test_login_hint_prefills_the_username(url):
    response = requests.get(url(login_hint=MEGAN))
    assert f'value="{MEGAN}"' in response.text


def test_select_account_shows_the_account_picker(url):
    response = requests.get(url(prompt="select_account"))
    assert "Pick an account" in response.text


# ---------------------------------------------------------------------------------------------
# A successful sign-in, SSO and the prompt values that change it
# ---------------------------------------------------------------------------------------------

def test_success_redirect_carries_code_client_info_state_session_state(emulator, default_app):
    grant = sign_in_for_code(emulator, default_app, ADELE)
    location = grant.result.url
    assert location.startswith(default_app.redirect_uri + "?code=")
    params = grant.result.params
    assert list(params) == ["code", "client_info", "state", "session_state"]
    uuid.UUID(params["session_state"])
    info = json.loads(base64.urlsafe_b64decode(params["client_info"] + "=="))
    assert info == {"uid": emulator.directory.user_by_username(ADELE).id,
                    "utid": emulator.tenant_id}


def test_sso_session_signs_in_silently_and_prompt_none_works(emulator, default_app, url):
    browser = requests.Session()
    sign_in_for_code(emulator, default_app, ADELE, session=browser)
    cookie = next(c for c in browser.cookies if c.name == "ESTSAUTH")
    assert cookie.has_nonstandard_attr("HttpOnly")
    silent = browser.get(url(), allow_redirects=False)
    assert silent.status_code == 302 and "code" in params_of(silent.headers["Location"])
    silent_none = browser.get(url(prompt="none"), allow_redirects=False)
    assert "code" in params_of(silent_none.headers["Location"])


def test_prompt_login_forces_sign_in_and_emits_auth_time(emulator, default_app, url):
    browser = requests.Session()
    sign_in_for_code(emulator, default_app, ADELE, session=browser)
    page = browser.get(url(prompt="login"), allow_redirects=False)
    assert page.status_code == 200 and 'name="password"' in page.text
    grant = sign_in_for_code(emulator, default_app, ADELE, session=browser, prompt="login")
    id_token = redeem_code(emulator, default_app, grant).json()["id_token"]
    assert "auth_time" in decode_jwt(id_token)[1]


def test_max_age_forces_sign_in_when_the_session_is_older(emulator, default_app, url):
    browser = requests.Session()
    sign_in_for_code(emulator, default_app, ADELE, session=browser)
    assert browser.get(url(max_age="3600"), allow_redirects=False).status_code == 302
    emulator.clock.advance(120)
    assert browser.get(url(max_age="60"), allow_redirects=False).status_code == 200
    response = browser.get(url(max_age="60", prompt="none"), allow_redirects=False)
    assert_error_redirect(response, default_app.redirect_uri, "login_required", 50058)


def test_login_hint_for_another_user_asks_to_sign_in(emulator, default_app, url):
    browser = requests.Session()
    sign_in_for_code(emulator, default_app, ADELE, session=browser)
    assert browser.get(url(login_hint=ADELE), allow_redirects=False).status_code == 302
    assert browser.get(url(login_hint=MEGAN), allow_redirects=False).status_code == 200


def test_id_token_hint_is_honoured(emulator, default_app, url):
    browser = requests.Session()
    grant = sign_in_for_code(emulator, default_app, ADELE, session=browser)
    adele_token = redeem_code(emulator, default_app, grant).json()["id_token"]
    silent = browser.get(url(prompt="none", id_token_hint=adele_token), allow_redirects=False)
    assert "code" in params_of(silent.headers["Location"])

    other_browser = requests.Session()
    sign_in_for_code(emulator, default_app, MEGAN, session=other_browser)
    mismatch = other_browser.get(url(prompt="none", id_token_hint=adele_token),
                                 allow_redirects=False)
    assert_error_redirect(mismatch, default_app.redirect_uri, "login_required", 50058)
    page = other_browser.get(url(id_token_hint=adele_token))
    assert f'value="{ADELE}"' in page.text   # the hinted user is pre-filled


def test_authorize_accepts_post(emulator, default_app):
    verifier, challenge = pkce_pair()
    browser = requests.Session()
    sign_in_for_code(emulator, default_app, ADELE, session=browser)
    response = browser.post(
        f"{emulator.http_base}/{emulator.tenant_id}/oauth2/v2.0/authorize",
        data={"client_id": default_app.client_id, "response_type": "code",
              "redirect_uri": default_app.redirect_uri, "scope": "openid profile User.Read",
              "state": "posted", "code_challenge": challenge, "code_challenge_method": "S256",
              "unknown_parameter": "is ignored"},
        allow_redirects=False)
    params = params_of(response.headers["Location"])
    assert params["state"] == "posted" and "code" in params


def test_form_post_response_mode(emulator, default_app):
    grant = sign_in_for_code(emulator, default_app, ADELE, response_mode="form_post")
    assert grant.result.method == "POST"
    assert grant.result.url == default_app.redirect_uri
    assert set(grant.result.data) == {"code", "client_info", "state", "session_state"}
    assert redeem_code(emulator, default_app, grant).status_code == 200


def test_form_post_page_has_the_documented_form(emulator, default_app, url):
    browser = requests.Session()
    sign_in_for_code(emulator, default_app, ADELE, session=browser)
    page = browser.get(url(response_mode="form_post"))
    assert page.status_code == 200
    assert f'<form method="post" action="{default_app.redirect_uri}"' in page.text
    assert 'type="hidden" name="code"' in page.text and "<script" in page.text
    assert_page_headers(page)


def test_fragment_response_mode(emulator, default_app):
    grant = sign_in_for_code(emulator, default_app, ADELE, response_mode="fragment")
    assert urlsplit(grant.result.url).fragment.startswith("code=")


def test_plain_http_port_serves_only_browser_pages(emulator):
    token = requests.post(f"{emulator.http_base}/{emulator.tenant_id}/oauth2/v2.0/token",
                          data={"grant_type": "client_credentials"})
    assert token.status_code == 404
    me = requests.get(f"{emulator.http_base}/v1.0/me")
    assert me.status_code == 404


# ---------------------------------------------------------------------------------------------
# Consent (a fresh emulator: consent is remembered in the state folder)
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def fresh(start_emulator, default_app):
    emu = start_emulator()

    def build(**params: str) -> str:
        query = {"redirect_uri": default_app.redirect_uri, "state": "xyz", **params}
        return authorize_url(emu, default_app.client_id, **query)
    return emu, build


def _sign_in_until_consent(emu, url_for, username: str) -> tuple[requests.Session, str]:
    browser = requests.Session()
    page = browser.get(url_for())
    ctx = page.text.split('name="ctx" value="')[1].split('"')[0]
    consent = browser.post(f"{emu.http_base}/{emu.tenant_id}/login",
                           data={"ctx": ctx, "username": username,
                                 "password": DEFAULT_PASSWORD}, allow_redirects=False)
    return browser, consent.text if consent.status_code == 200 else ""


def test_first_sign_in_asks_for_consent_in_words(fresh):
    emu, url_for = fresh
    _, page = _sign_in_until_consent(emu, url_for, LEE)
    assert "Sign you in and read your profile" in page
    assert "Maintain access to data you have given it access to" in page
    assert '<button name="decision" value="accept">Accept</button>' in page.replace(
        ' type="submit"', "")
    assert 'value="cancel"' in page


def test_consent_cancel_returns_access_denied(fresh, default_app):
    emu, url_for = fresh
    result = browser_sign_in(url_for(), LEE, DEFAULT_PASSWORD, consent="cancel")
    assert result.params["error"] == "access_denied"
    assert result.params["error_description"].startswith("AADSTS65004: ")
    assert result.params["state"] == "xyz"


def test_prompt_none_without_consent_is_consent_required(fresh, default_app):
    emu, url_for = fresh
    browser = requests.Session()
    browser_sign_in(url_for(), LEE, DEFAULT_PASSWORD, session=browser, consent="cancel")
    response = browser.get(url_for(prompt="none"), allow_redirects=False)
    assert_error_redirect(response, default_app.redirect_uri, "consent_required", 65001)


def test_consent_is_remembered_and_prompt_consent_asks_again(fresh):
    emu, url_for = fresh
    browser_sign_in(url_for(), MIRIAM, DEFAULT_PASSWORD)
    _, page = _sign_in_until_consent(emu, url_for, MIRIAM)
    assert page == ""   # a new browser signs in straight through: no consent page
    _, page = _sign_in_until_consent(emu, lambda: url_for(prompt="consent"), MIRIAM)
    assert "Permissions requested" in page


def test_consent_page_refuses_a_post_from_another_browser(fresh):
    emu, url_for = fresh
    _, page = _sign_in_until_consent(emu, url_for, LEE)
    ctx = page.split('name="ctx" value="')[1].split('"')[0]
    stranger = requests.post(f"{emu.http_base}/{emu.tenant_id}/consent",
                             data={"ctx": ctx, "decision": "accept"}, allow_redirects=False)
    assert stranger.status_code == 200 and 'name="password"' in stranger.text
    assert not emu.state.consents.granted(emu.directory.user_by_username(LEE).id,
                                          emu.directory.applications[0].app_id)
