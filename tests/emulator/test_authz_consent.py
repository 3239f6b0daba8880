"""Consent per resource (issue 12, item 3): each API's scopes in its own words, remembered per
user, app and scope, asked again only for what is new; consent_required / AADSTS65001 for
silent requests; Admin-type permissions only through an administrator's grant."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import msal
import requests

from tests.emulator.authz_support import (
    DIEGO,
    LEE,
    TODO_API,
    TODO_READ,
    TODO_READWRITE,
    sign_in_with_msal,
    web_msal_app,
)
from tests.support import DEFAULT_PASSWORD, decode_jwt


def consent_page_for(emu: Any, default_app: Any, scopes: list[str], username: str = LEE, *,
                     browser: requests.Session | None = None,
                     **flow_options: Any) -> tuple[requests.Session, requests.Response]:
    """Start MSAL's flow for `scopes` and sign in if asked: the page the emulator shows next
    (or its redirect to the app)."""
    browser = browser or requests.Session()
    browser.verify = emu.ca_bundle
    flow = web_msal_app(emu, default_app).initiate_auth_code_flow(
        scopes, redirect_uri=default_app.redirect_uri, **flow_options)
    page = browser.get(flow["auth_uri"], allow_redirects=False)
    if 'name="password"' in page.text:
        ctx = page.text.split('name="ctx" value="')[1].split('"')[0]
        page = browser.post(f"{emu.https_base}/{emu.tenant_id}/login", allow_redirects=False,
                            data={"ctx": ctx, "username": username, "password": DEFAULT_PASSWORD})
    return browser, page


def redirect_params(response: requests.Response) -> dict[str, str]:
    assert response.status_code == 302, response.text[:500]
    return {k: v[0] for k, v in parse_qs(urlsplit(response.headers["Location"]).query).items()}


def test_consent_page_shows_each_api_in_its_own_words(emulator, default_app):
    _, page = consent_page_for(emulator, default_app, [TODO_READ, TODO_READWRITE])
    assert page.status_code == 200 and "Permissions requested" in page.text
    assert 'data-api="Todo API"' in page.text and 'data-api="Microsoft Graph"' in page.text
    for words in ("Read your todo lists", "Allow the app to read your todo lists.",
                  "Read and change your todo lists", "Sign you in",
                  "Maintain access to data you have given it access to"):
        assert words in page.text
    assert "Sign you in and read your profile" not in page.text   # User.Read was not asked


def test_incremental_consent_asks_only_for_what_is_new(emulator, default_app):
    app = web_msal_app(emulator, default_app)
    browser = requests.Session()
    first = sign_in_with_msal(app, default_app.redirect_uri, LEE, ["User.Read"], session=browser)
    assert "error" not in first, first

    # Same browser (SSO): the Todo API scope is new, so only it is asked for.
    _, page = consent_page_for(emulator, default_app, [TODO_READ], browser=browser)
    assert page.status_code == 200
    assert "Read your todo lists" in page.text
    assert "Sign you in and read your profile" not in page.text
    assert "Maintain access" not in page.text   # offline_access was granted already
    result = sign_in_with_msal(app, default_app.redirect_uri, LEE, [TODO_READ], session=browser)
    assert decode_jwt(result["access_token"])[1]["scp"] == "ToDoList.Read"

    # Remembered per user, app and scope.
    lee = emulator.directory.user_by_username(LEE).id
    granted = emulator.state.consents.granted(lee, default_app.client_id)
    assert {"User.Read", "openid", "profile", "offline_access",
            f"{TODO_API}/ToDoList.Read"} <= granted
    _, again = consent_page_for(emulator, default_app, [TODO_READ], browser=browser)
    assert "code" in redirect_params(again)   # nothing new: straight back to the app
    _, more = consent_page_for(emulator, default_app, [TODO_READWRITE], browser=browser)
    assert "Read and change your todo lists" in more.text
    assert "Read your todo lists" not in more.text.replace("Read your todo lists.", "")

    # Another user is asked for everything.
    _, diego = consent_page_for(emulator, default_app, [TODO_READ], DIEGO)
    assert "Read your todo lists" in diego.text


def test_prompt_consent_asks_again_for_everything_requested(emulator, default_app):
    browser = requests.Session()
    sign_in_with_msal(web_msal_app(emulator, default_app), default_app.redirect_uri, LEE,
                      [TODO_READ], session=browser)
    _, page = consent_page_for(emulator, default_app, [TODO_READ], browser=browser,
                               prompt="consent")
    assert "Read your todo lists" in page.text and "Sign you in" in page.text


def test_prompt_none_without_consent_for_the_api_is_consent_required(emulator, default_app):
    browser = requests.Session()
    sign_in_with_msal(web_msal_app(emulator, default_app), default_app.redirect_uri, LEE,
                      ["User.Read"], session=browser)
    _, answer = consent_page_for(emulator, default_app, [TODO_READ], browser=browser,
                                 prompt="none")
    params = redirect_params(answer)
    assert params["error"] == "consent_required"
    assert params["error_description"].startswith("AADSTS65001: ")


def test_silent_request_without_consent_then_with_it(emulator, default_app):
    app = web_msal_app(emulator, default_app)
    browser = requests.Session()
    sign_in_with_msal(app, default_app.redirect_uri, LEE, ["User.Read"], session=browser)
    [account] = app.get_accounts()
    refused = app.acquire_token_silent_with_error([TODO_READ], account=account)
    assert refused["error"] == "invalid_grant", refused
    assert refused["error_codes"] == [65001]
    assert refused["suberror"] == "consent_required"
    assert refused["classification"] == "consent_required"   # MSAL's copy of the suberror
    assert "has not consented to use the application" in refused["error_description"]

    # Consent interactively (another MSAL instance); the first one's refresh token, which is
    # not bound to a resource, now gets the API token silently. (A new instance on the same
    # token cache: MSAL replays a refused refresh request's answer from its own memory.)
    sign_in_with_msal(web_msal_app(emulator, default_app), default_app.redirect_uri, LEE,
                      [TODO_READ], session=browser)
    again = msal.ConfidentialClientApplication(
        default_app.client_id, client_credential=default_app.client_secret,
        authority=emulator.authority, instance_discovery=False, verify=emulator.ca_bundle,
        token_cache=app.token_cache)
    result = again.acquire_token_silent_with_error([TODO_READ], account=account)
    assert "error" not in result, result
    claims = decode_jwt(result["access_token"])[1]
    assert claims["aud"] == TODO_API and claims["scp"] == "ToDoList.Read"


def test_admin_scope_granted_by_an_administrator_needs_no_user_consent(emulator, default_app):
    browser, page = consent_page_for(emulator, default_app, ["User.Read", "GroupMember.Read.All"])
    assert "Sign you in and read your profile" in page.text
    assert "Read group memberships" not in page.text   # the directory's AllPrincipals grant
    result = sign_in_with_msal(web_msal_app(emulator, default_app), default_app.redirect_uri,
                               LEE, ["User.Read", "GroupMember.Read.All"], session=browser)
    assert "GroupMember.Read.All" in decode_jwt(result["access_token"])[1]["scp"].split()


def test_admin_scope_without_an_admin_grant_is_90094(emulator, default_app):
    _, page = consent_page_for(emulator, default_app, ["User.Read", "Directory.Read.All"])
    assert page.status_code == 400
    assert "AADSTS90094" in page.text and "The grant requires admin permission." in page.text
    browser = requests.Session()
    sign_in_with_msal(web_msal_app(emulator, default_app), default_app.redirect_uri, LEE,
                      ["User.Read"], session=browser)
    _, silent = consent_page_for(emulator, default_app, ["Directory.Read.All"], browser=browser,
                                 prompt="none")
    assert redirect_params(silent)["error"] == "consent_required"
