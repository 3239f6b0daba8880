"""Attacks on the authorization response (security checklist A, C, E4, G1). Every refusal must
show the error page, make no token request, and create or change no session."""

from __future__ import annotations

from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from tests.quickstart.webapp_support import (
    Browser,
    CallRecorder,
    pending_cookie_name,
    pending_cookies,
    state_of,
    stored_sessions,
)

# Query-mode sign-ins are used on purpose here; MSAL warns about each one.
pytestmark = pytest.mark.filterwarnings("ignore:response_mode=.form_post. is recommended")


@pytest.fixture
def query_app(make_app):
    return make_app(RESPONSE_MODE="query")


@pytest.fixture
def query_browser(query_app, emulator, browser_sign_in_fn):
    return Browser(query_app, emulator, browser_sign_in_fn)


def assert_refused(app, browser, response, status, text, sessions_before, calls=None):
    body = response.get_data(as_text=True)
    assert response.status_code == status, body
    assert text in body
    assert stored_sessions(app) == sessions_before
    assert not any(c.startswith("session=") and "session=;" not in c
                   for c in response.headers.getlist("Set-Cookie"))
    if calls is not None:
        assert calls.count("POST", "/oauth2/v2.0/token") == 0


def callback_url(result) -> str:
    parts = urlsplit(result.url)
    return f"{parts.path}?{parts.query}"


def test_callback_with_no_pending_sign_in(app, browser):
    calls = CallRecorder(app)
    response = browser.client.get("/getAToken?code=forged&state=made-up")
    assert_refused(app, browser, response, 400, "No sign-in in progress", {}, calls)
    assert "started in this browser" in response.get_data(as_text=True)
    assert "Sign in again" in response.get_data(as_text=True)


def test_callback_with_missing_state(app, browser):
    calls = CallRecorder(app)
    browser.start()
    response = browser.client.get("/getAToken?code=forged")
    assert_refused(app, browser, response, 400, "no valid state", {}, calls)


def test_tampered_state(query_app, query_browser):
    browser = query_browser
    start = browser.start()
    result = browser.authorize(start.headers["Location"])
    state = state_of(start.headers["Location"])
    calls = CallRecorder(query_app)
    tampered = callback_url(result).replace(f"state={state}", f"state={state[:-2]}xy")
    response = browser.client.get(tampered)
    assert_refused(query_app, browser, response, 400, "No sign-in in progress", {}, calls)
    # The genuine response still works: the forged one consumed nothing.
    assert browser.client.get(callback_url(result)).status_code == 303


def test_replayed_callback_is_refused(query_app, query_browser):
    browser = query_browser
    start = browser.start()
    result = browser.authorize(start.headers["Location"])
    assert browser.client.get(callback_url(result)).status_code == 303
    sessions = stored_sessions(query_app)
    calls = CallRecorder(query_app)
    replay = browser.client.get(callback_url(result))
    assert_refused(query_app, browser, replay, 400, "No sign-in in progress", sessions, calls)
    assert "Adele Vance" in browser.client.get("/").get_data(as_text=True)  # still signed in


def test_replayed_form_post_is_refused(app, browser):
    start = browser.start()
    result = browser.authorize(start.headers["Location"])
    assert browser.deliver(result).status_code == 303
    sessions = stored_sessions(app)
    replay = browser.deliver(result)
    assert_refused(app, browser, replay, 400, "No sign-in in progress", sessions)


def test_response_delivered_into_another_browser_is_refused(query_app, query_browser, emulator,
                                                           browser_sign_in_fn):
    victim = query_browser
    start = victim.start()
    result = victim.authorize(start.headers["Location"])
    attacker = Browser(query_app, emulator, browser_sign_in_fn)
    calls = CallRecorder(query_app)
    response = attacker.client.get(callback_url(result))
    assert_refused(query_app, attacker, response, 400, "started in another browser", {}, calls)
    # Not consumed: the browser that started it completes normally.
    assert victim.client.get(callback_url(result)).status_code == 303


def test_error_callback_is_shown_escaped_and_consumes_the_sign_in(app, browser):
    start = browser.start()
    state = state_of(start.headers["Location"])
    calls = CallRecorder(app)
    description = "AADSTS65001: <script>alert('x')</script> consent needed"
    response = browser.client.get("/getAToken?" + urlencode(
        {"error": "consent_required", "error_description": description, "state": state}))
    body = response.get_data(as_text=True)
    assert_refused(app, browser, response, 400, "AADSTS65001", {}, calls)
    assert "<script>alert" not in body
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in body
    assert "consent" in body.lower()  # the hint for 65001
    again = browser.client.get("/getAToken?" + urlencode({"code": "x", "state": state}))
    assert again.status_code == 400  # single use, also for errors


