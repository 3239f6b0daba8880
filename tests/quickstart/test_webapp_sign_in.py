"""The happy path against the real emulator, and what a successful sign-in must leave behind."""

from __future__ import annotations

import hashlib
import logging
import re
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.quickstart.webapp_support import (
    ADELE,
    MEGAN,
    SESSION_COOKIE,
    Browser,
    CallRecorder,
    entra,
    entry_of,
    pending_cookie_name,
    pending_cookies,
    session_of,
    state_of,
    stored_records,
    stored_sessions,
    token_cache_of,
)

JWT = re.compile(r"eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}")

# Query-mode sign-ins are used on purpose here; MSAL warns about each one.
pytestmark = pytest.mark.filterwarnings("ignore:response_mode=.form_post. is recommended")


def test_full_journey_sign_in_graph_claims_sign_out(app, browser, emulator):
    home = browser.client.get("/")
    assert home.status_code == 200
    assert 'href="/login"' in home.get_data(as_text=True)
    assert browser.cookie() is None  # visiting signed out creates no session

    callback = browser.sign_in()
    assert callback.status_code == 303
    assert callback.headers["Location"] == "/"

    page = browser.client.get("/").get_data(as_text=True)
    assert "Hello, <span class=\"user-name\">Adele Vance</span>" in page

    graph = browser.client.get("/graph")
    assert graph.status_code == 200
    body = graph.get_data(as_text=True)
    assert "Adele Vance" in body and "AdeleV@contoso.onmicrosoft.com" in body
    assert "&#34;displayName&#34;: &#34;Adele Vance&#34;" in body  # the raw JSON, escaped
    assert graph.headers["Cache-Control"] == "no-store"

    claims = browser.client.get("/claims").get_data(as_text=True)
    assert emulator.tenant_id in claims
    assert "Audience: the app this token is for" in claims

    form = browser.client.get("/logout")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.get_data(as_text=True)).group(1)
    out = browser.client.post("/logout", data={"csrf_token": csrf})
    assert out.status_code == 303
    assert out.headers["Location"].startswith(f"{emulator.http_base}/{emulator.tenant_id}/")
    assert stored_sessions(app) == {}
    assert browser.cookie() is None
    assert browser.client.get("/graph").status_code == 302  # signed out: back to sign-in


@pytest.mark.parametrize("mode", ["form_post", "query"])
def test_both_response_modes_sign_in(make_app, emulator, browser_sign_in_fn, mode):

    app = make_app(RESPONSE_MODE=mode)
    browser = Browser(app, emulator, browser_sign_in_fn)
    start = browser.start()
    params = parse_qs(urlsplit(start.headers["Location"]).query)
    assert params.get("response_mode", ["query"])[0] == mode
    result = browser.authorize(start.headers["Location"])
    assert result.method.upper() == ("POST" if mode == "form_post" else "GET")
    assert browser.deliver(result).status_code == 303
    assert "Adele Vance" in browser.client.get("/").get_data(as_text=True)


def test_authorization_request_uses_pkce_s256_state_and_nonce(browser):
    first = parse_qs(urlsplit(browser.start().headers["Location"]).query)
    second = parse_qs(urlsplit(browser.start().headers["Location"]).query)
    assert first["code_challenge_method"] == ["S256"]
    assert len(first["code_challenge"][0]) == 43  # base64url of a SHA-256
    for name in ("state", "nonce", "code_challenge"):
        assert first[name][0] and first[name][0] != second[name][0]  # fresh per sign-in
    assert first["redirect_uri"] == ["http://localhost:5000/getAToken"]
    assert "User.Read" in first["scope"][0].split()


def test_returns_to_the_page_asked_for(browser):
    response = browser.client.get("/claims")
    assert response.status_code == 302
    assert response.headers["Location"] == "/login?next=/claims"
    callback = browser.sign_in(next_path="/claims")
    assert callback.status_code == 303
    assert callback.headers["Location"] == "/claims"


def test_form_post_works_cross_site_and_session_cookie_stays_lax(browser):
    start = browser.start()
    name = pending_cookie_name(state_of(start.headers["Location"]))
    pending = [c for c in browser.set_cookies(start) if c.startswith(f"{name}=")][0]
    # The provider's form_post is a cross-site POST: only a SameSite=None cookie comes with it.
    assert "SameSite=None" in pending and "Secure" in pending and "HttpOnly" in pending
    assert "Max-Age=600" in pending and "Path=/" in pending and "Domain" not in pending
    result = browser.authorize(start.headers["Location"])
    assert result.method.upper() == "POST"
    callback = browser.deliver(result, cross_site=True)  # no Lax cookie on a cross-site POST
    assert callback.status_code == 303
    session_cookie = [c for c in browser.set_cookies(callback)
                      if c.startswith(f"{SESSION_COOKIE}=")][0]
    assert "HttpOnly" in session_cookie and "SameSite=Lax" in session_cookie
    assert "Path=/" in session_cookie and "Domain" not in session_cookie
    assert "Expires" not in session_cookie and "Max-Age" not in session_cookie  # browser session
    assert "Secure" not in session_cookie  # http://localhost; https gets Secure + __Host- prefix


