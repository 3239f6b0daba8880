"""Token lifetimes: silent refresh when the access token expires, a refused refresh, an invalid ID
token in a refresh (OIDC Core 12.2), renewals taking turns under the session's lock (refresh-token
reuse), the session's own lifetime and idle timeout, an ended session staying ended, and the
provider going away."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from flask import request as flask_request
from werkzeug.serving import make_server

from tests.quickstart.webapp_support import (
    Browser,
    CallRecorder,
    change_stored_session,
    entra,
    entry_of,
    registered_app,
    revoke_refresh_token,
    stored_sessions,
    token_cache_of,
)
from tests.support import SHORT_ACCESS_TOKEN, default_directory_document

CLAIMS_CHALLENGE = "eyJhY2Nlc3NfdG9rZW4iOnt9fQ"


def assert_sent_to_sign_in(response, next_path: str = "/graph") -> None:
    """A 302 to this app's /login, coming back to `next_path`."""
    assert response.status_code == 302, response.get_data(as_text=True)
    location = urlsplit(response.headers["Location"])
    assert location.path == "/login" and not location.netloc
    assert parse_qs(location.query)["next"] == [next_path]


def assert_ended(app, sid: str) -> None:
    """No session record, no token cache record, and marked ended (never saved again)."""
    assert stored_sessions(app) == {}
    assert entra(app).tokens.load_cache(sid) is None
    assert entra(app).store.get("ended:" + sid) is not None


def renewal_lock(app, browser: Browser):
    """The session's renewal lock, held as another request renewing would hold it."""
    return entra(app).store.lock("renew:" + browser.cookie().value, 30)


