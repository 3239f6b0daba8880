"""Issue 11, the sign-in side: the sign-in form is bound to the browser that started the
sign-in (Entra's `esctx` cookie), each authorization request is bounded in size, and every
store of the emulator's state is bounded in count and lifetime and purged on expiry."""

from __future__ import annotations

import http.client
from dataclasses import replace
from urllib.parse import urlsplit

import requests

from entra_emulator import request_limits, signin_state
from entra_emulator.state import (
    Clock,
    PendingStore,
    RefreshGrant,
    RefreshTokenStore,
    RevokedAccessTokens,
)
from tests.support import (
    ADELE,
    DEFAULT_PASSWORD,
    MEGAN,
    authorize_url,
    browser_sign_in,
    params_of,
)

BINDING_COOKIE = "esctx"


def _url(emu, app, **params: str) -> str:
    query = {"redirect_uri": app.redirect_uri, "state": "xyz", **params}
    return authorize_url(emu, app.client_id, **query)


def _ctx_of(page: requests.Response) -> str:
    return page.text.split('name="ctx" value="')[1].split('"')[0]


def _login(emu, browser, ctx: str, username: str = MEGAN) -> requests.Response:
    return browser.post(f"{emu.http_base}/{emu.tenant_id}/login",
                        data={"ctx": ctx, "username": username, "password": DEFAULT_PASSWORD},
                        allow_redirects=False)


def _assert_refused_as_another_browser(response: requests.Response) -> None:
    assert response.status_code == 400, response.text[:300]
    assert "AADSTS90100:" in response.text
    assert "Location" not in response.headers
    assert "ESTSAUTH" not in response.headers.get("Set-Cookie", "")
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]


# ---------------------------------------------------------------------------------------------
# 1. The sign-in form is bound to the browser that started the sign-in
# ---------------------------------------------------------------------------------------------

def test_sign_in_form_posted_by_another_browser_is_refused(start_emulator, default_app):
    """Login CSRF: the attacker starts a sign-in in their own browser, then makes the victim's
    browser post the form with the attacker's credentials. The victim must not end up signed
    in as the attacker."""
    emu = start_emulator()
    attacker = requests.Session()
    ctx = _ctx_of(attacker.get(_url(emu, default_app)))
    victim = requests.Session()   # no cookie of the emulator at all
    _assert_refused_as_another_browser(_login(emu, victim, ctx))
    assert not victim.cookies.get("ESTSAUTH")
    assert len(emu.state.sessions) == 0
    # The victim's next sign-in at the app is not silently the attacker's.
    silent = victim.get(_url(emu, default_app, prompt="none"), allow_redirects=False)
    assert params_of(silent.headers["Location"])["error"] == "login_required"
    # The attacker's own browser can still finish its sign-in.
    assert _login(emu, attacker, ctx).status_code in (200, 302)


def test_sign_in_form_with_another_browsers_binding_is_refused(start_emulator, default_app):
    emu = start_emulator()
    attacker, victim = requests.Session(), requests.Session()
    ctx = _ctx_of(attacker.get(_url(emu, default_app)))
    victim.get(_url(emu, default_app))   # the victim has a binding cookie of its own
    assert victim.cookies.get(BINDING_COOKIE) != attacker.cookies.get(BINDING_COOKIE)
    _assert_refused_as_another_browser(_login(emu, victim, ctx))
    assert len(emu.state.sessions) == 0


def test_refused_post_leaves_the_victims_sso_session_alone(start_emulator, default_app):
    emu = start_emulator()
    victim = requests.Session()
    browser_sign_in(_url(emu, default_app), ADELE, DEFAULT_PASSWORD, session=victim)
    attacker = requests.Session()
    ctx = _ctx_of(attacker.get(_url(emu, default_app)))
    _assert_refused_as_another_browser(_login(emu, victim, ctx))
    silent = victim.get(_url(emu, default_app, prompt="none"), allow_redirects=False)
    assert "code" in params_of(silent.headers["Location"])