def test_https_deployment_uses_secure_host_prefixed_cookie(make_app):
    app = make_app(REDIRECT_URI="https://localhost:5000/getAToken", RESPONSE_MODE="query")
    start = app.test_client().get("/login", base_url="https://localhost:5000")
    assert start.status_code == 302, start.get_data(as_text=True)
    name = pending_cookie_name(state_of(start.headers["Location"]), https=True)
    assert name.startswith("__Host-entra-signin-")
    pending = [c for c in start.headers.getlist("Set-Cookie") if c.startswith(f"{name}=")][0]
    # __Host-: Secure, Path=/ and no Domain, so no sibling subdomain can set or read it.
    assert "Secure" in pending and "Path=/" in pending and "Domain" not in pending
    assert "SameSite=Lax" in pending  # query mode: a top-level GET navigation
    assert start.headers["Strict-Transport-Security"].startswith("max-age=")
    assert app.config["SESSION_COOKIE_NAME"] == "__Host-session"
    assert app.config["SESSION_COOKIE_SECURE"] is True


def test_session_id_rotates_at_sign_in_and_old_id_is_dead(app, browser):
    browser.sign_in()
    first_id = browser.cookie().value
    # Signing in again (e.g. as someone else) in the same browser: the query-mode path, where the
    # cookie is sent, and the form_post path, where it is not; both must end the old session.
    browser.sign_in(username=MEGAN)
    second_id = browser.cookie().value
    assert second_id != first_id
    assert len(stored_sessions(app)) == 1
    assert entra(app).tokens.load_cache(first_id) is None  # its tokens went with it
    assert entra(app).tokens.load_cache(second_id) is not None
    assert "Megan Bowen" in browser.client.get("/").get_data(as_text=True)
    # An attacker replaying the first cookie gets nothing (and a fresh id: strict sessions).
    attacker = app.test_client()
    attacker.set_cookie(SESSION_COOKIE, first_id, domain="localhost")
    page = attacker.get("/")
    assert "Hello" not in page.get_data(as_text=True)
    assert attacker.get("/graph").status_code == 302


def test_never_issued_session_id_is_ignored(app):
    client = app.test_client()
    client.set_cookie(SESSION_COOKIE, "made-up-session-id", domain="localhost")
    assert client.get("/graph").status_code == 302
    assert stored_sessions(app) == {}


def test_session_holds_only_an_id_in_the_cookie_and_tokens_server_side(app, browser):
    browser.sign_in()
    cookie = browser.cookie().value
    assert len(cookie) < 64 and not JWT.search(cookie)
    session = session_of(app, browser)
    entry = session["flask_entra"]
    assert set(entry) == {"claims", "account", "csrf", "signed_in_at", "last_seen"}
    assert not JWT.search(repr(session))  # no token in the session itself
    # The token cache is a record of its own, sealed: no JWT (nor refresh token) at rest.
    records = stored_records(app)
    sealed = entra(app).store.get("tokens:" + cookie)
    assert isinstance(sealed, bytes) and b"eyJ" not in sealed
    assert not any(b"eyJ" in record for record in records.values())
    cache = token_cache_of(app, browser)
    assert cache["AccessToken"] and cache["RefreshToken"] and cache["IdToken"]
    refresh_token = next(iter(cache["RefreshToken"].values()))["secret"].encode()
    assert not any(refresh_token in record for record in records.values())


def test_parallel_sign_ins_in_two_tabs_both_complete(app, browser):
    tab1 = browser.start(next_path="/claims").headers["Location"]
    tab2 = browser.start(next_path="/graph").headers["Location"]
    assert state_of(tab1) != state_of(tab2)
    result2 = browser.authorize(tab2)
    result1 = browser.authorize(tab1)
    assert browser.deliver(result2).headers["Location"] == "/graph"
    assert browser.deliver(result1).headers["Location"] == "/claims"
    assert "Adele Vance" in browser.client.get("/").get_data(as_text=True)


def test_no_token_ever_reaches_html(app, browser):
    pages = [browser.client.get("/").get_data(as_text=True)]
    browser.sign_in()
    for path in ("/", "/graph", "/claims", "/logout"):
        pages.append(browser.client.get(path).get_data(as_text=True))
    cache = token_cache_of(app, browser)
    secrets = [entry["secret"] for kind in ("AccessToken", "RefreshToken", "IdToken")
               for entry in cache[kind].values()]
    for page in pages:
        assert not JWT.search(page)
        for secret in secrets:
            assert secret[:40] not in page
        assert "emulator-dev-secret" not in page


