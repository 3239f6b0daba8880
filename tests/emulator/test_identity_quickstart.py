"""The quickstart's own code, on the `identity` package, against the emulator (issue 2, "Done
when"): sign in, call /v1.0/me through the sample's "Call API" route, log out.

The app below is written the way Microsoft's sample is (Azure-Samples/ms-identity-python-webapp
app.py, the code behind the quickstart): `identity.flask.Auth(app, authority=AUTHORITY, ...)`,
an index page and a `/call_api` page behind `@auth.login_required`, Flask-Session on the
filesystem, and identity's own log-out view. Nothing in it knows about the emulator: it gets
AUTHORITY, CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, ENDPOINT and SCOPE as from a .env, and trusts
the emulator's certificate through REQUESTS_CA_BUNDLE (set by the `emulator` fixture), as
identity offers no other way.

The app runs in Flask's test client as http://localhost:5000 (its registered redirect URI);
the browser's visits to the emulator go over real HTTP, through the shared `browser_sign_in`.
"""

from __future__ import annotations

import html
import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from flask import Flask
from identity.flask import Auth  # the test extra; missing, collection fails saying so

from entra_emulator.serving import env_settings
from tests.quickstart_sample import LOGOUT_LINK, META_REFRESH, PRE, quickstart_app
from tests.support import (
    ADELE,
    DEFAULT_PASSWORD,
    MEGAN,
    assert_entra_error,
    browser_sign_in,
    redeem_code,
    refresh,
    sign_in_for_code,
)

LEE = "LeeG@contoso.onmicrosoft.com"

