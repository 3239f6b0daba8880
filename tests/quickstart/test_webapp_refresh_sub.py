"""SEC-B9 (OIDC Core 12.2): the ID token that comes with a refresh must be for the same user. The
emulator's `wrong_sub` defect makes a refresh answer with a valid, properly signed ID token for
another user (other `sub` and `oid`); the app must end the session with a clear page."""

from __future__ import annotations

from tests.quickstart.webapp_support import (
    CallRecorder,
    entra,
    entry_of,
    registered_app,
    stored_sessions,
)


def test_a_refresh_for_the_same_user_keeps_the_session(short_app, short_browser):
    """The control: a genuine refresh (same sub) is accepted and the session goes on."""
    sub = entry_of(short_app, short_browser)["claims"]["sub"]
    calls = CallRecorder(short_app)
    response = short_browser.client.get("/graph")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert calls.count("POST", "/oauth2/v2.0/token") == 1   # it did refresh
    assert entry_of(short_app, short_browser)["claims"]["sub"] == sub


def test_a_refresh_returning_another_users_id_token_ends_the_session(short_app, short_browser,
                                                                    short_lived):
    short_lived.defects.add(registered_app(short_lived).app_id, "wrong_sub")
    calls = CallRecorder(short_app)
    sid = short_browser.cookie().value

    response = short_browser.client.get("/graph")

    body = response.get_data(as_text=True)
    assert calls.count("POST", "/oauth2/v2.0/token") == 1
    assert short_lived.defects.pending() == []   # the refresh did carry the defect
    assert response.status_code == 401, body
    assert "Signed out" in body
    assert "invalid ID token while renewing your sign-in" in body
    assert "for another issuer or user (iss/sub)" in body
    assert 'href="/login' in body                   # a way back in
    assert "Adele Vance" not in body and "eyJ" not in body
    assert stored_sessions(short_app) == {}          # session and token cache are gone
    assert entra(short_app).tokens.load_cache(sid) is None
    assert "Hello" not in short_browser.client.get("/").get_data(as_text=True)
    assert short_browser.client.get("/graph").status_code == 302   # to sign-in again


def test_signing_in_again_after_that_works(short_app, short_browser, short_lived):
    short_lived.defects.add(registered_app(short_lived).app_id, "wrong_sub")
    assert short_browser.client.get("/graph").status_code == 401

    assert short_browser.sign_in(next_path="/graph").headers["Location"] == "/graph"
    page = short_browser.client.get("/graph")
    assert page.status_code == 200, page.get_data(as_text=True)
    assert "Adele Vance" in page.get_data(as_text=True)