def test_cached_access_token_makes_no_token_endpoint_call(app, browser):
    browser.sign_in()
    calls = CallRecorder(app)
    for _ in range(3):
        assert browser.client.get("/graph").status_code == 200
    assert calls.count("POST", "/oauth2/v2.0/token") == 0
    assert calls.count("GET", "/v1.0/me") == 3


def test_logs_never_carry_codes_state_tokens_or_secrets(make_app, emulator, browser_sign_in_fn,
                                                        caplog):
    """A real server (werkzeug, with its access log) in query mode: the mode that puts code and
    state in a request line."""
    import threading

    import requests
    from werkzeug.serving import make_server

    caplog.set_level(logging.DEBUG)
    app = make_app(RESPONSE_MODE="query")
    server = make_server("localhost", 0, app, threaded=True)
    port = server.server_port
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        app_http = requests.Session()
        base = f"http://localhost:{port}"
        start = app_http.get(f"{base}/login", allow_redirects=False)
        authorize_url = start.headers["Location"]
        idp = requests.Session()
        idp.verify = str(emulator.ca_bundle)
        result = browser_sign_in_fn(authorize_url, ADELE, "Passw0rd!", session=idp)
        pending_cookie = app_http.cookies.get(pending_cookie_name(state_of(authorize_url)))
        verifier = pending_verifier(app, state_of(authorize_url), pending_cookie)
        callback_path = urlsplit(result.url)
        code = parse_qs(callback_path.query)["code"][0]
        callback = app_http.get(f"{base}{callback_path.path}?{callback_path.query}",
                                allow_redirects=False)
        assert callback.status_code == 303
        graph = app_http.get(f"{base}/graph", allow_redirects=False)
        assert graph.status_code == 200
        session_id = app_http.cookies.get(SESSION_COOKIE)
    finally:
        server.shutdown()
        thread.join(timeout=5)
    # Everything the app logged: werkzeug's access log, the app, MSAL (at DEBUG), its outbound
    # urllib3 calls (to the emulator's https port). Not this test's own HTTP clients standing in
    # for the browser (to the app's port and the emulator's browser-facing http port).
    browser_side = (f"localhost:{port}", urlsplit(emulator.http_base).netloc)
    text = "\n".join(record.getMessage() for record in caplog.records
                     if not (record.name.startswith("urllib3")
                             and any(netloc in record.getMessage() for netloc in browser_side)))
    assert "/getAToken" in text  # the access log line is there ...
    assert "code=[redacted]" in text and "state=[redacted]" in text  # ... redacted
    assert code not in text
    assert state_of(authorize_url) not in text
    assert not JWT.search(text)
    assert "emulator-dev-secret" not in text
    assert session_id and session_id not in text
    assert verifier not in text and "Authorization: Bearer" not in text
    assert pending_cookie and pending_cookie not in text


def pending_verifier(app, state: str, sealed: str) -> str:
    """The PKCE verifier sealed in a pending sign-in cookie, opened the way the callback opens
    it."""
    from flask import request

    name = pending_cookie_name(state)
    with app.test_request_context("/getAToken", headers={"Cookie": f"{name}={sealed}"}):
        return entra(app).pending.take(state, request).flow["code_verifier"]


def test_sign_in_stores_nothing_before_the_callback(app, browser):
    """Checklist J1: an anonymous /login stores nothing server-side; the pending sign-in lives
    in its sealed cookie alone."""
    records_before = stored_records(app)
    starts = [browser.start() for _ in range(3)]
    assert all(start.status_code == 302 for start in starts)
    assert stored_sessions(app) == {}
    assert stored_records(app) == records_before
    once = entra(app).store.directory / "once"
    assert not any(path.is_file() for path in once.rglob("*"))
    assert browser.cookie() is None
    names = {pending_cookie_name(state_of(start.headers["Location"])) for start in starts}
    assert set(pending_cookies(browser.client)) == names
    for value in pending_cookies(browser.client).values():  # sealed: nothing readable in it
        for start in starts:
            query = parse_qs(urlsplit(start.headers["Location"]).query)
            assert query["state"][0] not in value and query["nonce"][0] not in value


def test_client_info_account_matches_graph_user(app, browser, emulator):
    browser.sign_in()
    entry = entry_of(app, browser)
    user = emulator.directory.user_by_username(ADELE)
    assert entry["account"] == f"{user.id}.{emulator.tenant_id}"
    assert entry["claims"]["oid"] == user.id
    nonce_hash = entry["claims"]["nonce"]
    assert len(nonce_hash) == len(hashlib.sha256().hexdigest())
