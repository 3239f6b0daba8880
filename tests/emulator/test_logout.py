"""Sign-out, v2 and v1 (the one identity calls)."""

from __future__ import annotations

import pytest
import requests

from tests.support import ADELE, authorize_url, sign_in_for_code


@pytest.fixture
def signed_in(emulator, default_app):
    browser = requests.Session()
    sign_in_for_code(emulator, default_app, ADELE, session=browser)
    assert browser.cookies.get("ESTSAUTH")
    return browser


def silent_authorize(emulator, default_app, browser) -> requests.Response:
    return browser.get(authorize_url(emulator, default_app.client_id, prompt="none",
                                     redirect_uri=default_app.redirect_uri),
                       allow_redirects=False)


@pytest.mark.parametrize("path", ["oauth2/v2.0/logout", "oauth2/logout"])
def test_logout_ends_the_session_and_returns_to_the_app(emulator, default_app, signed_in,
                                                        path):
    # identity builds this URL without encoding the redirect URI.
    url = (f"{emulator.http_base}/{emulator.tenant_id}/{path}"
           f"?post_logout_redirect_uri={default_app.post_logout_redirect_uri}&state=bye")
    response = signed_in.get(url, allow_redirects=False)
    assert response.status_code == 302
    assert response.headers["Location"] == f"{default_app.post_logout_redirect_uri}?state=bye"
    assert "ESTSAUTH=;" in response.headers["Set-Cookie"]
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    after = silent_authorize(emulator, default_app, signed_in)
    assert "error=login_required" in after.headers["Location"]


def test_unregistered_post_logout_uri_gets_the_signed_out_page(emulator, default_app,
                                                                signed_in):
    response = signed_in.get(
        f"{emulator.http_base}/{emulator.tenant_id}/oauth2/v2.0/logout",
        params={"post_logout_redirect_uri": "https://evil.example/"}, allow_redirects=False)
    assert response.status_code == 200
    assert "You signed out" in response.text and "evil.example" not in response.text
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert "error=login_required" in silent_authorize(
        emulator, default_app, signed_in).headers["Location"]


def test_logout_without_a_uri_shows_the_signed_out_page(emulator):
    response = requests.post(f"{emulator.http_base}/common/oauth2/v2.0/logout")
    assert response.status_code == 200 and "You signed out" in response.text


def test_logout_checks_the_uri_against_the_named_client(emulator, default_app):
    response = requests.get(
        f"{emulator.http_base}/{emulator.tenant_id}/oauth2/v2.0/logout",
        params={"post_logout_redirect_uri": default_app.post_logout_redirect_uri,
                "client_id": "11111111-2222-3333-4444-555555555555"},
        allow_redirects=False)
    assert response.status_code == 200


def test_logout_for_an_unknown_tenant_is_an_error_page(emulator):
    response = requests.get(f"{emulator.http_base}/nowhere.example/oauth2/logout")
    assert response.status_code == 400 and "AADSTS90002:" in response.text
