"""Mix-up defence with RFC 9207's `iss` authorization response parameter (security checklist
section C), end to end through the emulator's pages: an emulator that sends and advertises `iss`,
and its `authz_iss_wrong` / `authz_iss_missing` defects. A refused response must make no token
request and create no session; the right `iss` must be accepted, in both response modes."""

from __future__ import annotations

import pytest

from tests.quickstart.webapp_support import (
    Browser,
    CallRecorder,
    registered_app,
    stored_sessions,
)
from tests.support import issuer_of

RESPONSE_MODES = ["form_post", "query"]

# Query-mode sign-ins are used on purpose here; MSAL warns about each one.
pytestmark = pytest.mark.filterwarnings("ignore:response_mode=.form_post. is recommended")


@pytest.fixture(params=RESPONSE_MODES)
def mode_app(request, make_app, iss_emulator):
    return make_app(iss_emulator, RESPONSE_MODE=request.param)


@pytest.fixture
def mode_browser(mode_app, iss_emulator, browser_sign_in_fn):
    return Browser(mode_app, iss_emulator, browser_sign_in_fn)


def authorization_response(browser: Browser):
    """Start a sign-in at the app and go through the emulator's pages: the response the
    browser is about to deliver to the app's redirect URI."""
    start = browser.start()
    assert start.status_code == 302, start.get_data(as_text=True)
    return browser.authorize(start.headers["Location"])


def assert_refused_without_session(app, browser: Browser, response, text: str,
                                   calls: CallRecorder) -> None:
    body = response.get_data(as_text=True)
    assert response.status_code == 400, body
    assert "Sign-in failed" in body and text in body
    assert calls.count("POST", "/oauth2/v2.0/token") == 0   # the code was never redeemed
    assert stored_sessions(app) == {}
    assert browser.cookie() is None
    assert not [c for c in response.headers.getlist("Set-Cookie") if c.startswith("session=")]
    assert "Hello" not in browser.client.get("/").get_data(as_text=True)


def test_the_right_iss_is_accepted(mode_app, mode_browser, iss_emulator):
    result = authorization_response(mode_browser)
    assert result.params["iss"] == issuer_of(iss_emulator)   # sent, so checked

    response = mode_browser.deliver(result)

    assert response.status_code == 303, response.get_data(as_text=True)
    assert "Adele Vance" in mode_browser.client.get("/").get_data(as_text=True)
    assert len(stored_sessions(mode_app)) == 1


def test_sec_c3_a_response_from_another_issuer_is_refused(mode_app, mode_browser,
                                                         iss_emulator):
    """FAPI2 invalid-authorization-response-iss: `iss` is the issuer + "1"."""
    iss_emulator.defects.add(registered_app(iss_emulator).app_id, "authz_iss_wrong")
    result = authorization_response(mode_browser)
    assert result.params["iss"] == issuer_of(iss_emulator) + "1"
    calls = CallRecorder(mode_app)

    response = mode_browser.deliver(result)

    assert_refused_without_session(mode_app, mode_browser, response,
                                   "comes from another issuer", calls)


def test_sec_c2_a_response_without_the_promised_iss_is_refused(mode_app, mode_browser,
                                                              iss_emulator):
    """FAPI2 remove-authorization-response-iss: discovery promises `iss`, the response lacks
    it."""
    iss_emulator.defects.add(registered_app(iss_emulator).app_id, "authz_iss_missing")
    result = authorization_response(mode_browser)
    assert "iss" not in result.params and "code" in result.params
    calls = CallRecorder(mode_app)

    response = mode_browser.deliver(result)

    assert_refused_without_session(mode_app, mode_browser, response,
                                   "lacks the iss parameter", calls)


def test_a_refused_response_is_spent_and_a_new_sign_in_works(mode_app, mode_browser,
                                                             iss_emulator):
    iss_emulator.defects.add(registered_app(iss_emulator).app_id, "authz_iss_wrong")
    result = authorization_response(mode_browser)
    assert mode_browser.deliver(result).status_code == 400
    # The pending sign-in was consumed: the same response cannot be tried again.
    again = mode_browser.deliver(result)
    assert again.status_code == 400
    assert "No sign-in in progress" in again.get_data(as_text=True)

    assert mode_browser.deliver(authorization_response(mode_browser)).status_code == 303
    assert "Adele Vance" in mode_browser.client.get("/").get_data(as_text=True)


def test_sec_c3_a_wrong_iss_is_refused_even_where_iss_is_not_advertised(make_app, emulator,
                                                                        browser_sign_in_fn):
    """The default emulator (like Entra) neither sends nor advertises `iss`; an `iss` that is
    present and wrong still means the response was meant for another issuer."""
    app = make_app(emulator)
    browser = Browser(app, emulator, browser_sign_in_fn)
    emulator.defects.add(registered_app(emulator).app_id, "authz_iss_wrong")
    result = authorization_response(browser)
    calls = CallRecorder(app)

    response = browser.deliver(result)

    assert_refused_without_session(app, browser, response, "comes from another issuer", calls)


def test_no_iss_is_fine_where_it_is_not_advertised(app, browser):
    """Entra's case today: no `iss`, no promise of it; sign-in works."""
    result = authorization_response(browser)
    assert "iss" not in result.params
    assert browser.deliver(result).status_code == 303
