"""Calling Graph: the profile card, CAE claims challenges, throttling and errors, through the
emulator's fault injection."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from tests.quickstart.webapp_support import (
    Browser,
    CallRecorder,
    entra,
    entry_of,
    revoke_refresh_token,
    stored_sessions,
)


@pytest.fixture
def signed_in(browser):
    assert browser.sign_in().status_code == 303
    return browser


def test_profile_card_with_photo_and_raw_json(signed_in):
    page = signed_in.client.get("/graph").get_data(as_text=True)
    assert '<h1 class="profile-name">Adele Vance</h1>' in page
    assert 'src="data:image/png;base64,' in page
    assert "Retail Manager" in page or "AdeleV@contoso.onmicrosoft.com" in page
    assert '<pre class="json">' in page


def test_profile_card_without_photo_shows_initials(app, emulator, browser_sign_in_fn):
    browser = Browser(app, emulator, browser_sign_in_fn)
    browser.sign_in(username="AlexW@contoso.onmicrosoft.com")
    page = browser.client.get("/graph").get_data(as_text=True)
    assert '<div class="avatar initials" aria-hidden="true">AW</div>' in page
    assert "data:image" not in page


def test_graph_called_with_bearer_header_only(app, signed_in):
    seen = []
    entra(app).http.hooks["response"].append(
        lambda r, *a, **k: seen.append(r.request))
    signed_in.client.get("/graph")
    graph_calls = [r for r in seen if "/v1.0/me" in r.url]
    assert graph_calls
    for call in graph_calls:
        assert call.headers["Authorization"].startswith("Bearer ey")
        assert "access_token" not in call.url and "?" not in call.url


def test_claims_challenge_is_answered_silently_and_retried(app, signed_in, emulator):
    calls = CallRecorder(app)
    emulator.faults.add("graph", "claims_challenge")
    response = signed_in.client.get("/graph")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert "Adele Vance" in response.get_data(as_text=True)
    assert calls.count("POST", "/oauth2/v2.0/token") == 1  # re-acquired with the claims
    assert calls.count("GET", "/v1.0/me") == 2


def test_claims_challenge_needing_interaction_goes_through_sign_in(app, signed_in, emulator):
    emulator.faults.add("graph", "claims_challenge")
    revoke_refresh_token(app, signed_in, emulator)  # the silent path will be refused
    response = signed_in.client.get("/graph")
    assert response.status_code == 302
    location = urlsplit(response.headers["Location"])
    assert location.path == "/login" and parse_qs(location.query)["next"] == ["/graph"]
    # The challenge is kept with the session (still signed in) for the sign-in to ask for it.
    assert "nbf" in entry_of(app, signed_in)["claims_challenge"]
    login = signed_in.client.get(response.headers["Location"])
    params = parse_qs(urlsplit(login.headers["Location"]).query)
    assert "nbf" in params["claims"][0]  # the challenge travels to the provider
    back = signed_in.deliver(signed_in.authorize(login.headers["Location"]))
    assert back.headers["Location"] == "/graph"
    assert "claims_challenge" not in entry_of(app, signed_in)  # answered: not asked again
    assert signed_in.client.get("/graph").status_code == 200


@pytest.mark.parametrize("kind", ["429", "503"])
def test_throttling_is_retried_after_retry_after(app, signed_in, emulator, kind):
    slept: list[float] = []
    app.extensions["webapp"].graph._sleep = slept.append
    calls = CallRecorder(app)
    emulator.faults.add("graph", kind, retry_after=2)
    response = signed_in.client.get("/graph")
    assert response.status_code == 200
    assert slept == [2.0]
    assert calls.count("GET", "/v1.0/me") == 2


def test_persistent_throttling_gives_a_clear_page_after_bounded_retries(app, signed_in, emulator):
    slept: list[float] = []
    app.extensions["webapp"].graph._sleep = slept.append
    emulator.faults.add("graph", "429", count=3, retry_after=1)
    response = signed_in.client.get("/graph")
    body = response.get_data(as_text=True)
    assert response.status_code == 503
    assert "Microsoft Graph is busy" in body and "TooManyRequests" in body
    assert response.headers["Retry-After"] == "1"
    assert slept == [1.0, 1.0]


def test_long_retry_after_is_not_waited_out(app, signed_in, emulator):
    slept: list[float] = []
    app.extensions["webapp"].graph._sleep = slept.append
    emulator.faults.add("graph", "503", retry_after=120)
    response = signed_in.client.get("/graph")
    assert response.status_code == 503
    assert "Try again in 120 seconds" in response.get_data(as_text=True)
    assert slept == []


def test_other_graph_errors_show_graphs_code_and_message(make_app, emulator, browser_sign_in_fn):
    app = make_app(ENDPOINT=f"{emulator.https_base}/v1.0/me/nothing-here")
    browser = Browser(app, emulator, browser_sign_in_fn)
    browser.sign_in()
    response = browser.client.get("/graph")
    body = response.get_data(as_text=True)
    assert response.status_code == 502
    assert "Microsoft Graph returned an error" in body
    # Graph's own answer for an unknown segment: 400 BadRequest, with its message.
    assert "HTTP 400" in body and "<code>BadRequest</code>" in body
    assert "Resource not found for the segment &#39;nothing-here&#39;" in body


def test_graph_unreachable_names_it(make_app, emulator, browser_sign_in_fn, closed_port):
    app = make_app(ENDPOINT=f"https://localhost:{closed_port}/v1.0/me", HTTP_TIMEOUT="2")
    browser = Browser(app, emulator, browser_sign_in_fn)
    browser.sign_in()
    response = browser.client.get("/graph")
    assert response.status_code == 502
    assert f"Could not reach Microsoft Graph at https://localhost:{closed_port}" in (
        response.get_data(as_text=True))


def test_token_endpoint_busy_during_claims_refresh_is_a_503_not_a_sign_out(app, signed_in,
                                                                           emulator):
    emulator.faults.add("graph", "claims_challenge")
    emulator.faults.add("token", "503")
    before = stored_sessions(app)
    response = signed_in.client.get("/graph")
    assert response.status_code == 503
    assert "identity provider" in response.get_data(as_text=True)
    assert set(stored_sessions(app)) == set(before)  # still signed in
