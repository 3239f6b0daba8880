"""flask_entra.Auth is a drop-in for identity.flask.Auth (issue 9, item 3).

ONE app, written the way the quickstart's app.py is (Azure-Samples/ms-identity-python-webapp),
runs twice: once on `identity.flask.Auth`, once on `flask_entra.Auth`; the import is the only
difference. Both sign in, call Graph's /me through "Call API" and sign out against the emulator.
Then the forged ID tokens the emulator can inject: identity signs the user in with nearly all of
them (MSAL checks only the nonce; identity checks nothing); flask_entra refuses each one.

The helpers branch on the library only where the two flows differ: identity answers a protected
view with a 200 login page (meta refresh to the authorize URL) and takes the response by GET;
flask_entra answers 302 to /login?next=…, which answers 302 to the authorize URL, takes the
response by form_post and answers 303 to `next`; its sign-out is a confirmation page whose
CSRF-protected POST answers 303 to the end_session_endpoint.

The app runs in Flask's test client as http://localhost:5000 (its registered redirect URI); the
emulator is trusted through REQUESTS_CA_BUNDLE (set by the `emulator` fixture).
"""

from __future__ import annotations

import html
import importlib
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from flask import Flask

from entra_emulator.serving import env_settings
from tests.quickstart_sample import LOGOUT_LINK, META_REFRESH, PRE, quickstart_app
from tests.support import ADELE, DEFAULT_PASSWORD, browser_sign_in

APP = "http://localhost:5000"
AUTH_MODULES = {"identity": "identity.flask", "flask_entra": "flask_entra"}
# The ID-token defects of entra_emulator/defects.py an RP must refuse. Not here: rotated_key
# (genuine, to accept after a JWKS refetch), wrong_sub (a refresh-time defect) and no_kid (signed
# with the sole published key, which flask_entra accepts, as OIDF's
# rp-id_token-kid-absent-single-jwks requires).
FORGED = ["bad_signature", "alg_none", "hs256_public_key", "wrong_iss", "wrong_aud", "expired",
          "iat_future", "missing_sub", "missing_iat", "unknown_kid", "aud_extra", "azp_wrong",
          "wrong_nonce"]

