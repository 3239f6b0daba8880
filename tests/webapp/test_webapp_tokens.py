"""Token lifetimes: silent refresh when the access token expires, a refused refresh, an invalid ID
token in a refresh (OIDC Core 12.2), the session's own lifetime, and the provider going away."""

from __future__ import annotations

import time

import pytest

from tests.conftest import SHORT_ACCESS_TOKEN, default_directory_document
from tests.webapp.webapp_support import (
    Browser,
    CallRecorder,
    change_stored_session,
    registered_app,
    revoke_refresh_token,
    session_of,
    stored_sessions,
    token_cache_of,
)
from webapp import auth


def test_expired_access_token_is_refreshed_silently(short_app, short_browser):
    before = token_cache_of(short_app, session_of(short_app, short_browser))
    calls = CallRecorder(short_app)
    response = short_browser.client.get("/graph")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert "Adele Vance" in response.get_data(as_text=True)
    assert calls.count("POST", "/oauth2/v2.0/token") == 1
    after = token_cache_of(short_app, session_of(short_app, short_browser))
    old_at = next(iter(before["AccessToken"].values()))["secret"]
    new_at = next(iter(after["AccessToken"].values()))["secret"]
    assert old_at != new_at  # the new token was saved in the session's cache
    assert short_browser.client.get("/graph").status_code == 200


def test_refused_refresh_asks_to_sign_in_again(short_app, short_browser, short_lived):
    revoke_refresh_token(short_app, short_browser, short_lived)
    response = short_browser.client.get("/graph")
    body = response.get_data(as_text=True)
    assert response.status_code == 401
    assert "Please sign in again" in body and "expired or was revoked" in body
    assert 'href="/login?next=/graph"' in body
    assert stored_sessions(short_app) == {}  # the dead session is gone
    again = short_browser.sign_in(next_path="/graph")
    assert again.headers["Location"] == "/graph"
    assert short_browser.client.get("/graph").status_code == 200


def test_expired_refresh_token_asks_to_sign_in_again(short_app, short_browser, short_lived):
    short_lived.clock.advance(2 * 3600)  # past the refresh token's 1 h lifetime
    response = short_browser.client.get("/graph")
    assert response.status_code == 401
    assert "Please sign in again" in response.get_data(as_text=True)
    assert stored_sessions(short_app) == {}


@pytest.mark.parametrize("defect", ["wrong_iss", "missing_sub", "bad_signature", "wrong_aud"])
def test_invalid_id_token_from_a_refresh_ends_the_session(short_app, short_browser, short_lived,
                                                          defect):
    short_lived.defects.add(registered_app(short_lived).app_id, defect)
    response = short_browser.client.get("/graph")
    body = response.get_data(as_text=True)
    assert response.status_code == 401
    assert "invalid ID token while renewing your sign-in" in body
    assert stored_sessions(short_app) == {}
    assert short_browser.client.get("/graph").status_code == 302


def test_session_ends_after_its_lifetime_whatever_the_tokens(app, browser):
    browser.sign_in()
    store = app.session_interface.cache
    key = app.session_interface.key_prefix + browser.cookie().value
    data = store.get(key)
    data["signed_in_at"] = int(time.time()) - app.extensions["webapp"].settings.session_lifetime - 1
    store.set(key, data)
    assert "Hello" not in browser.client.get("/").get_data(as_text=True)
    assert browser.client.get("/graph").status_code == 302
    assert stored_sessions(app) == {}


def test_session_ends_after_its_idle_timeout(app, browser):
    """Checklist E6: a sign-in left alone for SESSION_IDLE_TIMEOUT ends, whatever its lifetime."""
    browser.sign_in()
    idle_timeout = app.extensions["webapp"].settings.session_idle_timeout
    change_stored_session(app, browser, last_seen=int(time.time()) - idle_timeout - 1)
    assert "Hello" not in browser.client.get("/").get_data(as_text=True)
    assert browser.client.get("/graph").status_code == 302
    assert stored_sessions(app) == {}


def test_requests_keep_a_session_alive_with_at_most_a_write_a_minute(app, browser):
    browser.sign_in()
    before = session_of(app, browser)
    assert before["last_seen"] == before["signed_in_at"]  # stamped at sign-in
    idle_timeout = app.extensions["webapp"].settings.session_idle_timeout
    # Just short of the idle timeout: this request is activity, recorded in the store.
    change_stored_session(app, browser, last_seen=int(time.time()) - idle_timeout + 5)
    assert "Hello" in browser.client.get("/").get_data(as_text=True)
    recorded = session_of(app, browser)
    assert time.time() - recorded["last_seen"] < 5
    assert recorded["token_cache"] == before["token_cache"]  # only the stamp changed

    writes = []
    upsert = app.session_interface._upsert_session
    app.session_interface._upsert_session = lambda *args: writes.append(args) or upsert(*args)
    for path in ("/", "/claims", "/graph", "/"):
        assert browser.client.get(path).status_code == 200
    assert writes == []  # recorded less than a minute ago: nothing to write


def test_sessions_from_before_the_idle_timeout_count_from_their_sign_in(app, browser):
    browser.sign_in()
    change_stored_session(app, browser, last_seen=None)
    assert "Hello" in browser.client.get("/").get_data(as_text=True)