def test_binding_cookie_is_set_by_the_sign_in_page_and_kept(start_emulator, default_app):
    emu = start_emulator()
    browser = requests.Session()
    page = browser.get(_url(emu, default_app))
    set_cookie = page.headers["Set-Cookie"]
    assert set_cookie.startswith(f"{BINDING_COOKIE}=")
    assert "HttpOnly" in set_cookie and "SameSite=Lax" in set_cookie
    first = browser.cookies.get(BINDING_COOKIE)
    # A second sign-in in the same browser (another tab) keeps the same binding, so both
    # tabs' forms still work.
    second_tab = browser.get(_url(emu, default_app, state="tab2"))
    assert BINDING_COOKIE not in second_tab.headers.get("Set-Cookie", "")
    assert _login(emu, browser, _ctx_of(page), ADELE).status_code in (200, 302)
    assert browser.cookies.get(BINDING_COOKIE) == first
    assert browser_sign_in(_url(emu, default_app), ADELE, DEFAULT_PASSWORD).params["code"]


# ---------------------------------------------------------------------------------------------
# 2. Bounded requests and bounded pending sign-ins
# ---------------------------------------------------------------------------------------------

def test_two_thousand_huge_states_are_refused_and_hold_nothing(emulator, default_app):
    held = len(emulator.state.pending)
    url = urlsplit(_url(emulator, default_app, state="s" * 60_000))
    # One kept-alive connection: requests spends ~30 ms parsing each 60 KB URL.
    browser = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    try:
        for _ in range(2000):
            browser.request("GET", f"{url.path}?{url.query}")
            response = browser.getresponse()
            body = response.read()
            assert response.status == 302, body[:200]
            location = response.getheader("Location")
            assert location.startswith(default_app.redirect_uri + "?")
            params = params_of(location)
            assert params["error"] == "invalid_request"
            assert params["error_description"].startswith("AADSTS90015: ")
            assert "state" not in params   # the oversized state is not echoed back
    finally:
        browser.close()
    assert len(emulator.state.pending) == held


def test_each_bounded_parameter_is_refused_when_too_long(emulator, default_app):
    limits = request_limits.MAX_PARAMETER_LENGTHS
    for name in ("state", "nonce", "login_hint", "scope", "claims", "domain_hint",
                 "id_token_hint"):
        held = len(emulator.state.pending)
        response = requests.get(_url(emulator, default_app, **{name: "a" * (limits[name] + 1)}),
                                allow_redirects=False)
        assert response.status_code == 302, name
        params = params_of(response.headers["Location"])
        assert params["error_description"].startswith("AADSTS90015: "), name
        assert f"'{name}'" in params["error_description"]
        assert len(emulator.state.pending) == held, name
    # code_challenge keeps Entra's own answer for its size (RFC 7636: at most 128).
    too_long = requests.get(_url(emulator, default_app, code_challenge="a" * 129),
                            allow_redirects=False)
    assert params_of(too_long.headers["Location"])["error_description"].startswith(
        "AADSTS501491: ")


def test_oversized_client_or_redirect_uri_gets_the_error_page(emulator, default_app):
    limits = request_limits.MAX_PARAMETER_LENGTHS
    long_uri = default_app.redirect_uri + "?" + "a" * limits["redirect_uri"]
    for url in (_url(emulator, default_app, redirect_uri=long_uri),
                authorize_url(emulator, "c" * (limits["client_id"] + 1),
                              redirect_uri=default_app.redirect_uri)):
        response = requests.get(url, allow_redirects=False)
        assert response.status_code == 400
        assert "Location" not in response.headers
        assert "AADSTS90015:" in response.text


def test_parameters_at_their_limit_are_accepted(emulator, default_app):
    limits = request_limits.MAX_PARAMETER_LENGTHS
    response = requests.get(_url(emulator, default_app, state="s" * limits["state"],
                                 nonce="n" * limits["nonce"]), allow_redirects=False)
    assert response.status_code == 200 and 'name="password"' in response.text