pytestmark = [
    pytest.mark.filterwarnings("ignore:response_mode=.form_post. is recommended"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:flask_session"),
]

FORM = re.compile(r"<form[^>]*method=\"post\"[^>]*action=\"([^\"]+)\"", re.I)
CSRF = re.compile(r"<input type=\"hidden\" name=\"csrf_token\" value=\"([^\"]+)\"")


@pytest.fixture(params=list(AUTH_MODULES))
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


def make_app(kind: str, emu: Any, tmp_path: Path) -> Flask:
    Auth = importlib.import_module(AUTH_MODULES[kind]).Auth   # the only difference
    return quickstart_app(Auth, env_settings(emu), tmp_path / "flask_session")


def excerpt(response: Any) -> str:
    return f"{response.status} {response.get_data(as_text=True)[:600]!r}"


def local(location: str) -> str:
    """A Location on the app, as path?query (identity's are absolute, flask_entra's may not)."""
    parts = urlsplit(location)
    assert parts.netloc in ("", "localhost:5000"), location
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


def asks_to_sign_in(kind: str, page: Any, path: str) -> bool:
    """Whether this answer to a protected view is "sign in first" (and not the view)."""
    if kind == "identity":
        return page.status_code == 200 and bool(META_REFRESH.search(page.get_data(as_text=True)))
    return (page.status_code == 302 and urlsplit(page.headers["Location"]).path == "/login"
            and parse_qs(urlsplit(page.headers["Location"]).query).get("next") == [path])


def authorize_url(client: Any, kind: str, page: Any) -> str:
    """Where a protected view that needs a sign-in (or a consent) sends the browser."""
    if kind == "identity":
        assert page.status_code == 200, excerpt(page)
        return html.unescape(META_REFRESH.search(page.get_data(as_text=True)).group(1))
    assert page.status_code in (302, 303), excerpt(page)
    login = local(page.headers["Location"])
    assert urlsplit(login).path == "/login", login
    at_login = client.get(login)
    assert at_login.status_code == 302, excerpt(at_login)
    cookies = at_login.headers.getlist("Set-Cookie")   # the pending sign-in, for the form_post
    assert any("Secure" in c and "SameSite=None" in c for c in cookies), cookies
    return at_login.headers["Location"]


def deliver(client: Any, kind: str, result: Any) -> Any:
    """The browser's request back to the redirect URI, as the response mode makes it."""
    parts = urlsplit(result.url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{APP}/getAToken", result
    if kind == "identity":
        assert result.method == "GET", result      # identity reads request.args only
        return client.get(f"{parts.path}?{parts.query}")
    assert result.method == "POST", result         # form_post by default
    return client.post(parts.path, data=result.data)


def sign_in(client: Any, kind: str, path: str, idp: requests.Session,
            username: str = ADELE) -> Any:
    """Visit `path` needing a sign-in, sign in (and consent) at the emulator, come back."""
    url = authorize_url(client, kind, client.get(path))
    return deliver(client, kind, browser_sign_in(url, username, DEFAULT_PASSWORD, session=idp))


def assert_back_at(kind: str, back: Any, path: str) -> None:
    assert back.status_code == (302 if kind == "identity" else 303), excerpt(back)
    assert local(back.headers["Location"]) == path


def sign_out(client: Any, kind: str, index: str) -> str:
    """The sample's Logout link; returns where the app sends the browser (the provider)."""
    link = LOGOUT_LINK.search(index).group(1)
    assert link == "/logout"     # url_for('identity.logout'), in both
    logout = client.get(link)
    if kind == "identity":
        assert logout.status_code == 302, excerpt(logout)   # a GET signs out (CSRF-able)
        return logout.headers["Location"]
    assert logout.status_code == 200, excerpt(logout)       # only a confirmation page
    page = logout.get_data(as_text=True)
    assert FORM.search(page) and FORM.search(page).group(1) == "/logout", page
    done = client.post("/logout", data={"csrf_token": html.unescape(CSRF.search(page).group(1))})
    assert done.status_code == 303, excerpt(done)
    return done.headers["Location"]


def api_result(page: Any) -> Any:
    match = PRE.search(page.get_data(as_text=True))
    assert page.status_code == 200 and match, excerpt(page)
    return json.loads(html.unescape(match.group(1)))


def test_sign_in_call_graph_and_sign_out(kind, start_emulator, tmp_path):
    emu = start_emulator()   # its own consent state: User.Read not consented yet
    client, idp = make_app(kind, emu, tmp_path).test_client(), requests.Session()

    assert asks_to_sign_in(kind, client.get("/"), "/")
    assert_back_at(kind, sign_in(client, kind, "/", idp), "/")
    index = client.get("/")
    assert index.status_code == 200 and "Welcome Adele Vance!" in index.get_data(as_text=True)
    assert "Edit Profile" not in index.get_data(as_text=True)    # no B2C

    # "Call API": signing in asked for OIDC scopes only, so User.Read needs a consent first
    # (incremental): back to the provider (SSO, then the consent page), then to /call_api.
    first_call = client.get("/call_api")
    assert PRE.search(first_call.get_data(as_text=True)) is None
    result = browser_sign_in(authorize_url(client, kind, first_call), ADELE, DEFAULT_PASSWORD,
                             session=idp)
    assert_back_at(kind, deliver(client, kind, result), "/call_api")
    me = api_result(client.get("/call_api"))
    assert me["userPrincipalName"] == ADELE and me["displayName"] == "Adele Vance"
    assert me["@odata.context"].endswith("/v1.0/$metadata#users/$entity")

    location = sign_out(client, kind, index.get_data(as_text=True))
    end_session = f"{emu.http_base}/{emu.tenant_id}/oauth2/" + (
        "logout" if kind == "identity" else "v2.0/logout")   # v1 vs v2 discovery
    assert location.split("?")[0] == end_session, location
    at_emulator = idp.get(location, allow_redirects=False)
    assert at_emulator.status_code in (200, 302), at_emulator.text[:300]
    assert "ESTSAUTH" not in idp.cookies

    # Signed out on both sides: the app asks to sign in again; the emulator asks for a password.
    again = client.get("/")
    assert asks_to_sign_in(kind, again, "/"), excerpt(again)
    assert "Welcome" not in again.get_data(as_text=True)
    at_authorize = idp.get(authorize_url(client, kind, again), allow_redirects=False)
    assert at_authorize.status_code == 200 and 'name="password"' in at_authorize.text


@pytest.mark.parametrize("defect", FORGED)
def test_forged_id_token(kind, defect, emulator, tmp_path):
    client = make_app(kind, emulator, tmp_path).test_client()
    url = authorize_url(client, kind, client.get("/"))
    emulator.defects.add(env_settings(emulator)["CLIENT_ID"], defect)
    back = deliver(client, kind, browser_sign_in(url, ADELE, DEFAULT_PASSWORD))
    assert not emulator.defects.pending()    # the forged token was issued
    home = client.get("/")

    if kind == "flask_entra":   # refused: an error page, and nobody signed in
        assert 400 <= back.status_code < 500, excerpt(back)
        assert "ID token" in back.get_data(as_text=True), excerpt(back)   # for this reason
        assert asks_to_sign_in(kind, home, "/"), excerpt(home)
    elif defect == "wrong_nonce":
        # The one check MSAL still makes: it raises RuntimeError, which identity does not
        # catch, so the callback is a bare 500 (refused, but as a crash), and nobody is in.
        assert back.status_code == 500, excerpt(back)
        assert asks_to_sign_in(kind, home, "/"), excerpt(home)
    elif defect == "missing_iat":
        # Accepted into the session; then identity's own expiry check reads claims["iat"] and
        # every protected page crashes (500) until the session is cleared.
        assert_back_at(kind, back, "/")
        assert home.status_code == 500, excerpt(home)
    else:
        # Accepted: identity stores the forged claims and the user is signed in. ("expired":
        # identity sees exp passed and renews the ID token with the refresh token from the
        # same forged response.)
        assert_back_at(kind, back, "/")
        assert home.status_code == 200, excerpt(home)
        assert "Welcome Adele Vance!" in home.get_data(as_text=True)
