"""flask_entra in a host app of its own: a good guest (the host's pages, error handlers and
headers stay its own), both session types, configuration refused clearly, the context a view
gets, signals, single use of a response under simultaneous delivery, a `kid`-less ID token, the
tenant allow-list and B2C's edit-profile URL."""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask

from flask_entra import Auth, ConfigurationError, signed_in, signed_out
from tests.extension.host_app import Driver, host_app
from tests.support import ADELE


@pytest.fixture(params=["filesystem", "redis"])
def store_kind(request: pytest.FixtureRequest) -> str | None:
    """None for the file store, else a real Redis's URL."""
    if request.param == "filesystem":
        return None
    return request.getfixturevalue("redis_server").url


def test_sign_in_call_api_and_sign_out_on_either_session_type(emulator, tmp_path, store_kind):
    app, _ = host_app(emulator, tmp_path, redis_url=store_kind)
    browser = Driver(app, emulator, ADELE)

    assert browser.sign_in().headers["Location"] == "/private"
    assert browser.client.get("/private").get_data(as_text=True) == "private page of Adele Vance"
    me = browser.client.get("/me")
    if me.status_code == 302:  # User.Read not consented by this user yet: consent, come back
        consent = browser.client.get(me.headers["Location"])
        from tests.support import DEFAULT_PASSWORD, browser_sign_in
        result = browser_sign_in(consent.headers["Location"], ADELE, DEFAULT_PASSWORD,
                                 session=browser.idp)
        assert browser.deliver(result).headers["Location"] == "/me"
        me = browser.client.get("/me")
    # The refresh token never reaches a view (identity passes it; tokens stay server-side).
    assert me.get_json() == {"context_keys": ["access_token", "expires_in", "scopes",
                                              "token_type", "user"], "name": "Adele Vance"}

    signed_out_page = browser.sign_out()
    assert signed_out_page.status_code == 303
    assert browser.client.get("/private").status_code == 302
    assert browser.client.get("/").get_data(as_text=True) == "home, signed out"


def test_the_host_keeps_its_own_pages_error_handlers_and_headers(emulator, tmp_path):
    app, _ = host_app(emulator, tmp_path)
    client = app.test_client()

    missing = client.get("/no-such-page")
    assert (missing.status_code, missing.get_data(as_text=True)) == (404, "the host's own 404 page")
    broken = client.get("/boom")
    assert broken.get_data(as_text=True) == "the host's own error page"
    home = client.get("/")
    assert home.headers["X-Host"] == "mine"
    # No CSP, no-store or framing rules imposed on the host's pages: those are opt-ins.
    for header in ("Content-Security-Policy", "X-Frame-Options", "Cache-Control"):
        assert header not in home.headers
    # The extension's own failures are its own page, only on its routes.
    callback = client.post("/getAToken", data={"state": "nothing-started", "code": "x"})
    assert callback.status_code == 400
    assert "No sign-in in progress" in callback.get_data(as_text=True)
    assert callback.headers["Cache-Control"] == "no-store"


def test_an_anonymous_visit_stores_nothing_and_returns_where_it_began(emulator, tmp_path):
    app, _ = host_app(emulator, tmp_path)
    client = app.test_client()

    def files() -> dict[str, float]:
        return {str(p): p.stat().st_mtime for p in tmp_path.rglob("*")}

    before = files()
    response = client.get("/private?tab=2")
    assert response.status_code == 302
    assert response.headers["Location"] == "/login?next=/private?tab%3D2"
    login = client.get(response.headers["Location"])
    assert login.status_code == 302
    assert files() == before


@pytest.mark.parametrize(("config", "problem"), [
    ({"client_id": ""}, "client_id:"),
    ({"redirect_uri": "http://example.com/getAToken"}, "redirect_uri: must be https"),
    ({"authority": "http://login.example.com/tenant"}, "authority: must be an https URL"),
    ({"client_credential": ""}, "client_credential:"),
    ({"response_mode": "fragment"}, "response_mode:"),
    ({"session_lifetime": 5}, "session_lifetime:"),
])
def test_wrong_options_are_refused_at_start_naming_each(emulator, tmp_path, config, problem):
    with pytest.raises(ConfigurationError) as refused:
        host_app(emulator, tmp_path, **config)
    assert problem in str(refused.value)


def test_options_come_from_app_config_when_not_given(emulator):
    app = Flask("configured")
    app.config.update(SECRET_KEY="k" * 32, SESSION_TYPE="mongodb",
                      ENTRA_CLIENT_ID="id", ENTRA_CLIENT_CREDENTIAL="secret",
                      ENTRA_AUTHORITY=emulator.authority,
                      ENTRA_REDIRECT_URI="http://localhost:5000/getAToken")
    # Every option was found in app.config; what is left is the session type, refused clearly.
    with pytest.raises(ValueError, match="SESSION_TYPE 'mongodb' is not supported"):
        Auth(app)