def serve(app):
    """The app on a threaded loopback server; (base URL, stop)."""
    server = make_server("localhost", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        thread.join(timeout=5)

    return f"http://localhost:{server.server_port}", stop


# -- renewal -------------------------------------------------------------------------------------

def test_expired_access_token_is_refreshed_silently(short_app, short_browser):
    before = token_cache_of(short_app, short_browser)
    calls = CallRecorder(short_app)
    response = short_browser.client.get("/graph")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert "Adele Vance" in response.get_data(as_text=True)
    assert calls.count("POST", "/oauth2/v2.0/token") == 1
    after = token_cache_of(short_app, short_browser)
    old_at = next(iter(before["AccessToken"].values()))["secret"]
    new_at = next(iter(after["AccessToken"].values()))["secret"]
    assert old_at != new_at  # the new token was saved in the session's cache
    old_rt = next(iter(before["RefreshToken"].values()))["secret"]
    new_rt = next(iter(after["RefreshToken"].values()))["secret"]
    assert old_rt != new_rt  # and the rotated refresh token with it
    assert short_browser.client.get("/graph").status_code == 200


def test_a_fresh_access_token_is_served_without_a_renewal(app, browser):
    """The common case: a valid cached token costs no call to the provider and no lock."""
    browser.sign_in()
    calls = CallRecorder(app)
    with renewal_lock(app, browser):  # a renewal in progress does not hold this page up
        began = time.monotonic()
        assert browser.client.get("/graph").status_code == 200
        assert time.monotonic() - began < 3
    assert calls.count("POST", "/oauth2/v2.0/token") == 0


def test_refused_refresh_asks_to_sign_in_again(short_app, short_browser, short_lived):
    sid = short_browser.cookie().value
    revoke_refresh_token(short_app, short_browser, short_lived)
    response = short_browser.client.get("/graph")
    assert_sent_to_sign_in(response)
    assert_ended(short_app, sid)  # the dead session is gone
    assert short_browser.cookie() is None
    again = short_browser.sign_in(next_path="/graph")
    assert again.headers["Location"] == "/graph"
    assert short_browser.client.get("/graph").status_code == 200


def test_expired_refresh_token_asks_to_sign_in_again(short_app, short_browser, short_lived):
    sid = short_browser.cookie().value
    short_lived.clock.advance(2 * 3600)  # past the refresh token's 1 h lifetime
    response = short_browser.client.get("/graph")
    assert_sent_to_sign_in(response)
    assert_ended(short_app, sid)


@pytest.mark.parametrize("defect", ["wrong_iss", "missing_sub", "bad_signature", "wrong_aud"])
def test_invalid_id_token_from_a_refresh_ends_the_session(short_app, short_browser, short_lived,
                                                          defect):
    sid = short_browser.cookie().value
    short_lived.defects.add(registered_app(short_lived).app_id, defect)
    response = short_browser.client.get("/graph")
    body = response.get_data(as_text=True)
    assert response.status_code == 401
    assert "invalid ID token while renewing your sign-in" in body
    assert 'href="/login"' in body  # a way back in
    assert_ended(short_app, sid)
    assert short_browser.client.get("/graph").status_code == 302


def test_concurrent_renewals_of_one_session_take_turns(short_app, short_browser, caplog):
    """Refresh tokens rotate, and the emulator (like a provider with reuse detection, RFC 9700
    4.14.2) revokes the whole family when a rotated-out one comes back. Pages of one session that
    all need a renewal at once must take turns under the session's lock, each using the latest
    refresh token: every page works and the session survives."""
    caplog.set_level(logging.WARNING, logger="werkzeug")
    cookie = short_browser.cookie().value
    calls = CallRecorder(short_app)
    base, stop = serve(short_app)

    def fetch(_: int) -> int:
        return requests.get(f"{base}/graph", headers={"Cookie": f"session={cookie}"},
                            allow_redirects=False, timeout=60).status_code

    try:
        with ThreadPoolExecutor(max_workers=6) as pool:
            statuses = list(pool.map(fetch, range(6)))
    finally:
        stop()
    assert statuses == [200] * 6
    # 60 s tokens are renewed on every use: six renewals, one after the other, none refused.
    assert [s for m, url, s in calls.calls if m == "POST" and url.endswith("/token")] == [200] * 6
    assert short_browser.client.get("/graph").status_code == 200  # still signed in


def test_concurrent_users_never_get_each_others_tokens(make_app, emulator, browser_sign_in_fn,
                                                       caplog):
    """Two users hit /graph in parallel through a threaded server; Graph's answer names whose
    token was used, so any mix-up of sessions or token caches would show."""
    caplog.set_level(logging.WARNING, logger="werkzeug")  # restored after the test
    app = make_app()
    cookies = {}
    for username, name in (("AdeleV@contoso.onmicrosoft.com", "Adele Vance"),
                           ("MeganB@contoso.onmicrosoft.com", "Megan Bowen")):
        browser = Browser(app, emulator, browser_sign_in_fn)
        browser.sign_in(username=username)
        cookies[name] = browser.cookie().value
    base, stop = serve(app)

    def fetch(name: str) -> tuple[str, str]:
        response = requests.get(f"{base}/graph", timeout=30,
                                headers={"Cookie": f"session={cookies[name]}"})
        return name, response.text

    try:
        with ThreadPoolExecutor(max_workers=6) as pool:
            results = list(pool.map(fetch, ["Adele Vance", "Megan Bowen"] * 12))
    finally:
        stop()
    for name, page in results:
        other = "Megan Bowen" if name == "Adele Vance" else "Adele Vance"
        assert f'<h1 class="profile-name">{name}</h1>' in page
        assert other not in page


def test_a_claims_challenge_on_a_busy_session_is_a_clear_page_not_a_500(app, browser, emulator,
                                                                       monkeypatch):
    """Answering a claims challenge renews under the session's lock; when another request holds
    it for longer than a renewal may take, the page says so (503, try again), and the user stays
    signed in."""
    browser.sign_in()
    monkeypatch.setattr(entra(app).tokens, "renewal_seconds", lambda: 0.3)
    emulator.faults.add("graph", "claims_challenge")
    with renewal_lock(app, browser):
        began = time.monotonic()
        response = browser.client.get("/graph")
        assert time.monotonic() - began < 3
    body = response.get_data(as_text=True)
    assert response.status_code == 503, body
    assert response.headers["Retry-After"] == "5"
    assert "renewing your sign-in" in body and "Something went wrong" not in body
    assert entry_of(app, browser) is not None  # still signed in


def test_sign_in_with_a_pending_claims_challenge_does_not_wait_for_a_renewal(app, browser):
    browser.sign_in()
    change_stored_session(app, browser, claims_challenge=CLAIMS_CHALLENGE)
    with renewal_lock(app, browser):
        began = time.monotonic()
        response = browser.client.get("/login")
        assert time.monotonic() - began < 1
    assert response.status_code == 302
    assert "claims=" in response.headers["Location"]


def test_provider_down_after_sign_in_gives_a_502_page(make_app, start_emulator,
                                                      browser_sign_in_fn):
    directory = default_directory_document()
    directory["applications"][0]["tokenLifetimes"] = SHORT_ACCESS_TOKEN
    emu = start_emulator(directory=directory)
    app = make_app(emu, HTTP_TIMEOUT="2")
    browser = Browser(app, emu, browser_sign_in_fn)
    browser.sign_in()
    before = stored_sessions(app)
    cache = token_cache_of(app, browser)
    emu.stop()
    response = browser.client.get("/graph")
    body = response.get_data(as_text=True)
    assert response.status_code == 502
    assert f"Could not reach the identity provider at {emu.https_base}" in body
    assert stored_sessions(app) == before  # still signed in for when it comes back
    assert token_cache_of(app, browser) == cache


def test_unreadable_token_cache_asks_to_sign_in_again(make_app, emulator, browser_sign_in_fn):
    """A token cache sealed under another SECRET_KEY (or altered in the store) is not trusted:
    the session ends and the user is sent to sign in again."""
    first = make_app(SECRET_KEY="first-secret-key-0123456789")
    browser = Browser(first, emulator, browser_sign_in_fn)
    browser.sign_in()
    second = make_app(SECRET_KEY="second-secret-key-0123456789")  # same session folder
    browser.app, cookie = second, browser.cookie()
    browser.client = second.test_client()
    browser.client.set_cookie(cookie.key, cookie.value, domain=cookie.domain, path=cookie.path)
    assert entra(second).store.get("tokens:" + cookie.value) is not None  # there, unreadable
    response = browser.client.get("/graph")
    assert_sent_to_sign_in(response)
    assert_ended(second, cookie.value)


# -- the session's own lifetime ------------------------------------------------------------------

def test_session_ends_after_its_lifetime_whatever_the_tokens(app, browser):
    browser.sign_in()
    sid = browser.cookie().value
    lifetime = app.extensions["webapp"].settings.session_lifetime
    change_stored_session(app, browser, signed_in_at=int(time.time()) - lifetime - 1)
    assert "Hello" not in browser.client.get("/").get_data(as_text=True)
    assert browser.client.get("/graph").status_code == 302
    assert_ended(app, sid)


def test_session_ends_after_its_idle_timeout(app, browser):
    """Checklist E6: a sign-in left alone for SESSION_IDLE_TIMEOUT ends, whatever its lifetime."""
    browser.sign_in()
    sid = browser.cookie().value
    idle_timeout = app.extensions["webapp"].settings.session_idle_timeout
    change_stored_session(app, browser, last_seen=int(time.time()) - idle_timeout - 1)
    assert "Hello" not in browser.client.get("/").get_data(as_text=True)
    assert browser.client.get("/graph").status_code == 302
    assert_ended(app, sid)


@pytest.mark.parametrize(("setting", "field"), [("SESSION_IDLE_TIMEOUT", "last_seen"),
                                                ("SESSION_LIFETIME", "signed_in_at")])
def test_the_session_limits_are_the_apps_settings(make_app, emulator, browser_sign_in_fn,
                                                  setting, field):
    app = make_app(**{setting: "300"})
    browser = Browser(app, emulator, browser_sign_in_fn)
    browser.sign_in()
    change_stored_session(app, browser, **{field: int(time.time()) - 290})
    assert "Hello" in browser.client.get("/").get_data(as_text=True)  # within 300 s
    change_stored_session(app, browser, **{field: int(time.time()) - 310})
    assert "Hello" not in browser.client.get("/").get_data(as_text=True)  # past them
    assert stored_sessions(app) == {}


@pytest.mark.parametrize("field", ["last_seen", "signed_in_at"])
def test_a_session_entry_without_its_times_is_not_trusted(app, browser, field):
    """Fail closed: an entry lacking a timestamp cannot be shown to be within its limits."""
    browser.sign_in()
    change_stored_session(app, browser, **{field: None})
    assert "Hello" not in browser.client.get("/").get_data(as_text=True)
    assert stored_sessions(app) == {}


def test_requests_keep_a_session_alive_with_at_most_a_write_a_minute(app, browser):
    browser.sign_in()
    before = entry_of(app, browser)
    assert before["last_seen"] == before["signed_in_at"]  # stamped at sign-in
    idle_timeout = app.extensions["webapp"].settings.session_idle_timeout
    # Just short of the idle timeout: this request is activity, recorded in the store.
    change_stored_session(app, browser, last_seen=int(time.time()) - idle_timeout + 5)
    assert "Hello" in browser.client.get("/").get_data(as_text=True)
    recorded = entry_of(app, browser)
    assert time.time() - recorded["last_seen"] < 5
    assert {**recorded, "last_seen": 0} == {**before, "last_seen": 0}  # only the stamp changed

    writes = []
    interface, store = app.session_interface, entra(app).store
    upsert, store_set = interface._upsert_session, store.set
    interface._upsert_session = lambda *args: writes.append(args) or upsert(*args)
    store.set = lambda *args: writes.append(args) or store_set(*args)
    for path in ("/", "/claims", "/graph", "/"):
        assert browser.client.get(path).status_code == 200
    assert writes == []  # recorded less than a minute ago, a valid token: nothing to write


def test_recording_activity_never_waits_for_a_renewal(app, browser):
    """A renewal holding the session's lock does not hold up a page that records activity."""
    browser.sign_in()
    change_stored_session(app, browser, last_seen=int(time.time()) - 120)
    with renewal_lock(app, browser):
        began = time.monotonic()
        assert "Hello" in browser.client.get("/").get_data(as_text=True)
        assert time.monotonic() - began < 1
    assert time.time() - entry_of(app, browser)["last_seen"] < 5  # recorded all the same


def test_an_expired_session_ends_at_once_while_another_tab_renews(app, browser):
    """The renewal holds the session's lock (perhaps for long, on a slow provider): the page
    that finds the session expired does not wait for it, and the session stays ended."""
    browser.sign_in()
    sid = browser.cookie().value
    idle_timeout = app.extensions["webapp"].settings.session_idle_timeout
    change_stored_session(app, browser, last_seen=int(time.time()) - idle_timeout - 1)
    with renewal_lock(app, browser):
        began = time.monotonic()
        assert "Hello" not in browser.client.get("/").get_data(as_text=True)
        assert time.monotonic() - began < 3
    assert_ended(app, sid)


@pytest.mark.parametrize("changed", [True, False])
def test_a_late_save_of_an_ended_session_never_brings_it_back(app, browser, changed):
    """A request that loaded the session before it ended (another tab recording activity, or
    just reading it) and saves it afterwards must not sign the browser in again."""
    browser.sign_in()
    cookie = browser.cookie()
    interface = app.session_interface
    with app.test_request_context("/", headers={"Cookie": f"session={cookie.value}"}):
        late = interface.open_session(app, flask_request)
        assert late["flask_entra"]["claims"]["name"] == "Adele Vance"
        csrf = late["flask_entra"]["csrf"]
        signed_out = browser.client.post("/logout", data={"csrf_token": csrf})
        assert signed_out.status_code == 303
        assert stored_sessions(app) == {}
        if changed:
            late["flask_entra"] = {**late["flask_entra"], "last_seen": int(time.time())}
        interface.save_session(app, late, app.response_class())
    assert stored_sessions(app) == {}
    assert entra(app).tokens.load_cache(cookie.value) is None
    replayed = app.test_client()
    replayed.set_cookie(cookie.key, cookie.value, domain=cookie.domain, path=cookie.path)
    assert "Hello" not in replayed.get("/").get_data(as_text=True)
    assert replayed.get("/graph").status_code == 302