def test_error_callback_with_unknown_state_is_not_trusted(app, browser):
    response = browser.client.get("/getAToken?" + urlencode(
        {"error": "access_denied", "error_description": "AADSTS50011: evil", "state": "nope"}))
    assert_refused(app, browser, response, 400, "No sign-in in progress", {})
    assert "AADSTS50011" not in response.get_data(as_text=True)


def test_cancelled_consent_comes_back_as_a_clear_page(app, browser):
    start = browser.start()
    result = browser.authorize(start.headers["Location"], username="LeeG@contoso.onmicrosoft.com",
                               consent="cancel")
    response = browser.deliver(result)
    body = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "access_denied" in body or "AADSTS65004" in body
    assert stored_sessions(app) == {}


@pytest.mark.parametrize("issuer_suffix", ["1", "-evil"])
def test_response_iss_parameter_from_another_issuer_is_refused(query_app, query_browser,
                                                               emulator, issuer_suffix):
    browser = query_browser
    start = browser.start()
    result = browser.authorize(start.headers["Location"])
    calls = CallRecorder(query_app)
    issuer = f"{emulator.https_base}/{emulator.tenant_id}/v2.0{issuer_suffix}"
    response = browser.client.get(callback_url(result) + "&" + urlencode({"iss": issuer}))
    assert_refused(query_app, browser, response, 400, "another issuer", {}, calls)


def test_response_iss_parameter_matching_is_accepted(query_app, query_browser, emulator):
    browser = query_browser
    start = browser.start()
    result = browser.authorize(start.headers["Location"])
    issuer = f"{emulator.https_base}/{emulator.tenant_id}/v2.0"
    url = callback_url(result)
    if "iss=" not in url:
        url += "&" + urlencode({"iss": issuer})
    assert browser.client.get(url).status_code == 303


def test_callback_answer_is_a_303_to_a_clean_url_without_referrer(query_app, query_browser):
    browser = query_browser
    start = browser.start(next_path="/claims")
    response = browser.client.get(callback_url(browser.authorize(start.headers["Location"])))
    assert response.status_code == 303
    assert response.headers["Location"] == "/claims"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Cache-Control"] == "no-store"


def test_injected_code_from_another_sign_in_fails_pkce(query_app, query_browser, emulator,
                                                      browser_sign_in_fn):
    """SEC-B2: the attacker's own code (bound to the attacker's PKCE challenge) pasted into the
    victim's callback, with the victim's valid state: the provider refuses our verifier."""
    attacker = Browser(query_app, emulator, browser_sign_in_fn)
    attacker_result = attacker.authorize(attacker.start().headers["Location"],
                                         username="AlexW@contoso.onmicrosoft.com")
    attacker_code = parse_qs(urlsplit(attacker_result.url).query)["code"][0]
    victim = query_browser
    victim_state = state_of(victim.start().headers["Location"])
    response = victim.client.get("/getAToken?" + urlencode(
        {"code": attacker_code, "state": victim_state}))
    body = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "AADSTS501481" in body or "invalid_grant" in body
    assert stored_sessions(query_app) == {}


def test_two_simultaneous_deliveries_of_one_response_redeem_it_once(query_app, query_browser):
    """Checklist A4 under concurrency: the response is claimed once in the store, so the code
    is redeemed once (a second redemption would make the provider revoke the first's tokens),
    even when every delivery carries the pending sign-in's cookie (a copied cookie)."""
    import threading

    browser = query_browser
    start = browser.start()
    result = browser.authorize(start.headers["Location"])
    name = pending_cookie_name(state_of(start.headers["Location"]))
    pending = pending_cookies(browser.client)[name]
    calls = CallRecorder(query_app)
    clients = [query_app.test_client() for _ in range(4)]
    for client in clients:
        client.set_cookie(name, pending)
    barrier = threading.Barrier(len(clients))
    statuses: list[int] = []

    def deliver(client) -> None:
        barrier.wait()
        statuses.append(client.get(callback_url(result)).status_code)

    threads = [threading.Thread(target=deliver, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(statuses) == [303, 400, 400, 400], statuses
    assert calls.count("POST", "/oauth2/v2.0/token") == 1