def test_signals_tell_the_host_and_a_refusing_receiver_stops_the_sign_in(emulator, tmp_path):
    app, _ = host_app(emulator, tmp_path)
    events: list[tuple[str, str]] = []

    def record_in(sender: Flask, user: dict[str, Any], **_: Any) -> None:
        events.append(("in", user["preferred_username"]))

    def record_out(sender: Flask, user: dict[str, Any], **_: Any) -> None:
        events.append(("out", user["preferred_username"]))

    with signed_in.connected_to(record_in, app), signed_out.connected_to(record_out, app):
        browser = Driver(app, emulator, ADELE)
        browser.sign_in()
        browser.sign_out()
    assert events == [("in", ADELE), ("out", ADELE)]

    def refuse(sender: Flask, user: dict[str, Any], **_: Any) -> None:
        raise PermissionError("this host does not know the user")

    with signed_in.connected_to(refuse, app):
        browser = Driver(app, emulator, ADELE)
        with pytest.raises(PermissionError):
            browser.deliver(browser.start())
    assert browser.client.get("/private").status_code == 302  # not signed in


def test_a_response_delivered_twice_at_once_redeems_its_code_once(emulator, tmp_path):
    app, _ = host_app(emulator, tmp_path)
    browser = Driver(app, emulator, ADELE)
    result = browser.start()
    token_requests: list[str] = []
    app.extensions["flask_entra"].http.hooks["response"].append(
        lambda r, *a, **k: token_requests.append(r.request.url)
        if r.request.url.endswith("/token") else None)
    # Two tabs of one browser: the same cookies, two clients, at the same moment.
    second = app.test_client()
    for cookie in browser.client._cookies.values():
        second.set_cookie(cookie.key, cookie.value, domain=cookie.domain, path=cookie.path)
    answers: list[int] = []
    barrier = threading.Barrier(2)

    def deliver(client: Any) -> None:
        barrier.wait()
        answers.append(client.post(urlsplit(result.url).path, data=result.data).status_code)

    threads = [threading.Thread(target=deliver, args=(c,)) for c in (browser.client, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(answers) == [303, 400]
    assert len(token_requests) == 1


def test_an_id_token_without_kid_is_accepted_with_one_key_and_refused_with_two(
        start_emulator, tmp_path):
    emu = start_emulator()
    app, _ = host_app(emu, tmp_path)
    client_id = app.extensions["flask_entra"].settings.client_id

    emu.defects.add(client_id, "no_kid")
    one_key = Driver(app, emu, ADELE)
    assert one_key.sign_in().status_code == 303

    emu.keys.rotate()  # the old key stays published: two signing keys
    app2, _ = host_app(emu, tmp_path / "second")  # a process that never read the JWKS
    emu.defects.add(client_id, "no_kid")
    two_keys = Driver(app2, emu, ADELE)
    refused = two_keys.deliver(two_keys.start())
    assert refused.status_code == 400
    assert "does not name its signing key (kid) and the provider publishes several" in (
        refused.get_data(as_text=True))


def test_the_tenant_allow_list_refuses_other_tenants(emulator, tmp_path):
    organizations = emulator.authority.rsplit("/", 1)[0] + "/organizations"
    app, _ = host_app(emulator, tmp_path, authority=organizations,
                      allowed_tenants=["00000000-0000-0000-0000-000000000001"])
    refused = Driver(app, emulator, ADELE)
    answer = refused.deliver(refused.start())
    assert answer.status_code == 400
    assert "comes from a tenant this app does not allow (tid)" in answer.get_data(as_text=True)

    app, _ = host_app(emulator, tmp_path / "allowed", authority=organizations,
                      allowed_tenants=[emulator.tenant_id.upper()])
    assert Driver(app, emulator, ADELE).sign_in().status_code == 303


def test_b2c_options_build_the_authority_and_edit_profile_url_as_identity_does(tmp_path):
    app = Flask("b2c")
    app.config.update(SECRET_KEY="k" * 32, SESSION_TYPE="filesystem",
                      SESSION_FILE_DIR=str(tmp_path / "s"))
    auth = Auth(app, client_id="b2c-client", client_credential="secret",
                b2c_tenant_name="contoso", b2c_signup_signin_user_flow="B2C_1_susi",
                b2c_edit_profile_user_flow="B2C_1_edit",
                redirect_uri="http://localhost:5000/getAToken")
    settings = app.extensions["flask_entra"].settings
    assert settings.authority == "https://contoso.b2clogin.com/contoso.onmicrosoft.com/B2C_1_susi"
    with app.test_request_context("/"):
        url = auth.get_edit_profile_url()
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == (
        "https://contoso.b2clogin.com/contoso.onmicrosoft.com/B2C_1_edit/oauth2/v2.0/authorize")
    query = parse_qs(parts.query)
    assert query["client_id"] == ["b2c-client"]
    assert query["redirect_uri"] == ["http://localhost:5000/getAToken"]
    # Its answer comes back to the redirect URI with the no-op state: nothing to redeem.
    back = app.test_client().get(f"/getAToken?state={query['state'][0]}&code=anything")
    assert (back.status_code, back.headers["Location"]) == (303, "/")


def test_without_b2c_there_is_no_edit_profile_url(emulator, tmp_path):
    app, auth = host_app(emulator, tmp_path)
    with app.test_request_context("/"):
        assert auth.get_edit_profile_url() is None