def test_pending_sign_ins_are_capped_dropping_the_oldest():
    store = PendingStore(Clock(), limit=5)
    started = [store.start(None) for _ in range(8)]
    assert len(store) == 5
    assert all(store.get(p.ctx) is None for p in started[:3])
    assert all(store.get(p.ctx) is not None for p in started[3:])
    assert 1000 <= signin_state.MAX_PENDING_SIGN_INS <= 10_000


def test_pending_sign_ins_expire_after_ten_minutes_and_are_purged():
    clock = Clock()
    store = PendingStore(clock)
    old = store.start(None)
    clock.advance(9 * 60)
    assert store.get(old.ctx) is not None
    clock.advance(61 + signin_state.PENDING_SIGN_IN_LIFETIME_SECONDS - 10 * 60)
    assert signin_state.PENDING_SIGN_IN_LIFETIME_SECONDS <= 10 * 60
    assert store.get(old.ctx) is None
    store.start(None)
    assert len(store) == 1


def test_expired_sign_in_form_is_refused_over_http(emulator, default_app):
    browser = requests.Session()
    ctx = _ctx_of(browser.get(_url(emulator, default_app)))
    emulator.clock.advance(signin_state.PENDING_SIGN_IN_LIFETIME_SECONDS + 1)
    response = _login(emulator, browser, ctx)
    assert response.status_code == 400 and "AADSTS50089:" in response.text


def test_expired_sso_session_is_purged(start_emulator, default_app):
    emu = start_emulator()
    first = requests.Session()
    browser_sign_in(_url(emu, default_app), ADELE, DEFAULT_PASSWORD, session=first)
    assert len(emu.state.sessions) == 1
    emu.clock.advance(signin_state.SSO_SESSION_LIFETIME_SECONDS + 1)
    silent = first.get(_url(emu, default_app, prompt="none"), allow_redirects=False)
    assert params_of(silent.headers["Location"])["error"] == "login_required"
    assert len(emu.state.sessions) == 0
    browser_sign_in(_url(emu, default_app), MEGAN, DEFAULT_PASSWORD)
    assert len(emu.state.sessions) == 1


def test_sso_session_in_use_slides_its_window(start_emulator, default_app):
    emu = start_emulator()
    browser = requests.Session()
    browser_sign_in(_url(emu, default_app), ADELE, DEFAULT_PASSWORD, session=browser)
    for _ in range(3):
        emu.clock.advance(signin_state.SSO_SESSION_LIFETIME_SECONDS * 2 // 3)
        silent = browser.get(_url(emu, default_app, prompt="none"), allow_redirects=False)
        assert "code" in params_of(silent.headers["Location"])
    assert len(emu.state.sessions) == 1


def test_revoked_refresh_token_families_are_forgotten_when_their_tokens_expire():
    clock = Clock()
    store = RefreshTokenStore(clock)
    now = clock.now()
    grant = RefreshGrant(family="f1", client_id="c", user_id="u", tenant_id="t",
                         granted=frozenset(), sid="s", auth_time=0, include_auth_time=False,
                         issued_at=now, expires_at=now + 100)
    store.issue(grant)
    store.revoke_family("f1")
    clock.advance(50)
    assert store.is_revoked("f1")
    clock.advance(51)
    store.issue(replace(grant, family="f2", expires_at=clock.now() + 100))
    assert not store.is_revoked("f1") and len(store) == 1


def test_revoked_access_tokens_are_forgotten_after_the_longest_access_token_lifetime():
    clock = Clock()
    revoked = RevokedAccessTokens(clock)
    revoked.update(["uti-1", "uti-2"])
    clock.advance(RevokedAccessTokens.MEMORY_SECONDS - 1)
    assert "uti-1" in revoked
    clock.advance(2)
    assert "uti-1" not in revoked and len(revoked) == 0