pytestmark = [
    # The sample's own choices, warned about by the libraries: query response mode (identity
    # reads request.args only) and Flask-Session's filesystem setting.
    pytest.mark.filterwarnings("ignore:response_mode=.form_post. is recommended"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:flask_session"),
]



@pytest.fixture
def fresh(start_emulator):
    """An emulator of its own, so no user has consented to anything yet (consents are
    remembered in the state folder); REQUESTS_CA_BUNDLE already trusts it."""
    return start_emulator()


@pytest.fixture
def app(fresh, tmp_path) -> Flask:
    # The .env `entra-emulator serve --env-file` writes for a newcomer.
    return quickstart_app(Auth, env_settings(fresh), tmp_path / "flask_session")


def follow_login_page(page: Any) -> str:
    """identity's login page sends the browser on with a meta refresh: the authorize URL."""
    body = page.get_data(as_text=True)
    match = META_REFRESH.search(body)
    assert match, body
    return html.unescape(match.group(1))


def sign_in(client: Any, path: str, username: str, idp: requests.Session) -> Any:
    """Visit a login_required page signed out, sign in at the emulator, come back."""
    login_page = client.get(path)
    assert login_page.status_code == 200
    authorize_url = follow_login_page(login_page)
    result = browser_sign_in(authorize_url, username, DEFAULT_PASSWORD, session=idp)
    assert result.method == "GET", result      # identity reads request.args only
    parts = urlsplit(result.url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == "http://localhost:5000/getAToken"
    return client.get(f"{parts.path}?{parts.query}")


def api_result(page: Any) -> Any:
    """What the sample's display.html shows: the API's JSON answer."""
    body = page.get_data(as_text=True)
    match = PRE.search(body)
    assert page.status_code == 200 and match, body
    return json.loads(html.unescape(match.group(1)))


def test_sign_in_call_graph_and_log_out(app, fresh, default_app):
    emulator = fresh
    client, idp = app.test_client(), requests.Session()

    back = sign_in(client, "/", ADELE, idp)

    assert back.status_code == 302, back.get_data(as_text=True)
    assert back.headers["Location"] == "http://localhost:5000/"
    index = client.get("/").get_data(as_text=True)
    assert "Welcome Adele Vance!" in index

    # The sample's "Call API". Signing in asked only for openid profile offline_access, so
    # the first call needs User.Read consented: identity's silent refresh is refused (65001)
    # and it sends the browser back to authorize (the SSO session signs in; the consent page
    # asks for User.Read), which returns to /call_api.
    first_call = client.get("/call_api")
    assert PRE.search(first_call.get_data(as_text=True)) is None   # a login page
    result = browser_sign_in(follow_login_page(first_call), ADELE, DEFAULT_PASSWORD,
                             session=idp)
    parts = urlsplit(result.url)
    back = client.get(f"{parts.path}?{parts.query}")
    assert back.headers["Location"] == "http://localhost:5000/call_api"
    first_call = client.get("/call_api")
    me = api_result(first_call)
    assert me["userPrincipalName"] == ADELE
    assert me["displayName"] == "Adele Vance"
    assert me["@odata.context"].endswith("/v1.0/$metadata#users/$entity")

    # Log out with identity's own view: a GET, then on to the v1 end_session_endpoint (read
    # from the v1 discovery document) with an unencoded post_logout_redirect_uri.
    logout_path = LOGOUT_LINK.search(index).group(1)
    logout = client.get(logout_path)
    assert logout.status_code == 302
    location = logout.headers["Location"]
    assert location == (f"{emulator.http_base}/{emulator.tenant_id}/oauth2/logout"
                        f"?post_logout_redirect_uri={default_app.post_logout_redirect_uri}")
    at_emulator = idp.get(location, allow_redirects=False)
    assert at_emulator.status_code == 302
    assert at_emulator.headers["Location"] == default_app.post_logout_redirect_uri
    assert "ESTSAUTH" not in idp.cookies

    # Signed out on both sides: the app asks to sign in again, and the emulator shows its
    # sign-in form instead of answering from a session.
    again = client.get("/")
    assert "Welcome" not in again.get_data(as_text=True)
    at_authorize = idp.get(follow_login_page(again), allow_redirects=False)
    assert at_authorize.status_code == 200
    assert 'name="password"' in at_authorize.text

    # Signed in again, "Call API" answers straight away: User.Read is consented now, and a
    # refresh token may be redeemed for any scope the user consented to for the app.
    assert sign_in(client, "/", ADELE, idp).status_code == 302
    assert api_result(client.get("/call_api"))["userPrincipalName"] == ADELE


def test_call_api_first_signs_in_for_user_read_and_returns_there(app):
    """Straight to the protected "Call API" page: identity asks for SCOPE at sign-in and
    compares the granted scopes literally with it (entra-protocol.md §0.7)."""
    client = app.test_client()

    login_page = client.get("/call_api")
    authorize_url = follow_login_page(login_page)
    requested = parse_qs(urlsplit(authorize_url).query)["scope"][0].split()
    assert set(requested) == {"User.Read", "openid", "profile", "offline_access"}
    result = browser_sign_in(authorize_url, MEGAN, DEFAULT_PASSWORD,
                             session=requests.Session())
    parts = urlsplit(result.url)
    back = client.get(f"{parts.path}?{parts.query}")

    assert back.status_code == 302, back.get_data(as_text=True)
    assert back.headers["Location"] == "http://localhost:5000/call_api"
    api = client.get("/call_api")
    me = json.loads(html.unescape(PRE.search(api.get_data(as_text=True)).group(1)))
    assert me["userPrincipalName"] == MEGAN


def test_expired_id_token_is_renewed_by_identity_with_oidc_scopes_only(app):
    """identity.get_user() renews an expired ID token with a refresh for `openid profile
    offline_access` alone (entra-protocol.md §0.9); the emulator must answer it with a new
    ID token, or the user would be signed out."""
    client = app.test_client()
    sign_in(client, "/", ADELE, requests.Session())
    with client.session_transaction() as session:
        user = session["_logged_in_user"]
        first_iat = user["iat"]
        # Make identity see its ID token as expired (its own check reads the wall clock).
        user["exp"] = user["iat"] = user["iat"] - 7200
        session["_logged_in_user"] = user

    page = client.get("/")

    assert "Welcome Adele Vance!" in page.get_data(as_text=True)
    with client.session_transaction() as session:
        renewed = session["_logged_in_user"]
    assert renewed["iat"] >= first_iat and renewed["exp"] > renewed["iat"]


def test_a_refresh_token_may_ask_for_any_scope_the_user_consented_to(fresh, default_app):
    """What the quickstart's second "Call API" relies on, at the token endpoint: a refresh
    token from an OIDC-only sign-in is redeemed for User.Read once the user consented to it
    for the app (in another sign-in), and not before (entra-protocol.md §1.3)."""
    def sign_in_with(scope: str) -> dict[str, Any]:
        grant = sign_in_for_code(fresh, default_app, LEE, scope=scope)
        response = redeem_code(fresh, default_app, grant, scope=scope)
        assert response.status_code == 200, response.text
        return response.json()

    not_yet = sign_in_with("openid profile offline_access")
    refused = refresh(fresh, default_app, not_yet["refresh_token"], scope="User.Read")
    assert_entra_error(refused, 400, "invalid_grant", 65001)

    oidc_only = sign_in_with("openid profile offline_access")
    sign_in_with("User.Read openid profile offline_access")   # consents to User.Read
    refreshed = refresh(fresh, default_app, oidc_only["refresh_token"],
                        scope="User.Read openid profile offline_access")
    assert refreshed.status_code == 200, refreshed.text
    body = refreshed.json()
    assert body["scope"] == "User.Read openid profile"
    me = requests.get(fresh.graph_me_url, headers={
        "Authorization": f"Bearer {body['access_token']}"}, timeout=10)
    assert me.status_code == 200, me.text