def test_recording_activity_never_waits_for_a_renewal(app, browser):
    """A renewal holding the session's lock is activity enough: the page does not wait."""
    browser.sign_in()
    change_stored_session(app, browser, last_seen=int(time.time()) - 120)
    with app.session_interface.lock(browser.cookie().value, 30):
        began = time.monotonic()
        assert "Hello" in browser.client.get("/").get_data(as_text=True)
        assert time.monotonic() - began < 1
    assert time.time() - session_of(app, browser)["last_seen"] > 100  # not recorded this time
    browser.client.get("/")
    assert time.time() - session_of(app, browser)["last_seen"] < 5  # the next request did


def test_provider_down_after_sign_in_gives_a_502_page(make_app, start_emulator,
                                                      browser_sign_in_fn):
    directory = default_directory_document()
    directory["applications"][0]["tokenLifetimes"] = SHORT_ACCESS_TOKEN
    emu = start_emulator(directory=directory)
    app = make_app(emu, HTTP_TIMEOUT="2")
    browser = Browser(app, emu, browser_sign_in_fn)
    browser.sign_in()
    before = stored_sessions(app)
    emu.stop()
    response = browser.client.get("/graph")
    body = response.get_data(as_text=True)
    assert response.status_code == 502
    assert f"Could not reach the identity provider at {emu.https_base}" in body
    assert stored_sessions(app) == before  # still signed in for when it comes back


def test_unreadable_token_cache_asks_to_sign_in_again(make_app, emulator, browser_sign_in_fn):
    """A session written under another SECRET_KEY (or altered in the store) is not trusted."""
    first = make_app(SECRET_KEY="first-secret-key-0123456789")
    browser = Browser(first, emulator, browser_sign_in_fn)
    browser.sign_in()
    second = make_app(SECRET_KEY="second-secret-key-0123456789")  # same session folder
    browser.app, cookie = second, browser.cookie()
    browser.client = second.test_client()
    browser.client.set_cookie(cookie.key, cookie.value, domain=cookie.domain, path=cookie.path)
    response = browser.client.get("/graph")
    assert response.status_code == 401
    assert "could not be read" in response.get_data(as_text=True)
    assert stored_sessions(second) == {}


def test_concurrent_users_never_get_each_others_tokens(make_app, emulator, browser_sign_in_fn,
                                                       caplog):
    """Two users hit /graph in parallel through a threaded server; Graph's answer names whose
    token was used, so any mix-up in the pooled MSAL apps would show."""
    import logging
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import requests
    from werkzeug.serving import make_server

    caplog.set_level(logging.WARNING, logger="werkzeug")  # restored after the test
    app = make_app()
    cookies = {}
    for username, name in (("AdeleV@contoso.onmicrosoft.com", "Adele Vance"),
                           ("MeganB@contoso.onmicrosoft.com", "Megan Bowen")):
        browser = Browser(app, emulator, browser_sign_in_fn)
        browser.sign_in(username=username)
        cookies[name] = browser.cookie().value
    server = make_server("localhost", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def fetch(name: str) -> tuple[str, str]:
        response = requests.get(f"http://localhost:{server.server_port}/graph", timeout=30,
                                headers={"Cookie": f"session={cookies[name]}"})
        return name, response.text

    try:
        with ThreadPoolExecutor(max_workers=6) as pool:
            results = list(pool.map(fetch, ["Adele Vance", "Megan Bowen"] * 12))
    finally:
        server.shutdown()
        thread.join(timeout=5)
    for name, page in results:
        other = "Megan Bowen" if name == "Adele Vance" else "Adele Vance"
        assert f'<h1 class="profile-name">{name}</h1>' in page
        assert other not in page


def test_an_expired_session_ends_at_once_while_another_tab_renews(app, browser):
    """The renewal holds the session's lock (perhaps for long, on a slow provider): the page
    that finds the session expired does not wait for it, and the session stays ended."""
    browser.sign_in()
    idle_timeout = app.extensions["webapp"].settings.session_idle_timeout
    change_stored_session(app, browser, last_seen=int(time.time()) - idle_timeout - 1)
    with app.session_interface.lock(browser.cookie().value, 30):
        began = time.monotonic()
        assert "Hello" not in browser.client.get("/").get_data(as_text=True)
        assert time.monotonic() - began < 3
    assert stored_sessions(app) == {}


def test_a_claims_challenge_on_a_busy_session_is_a_sign_in_page_not_a_500(app, browser,
                                                                          monkeypatch):
    browser.sign_in()
    monkeypatch.setattr(auth, "SIGN_IN_LOCK_SECONDS", 0.2)
    with app.session_interface.lock(browser.cookie().value, 30), app.test_request_context(
            "/graph", headers={"Cookie": f"session={browser.cookie().value}"}):
        response = app.make_response(auth.sign_in_required(
            auth.SignInRequired("Microsoft Graph asks you to sign in again.",
                                claims_challenge="eyJhY2Nlc3NfdG9rZW4iOnt9fQ")))
    assert response.status_code == 401
    assert "Sign in again" in response.get_data(as_text=True)


def test_sign_in_with_a_pending_claims_challenge_does_not_wait_for_a_renewal(app, browser):
    browser.sign_in()
    change_stored_session(app, browser, pending_claims_challenge="eyJhY2Nlc3NfdG9rZW4iOnt9fQ")
    with app.session_interface.lock(browser.cookie().value, 30):
        began = time.monotonic()
        response = browser.client.get("/login")
        assert time.monotonic() - began < 1
    assert response.status_code == 302
    assert "claims=" in response.headers["Location"]
