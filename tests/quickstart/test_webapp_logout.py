"""Sign-out (security checklist F1, F2, F3): POST with a CSRF token only; session and token cache
gone before the browser is sent to the provider's end_session_endpoint, which sends it back to
the app's root (request.url_root) with a sealed state the app recognises once."""

from __future__ import annotations

import re
import threading
import time
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from tests.quickstart.webapp_support import (
    ADELE,
    MEGAN,
    Browser,
    entra,
    entry_of,
    stored_sessions,
)
from tests.support import default_directory_document

SIGN_OUT_COOKIE = "entra-signout"
APP_BASE = "http://localhost:5000"  # where the registered post-logout URI says the app runs


def at_the_provider(browser, username: str = ADELE) -> requests.Session:
    """The browser's side at the provider: the cookies of its sign-in there (the provider sends
    a sign-out back only to an app that session signed in to, or one the request names)."""
    return browser._idp_sessions[username]


def csrf_token(browser) -> str:
    page = browser.client.get("/").get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def test_sign_out_clears_everything_and_goes_to_the_provider(app, browser, emulator):
    browser.sign_in()
    session_id = browser.cookie().value
    assert entra(app).tokens.load_cache(session_id) is not None
    token = csrf_token(browser)
    response = browser.client.post("/logout", data={"csrf_token": token}, base_url=APP_BASE)
    assert response.status_code == 303
    location = urlsplit(response.headers["Location"])
    assert f"{location.scheme}://{location.netloc}" == emulator.http_base
    assert location.path == f"/{emulator.tenant_id}/oauth2/v2.0/logout"
    params = parse_qs(location.query)
    assert params["post_logout_redirect_uri"] == ["http://localhost:5000/"]
    assert "post_logout_redirect_uri=http%3A%2F%2Flocalhost%3A5000%2F" in location.query
    # The app does not ask for the login_hint optional claim, and a UPN is never a logout_hint
    # (Entra's guidance; it would also put the user's address in a URL).
    assert "logout_hint" not in params and ADELE not in location.query
    assert "id_token_hint" not in params  # no token in a URL
    assert stored_sessions(app) == {}
    assert entra(app).tokens.load_cache(session_id) is None  # the token cache went first
    assert any(c.startswith("session=;") for c in response.headers.getlist("Set-Cookie"))
    # The provider accepts it (registered post-logout URI) and sends the browser back.
    back = at_the_provider(browser).get(response.headers["Location"], allow_redirects=False,
                                        timeout=10)
    assert back.status_code in (302, 303)
    assert back.headers["Location"].startswith("http://localhost:5000/")


def test_the_providers_return_with_the_sign_outs_state_says_signed_out(app, browser):
    """Checklist F2: a fresh state on every sign-out, which the provider sends back."""
    browser.sign_in()
    response = browser.client.post("/logout", data={"csrf_token": csrf_token(browser)},
                                   base_url=APP_BASE)
    state = parse_qs(urlsplit(response.headers["Location"]).query)["state"][0]
    assert len(state) >= 43 and browser.cookie(SIGN_OUT_COOKIE).value == state
    back = at_the_provider(browser).get(response.headers["Location"], allow_redirects=False,
                                        timeout=10)
    assert parse_qs(urlsplit(back.headers["Location"]).query)["state"] == [state]

    # The return goes on to the same page without the state in the address bar ...
    returned = browser.client.get(f"/?{urlsplit(back.headers['Location']).query}")
    assert returned.status_code == 303 and returned.headers["Location"] == "/"
    # ... which says so, once.
    home = browser.client.get("/")
    assert home.status_code == 200
    assert "You have signed out." in home.get_data(as_text=True)
    assert browser.cookie(SIGN_OUT_COOKIE) is None  # used once
    assert "You have signed out." not in browser.client.get("/").get_data(as_text=True)
    again = browser.client.get(f"/?state={state}")
    assert again.status_code == 200
    assert "You have signed out." not in again.get_data(as_text=True)
    other_state = parse_qs(urlsplit(browser_sign_out_location(browser)).query)["state"][0]
    assert other_state != state  # fresh on every sign-out


def browser_sign_out_location(browser) -> str:
    """Sign in and out once more in the same browser; the provider sign-out URL."""
    browser.sign_in()
    return browser.client.post("/logout", data={"csrf_token": csrf_token(browser)},
                               base_url=APP_BASE).headers["Location"]


@pytest.mark.parametrize("query", ["", "?state=", "?state=forged", "?state=a&state=b"])
def test_a_return_with_another_or_no_state_is_a_neutral_page(app, browser, query):
    """Checklist F3: nothing happens but the plain signed-out home page."""
    browser.sign_in()
    browser.client.post("/logout", data={"csrf_token": csrf_token(browser)})
    home = browser.client.get(f"/{query}")
    assert home.status_code == 200
    page = home.get_data(as_text=True)
    assert "You have signed out." not in page and "Sign in" in page
    assert stored_sessions(app) == {} and browser.cookie() is None


def test_a_sign_out_state_never_signs_anyone_in_or_out(app, browser, emulator,
                                                        browser_sign_in_fn):
    """A state from another browser's sign-out changes nothing for this one."""
    other = Browser(app, emulator, browser_sign_in_fn)
    other.sign_in(username=MEGAN)
    response = other.client.post("/logout", data={"csrf_token": csrf_token(other)})
    state = parse_qs(urlsplit(response.headers["Location"]).query)["state"][0]
    browser.sign_in()
    page = browser.client.get(f"/?state={state}").get_data(as_text=True)
    assert "Adele Vance" in page and "You have signed out." not in page


def test_generic_oidc_sign_out_names_the_client(make_app, emulator, browser_sign_in_fn):
    oidc_app = make_app(AUTHORITY=None, OIDC_AUTHORITY=f"{emulator.authority}/v2.0")
    browser = Browser(oidc_app, emulator, browser_sign_in_fn)
    browser.sign_in()
    response = browser.client.post("/logout", data={"csrf_token": csrf_token(browser)})
    params = parse_qs(urlsplit(response.headers["Location"]).query)
    assert params["client_id"] == [oidc_app.extensions["webapp"].settings.client_id]


def test_logout_hint_is_the_login_hint_optional_claim(make_app, start_emulator,
                                                       browser_sign_in_fn):
    directory = default_directory_document()
    directory["applications"][0]["optionalClaims"] = {"idToken": [{"name": "login_hint"}]}
    emu = start_emulator(directory=directory)
    hints = []
    for username in (ADELE, MEGAN):
        app = make_app(emu)
        browser = Browser(app, emu, browser_sign_in_fn)
        browser.sign_in(username=username)
        claims = entry_of(app, browser)["claims"]
        response = browser.client.post("/logout", data={"csrf_token": csrf_token(browser)})
        hint = parse_qs(urlsplit(response.headers["Location"]).query)["logout_hint"][0]
        assert hint == claims["login_hint"] and username not in hint  # opaque
        hints.append(hint)
    assert hints[0] != hints[1]


def test_sign_out_without_csrf_token_does_nothing(app, browser):
    browser.sign_in()
    before = stored_sessions(app)
    for data in ({}, {"csrf_token": "forged"}, {"csrf_token": "é"}):
        response = browser.client.post("/logout", data=data)
        assert response.status_code == 400
        assert "still signed in" in response.get_data(as_text=True)
    assert stored_sessions(app) == before
    assert "Adele Vance" in browser.client.get("/").get_data(as_text=True)


def test_get_logout_only_asks_for_confirmation(app, browser):
    browser.sign_in()
    before = stored_sessions(app)
    response = browser.client.get("/logout")
    assert response.status_code == 200
    assert '<form method="post" action="/logout"' in response.get_data(as_text=True)
    assert stored_sessions(app) == before


def test_sign_out_when_signed_out_is_harmless(app, browser):
    response = browser.client.post("/logout")
    assert response.status_code == 303
    assert response.headers["Location"] == "/"
    assert browser.client.get("/logout").status_code == 303


def test_post_logout_redirect_uri_is_the_apps_root_url_encoded(app, browser):
    """The app's root where it runs (its script root included), URL-encoded."""
    browser.sign_in()
    response = browser.client.post("/logout", data={"csrf_token": csrf_token(browser)},
                                   base_url=f"{APP_BASE}/quickstart/")
    assert response.status_code == 303, response.get_data(as_text=True)
    location = response.headers["Location"]
    assert "post_logout_redirect_uri=http%3A%2F%2Flocalhost%3A5000%2Fquickstart%2F&" in location
    assert parse_qs(urlsplit(location).query)["post_logout_redirect_uri"] == [
        f"{APP_BASE}/quickstart/"]


def test_an_empty_sign_out_cookie_matches_no_state(app, browser):
    browser.client.set_cookie(SIGN_OUT_COOKIE, "")
    page = browser.client.get("/?state=")
    assert page.status_code == 200
    assert "You have signed out." not in page.get_data(as_text=True)


def test_a_sign_out_cookie_is_no_state_of_its_own(app, browser):
    """The cookie must match the state the provider returns: neither alone says signed out."""
    browser.sign_in()
    response = browser.client.post("/logout", data={"csrf_token": csrf_token(browser)})
    state = parse_qs(urlsplit(response.headers["Location"]).query)["state"][0]
    assert "You have signed out." not in browser.client.get("/").get_data(as_text=True)
    forged = browser.client.get("/?state=" + state[:-4] + "AAAA")
    assert forged.status_code == 200
    assert "You have signed out." not in forged.get_data(as_text=True)
    stranger = Browser(app, browser.emu, browser._sign_in_fn)
    alone = stranger.client.get(f"/?state={state}")  # the state without the cookie
    assert alone.status_code == 200
    assert "You have signed out." not in alone.get_data(as_text=True)


def test_a_sign_out_during_a_renewal_in_another_tab_stays_signed_out(
        short_app, short_lived, browser_sign_in_fn):
    """The renewal holds the session's lock and saves the session when done, after the sign-out
    (which does not wait long for the lock): the store refuses to bring the session back."""
    browser = Browser(short_app, short_lived, browser_sign_in_fn)
    browser.sign_in()
    copied_cookie = browser.cookie().value
    token = csrf_token(browser)
    short_lived.faults.add("token", "delay", delay_seconds=1.5)  # the renewal takes a while
    other_tab = short_app.test_client()
    other_tab.set_cookie("session", copied_cookie)
    renewal = threading.Thread(target=lambda: other_tab.get("/graph"))
    renewal.start()
    time.sleep(0.5)  # the renewal now holds the lock, waiting for the token endpoint
    assert browser.client.post("/logout", data={"csrf_token": token}).status_code == 303
    renewal.join(10)

    assert stored_sessions(short_app) == {}
    assert entra(short_app).tokens.load_cache(copied_cookie) is None  # nor its tokens
    stolen = short_app.test_client()
    stolen.set_cookie("session", copied_cookie)
    assert stolen.get("/graph").status_code == 302  # to sign-in: nothing came back
