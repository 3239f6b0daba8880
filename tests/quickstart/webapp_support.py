"""Helpers and fixtures for the web app's tests: the app configured against the real emulator (over
TLS), and a `Browser` that drives both the way a user's browser does.

The fixtures are in conftest.py beside this file.

The app runs in Flask's test client; the emulator's sign-in pages are driven over real HTTP by the
shared `browser_sign_in` helper; the final request the browser would make back to the app (a GET
for query responses, a POST for form_post) is then fed into the test client.
"""

from __future__ import annotations

import json
import pickle
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests

APP_DISPLAY_NAME = "python-webapp"
PASSWORD = "Passw0rd!"
ADELE = "AdeleV@contoso.onmicrosoft.com"
MEGAN = "MeganB@contoso.onmicrosoft.com"
SESSION_COOKIE = "session"
PENDING_COOKIE_PREFIX = "entra-signin-"


def registered_app(emu):
    return next(a for a in emu.directory.applications if a.display_name == APP_DISPLAY_NAME)


def app_settings(emu, **overrides: Any) -> dict[str, Any]:
    """The web app's settings for the emulator's registered app; a None override removes a key."""
    app = registered_app(emu)
    config = {
        "CLIENT_ID": app.app_id,
        "CLIENT_SECRET": app.password_credentials[0].secret_text,
        "AUTHORITY": emu.authority,
        "ENDPOINT": emu.graph_me_url,
        "CA_BUNDLE": str(emu.ca_bundle),
        "REDIRECT_URI": "http://localhost:5000/getAToken",
        **overrides,
    }
    return {k: v for k, v in config.items() if v is not None}


def webapp_config(emu, tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    return app_settings(emu, **{"SECRET_KEY": "webapp-tests-secret-key-0123456789",
                                "SESSION_FILE_DIR": str(tmp_path / "sessions"),
                                "TESTING": True, **overrides})


class Browser:
    """One user's browser: cookies for the app (Flask test client) and for the emulator."""

    def __init__(self, app, emu, sign_in_fn: Callable[..., Any]) -> None:
        self.app = app
        self.emu = emu
        self.client = app.test_client()
        self._idp_sessions: dict[str, requests.Session] = {}  # the provider's SSO, per account
        self._sign_in_fn = sign_in_fn

    # -- the steps of a sign-in -----------------------------------------------------------

    def start(self, next_path: str | None = None):
        """GET /login; returns the response (302 to the provider)."""
        query = {"next": next_path} if next_path is not None else None
        return self.client.get("/login", query_string=query)

    def authorize(self, authorize_url: str, username: str = ADELE, **kwargs: Any):
        """Drive the emulator's sign-in (and consent) pages; the browser's next request. Each
        account keeps its own provider session (its SSO would otherwise answer for the first)."""
        idp = self._idp_sessions.setdefault(username, requests.Session())
        idp.verify = str(self.emu.ca_bundle)
        return self._sign_in_fn(authorize_url, username, PASSWORD, session=idp, **kwargs)

    def deliver(self, result, *, cross_site: bool = True):
        """Make the request the provider sent the browser to. A form_post from a cross-site
        provider (real Entra) carries no SameSite=Lax cookie, so the session cookie is left out."""
        parts = urlsplit(result.url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        if result.method.upper() == "GET":
            return self.client.get(target)
        if not cross_site:
            return self.client.post(target, data=result.data)
        return self.without_session_cookie(lambda: self.client.post(target, data=result.data))

    def sign_in(self, next_path: str | None = None, username: str = ADELE):
        """The whole sign-in; returns the app's answer to the callback."""
        response = self.start(next_path)
        assert response.status_code == 302, response.get_data(as_text=True)
        return self.deliver(self.authorize(response.headers["Location"], username))

    # -- cookies ----------------------------------------------------------------------------

    def cookie(self, name: str = SESSION_COOKIE):
        return self.client.get_cookie(name)

    def without_session_cookie(self, send: Callable[[], Any]):
        saved = self.cookie()
        if saved is not None:
            self.client.delete_cookie(saved.key, domain=saved.domain, path=saved.path)
        response = send()
        if saved is not None and self.cookie() is None and not _deletes_cookie(response):
            self.client.set_cookie(saved.key, saved.value, domain=saved.domain, path=saved.path)
        return response

    def set_cookies(self, response) -> list[str]:
        return response.headers.getlist("Set-Cookie")


def _deletes_cookie(response) -> bool:
    return any(c.startswith(f"{SESSION_COOKIE}=;") for c in response.headers.getlist("Set-Cookie"))


# -- looking into the app's server-side storage (tests only) ----------------------------------

def entra(app):
    """flask_entra's per-app state (internals, for tests only)."""
    return app.extensions["flask_entra"]


def stored_sessions(app) -> dict[str, dict[str, Any]]:
    """Every stored session, by file name, read the way cachelib's FileSystemCache writes them."""
    directory = Path(app.extensions["webapp"].settings.session_file_dir)
    sessions = {}
    for path in sorted(directory.iterdir()) if directory.exists() else ():
        if path.is_file():
            with path.open("rb") as f:
                struct.unpack("I", f.read(4))
                value = pickle.load(f)
            if isinstance(value, dict):  # not cachelib's own item counter
                sessions[path.name] = value
    return sessions


def session_of(app, browser: Browser) -> dict[str, Any] | None:
    cookie = browser.cookie()
    if cookie is None:
        return None
    interface = app.session_interface
    return interface.cache.get(interface.key_prefix + cookie.value)


def entry_of(app, browser: Browser) -> dict[str, Any] | None:
    """flask_entra's entry in the browser's stored session (claims, account, csrf, times)."""
    session = session_of(app, browser)
    return None if session is None else session.get("flask_entra")


def change_stored_session(app, browser: Browser, **changes: Any) -> None:
    """Change flask_entra's entry in the browser's stored session, as another process would."""
    interface = app.session_interface
    session_id = browser.cookie().value
    key = interface.key_prefix + session_id
    data = interface.cache.get(key)
    entry = dict(data["flask_entra"])
    for name, value in changes.items():  # None: remove the key
        if value is None:
            entry.pop(name, None)
        else:
            entry[name] = value
    data["flask_entra"] = entry
    interface.cache.set(key, data, timeout=3600)


def token_cache_of(app, browser: Browser) -> dict[str, Any] | None:
    """The browser's session's MSAL token cache, decrypted (None if there is none)."""
    cache = entra(app).tokens.load_cache(browser.cookie().value)
    return None if cache is None else json.loads(cache.serialize())


def state_of(authorize_url: str) -> str:
    return parse_qs(urlsplit(authorize_url).query)["state"][0]


class CallRecorder:
    """Counts the app's outbound calls by URL (a requests response hook on its one session)."""

    def __init__(self, app) -> None:
        self.calls: list[tuple[str, str, int]] = []
        entra(app).http.hooks["response"].append(self._record)

    def _record(self, response, *args, **kwargs):
        self.calls.append((response.request.method, response.request.url.split("?")[0],
                           response.status_code))

    def count(self, method: str, path_end: str) -> int:
        return sum(1 for m, url, _ in self.calls if m == method and url.endswith(path_end))


def revoke_refresh_token(app, browser: Browser, emu) -> None:
    """Make the app's refresh token unusable the way a stolen copy does: someone else redeems it
    first, so the provider rotates it, and the app's later use revokes the whole family."""
    cache = token_cache_of(app, browser)
    refresh_token = next(iter(cache["RefreshToken"].values()))["secret"]
    registration = registered_app(emu)
    response = requests.post(
        f"{emu.authority}/oauth2/v2.0/token", verify=str(emu.ca_bundle), timeout=10,
        data={"grant_type": "refresh_token", "refresh_token": refresh_token,
              "client_id": registration.app_id,
              "client_secret": registration.password_credentials[0].secret_text,
              "scope": "User.Read offline_access openid profile"})
    assert response.status_code == 200, response.text


# MSAL renews an access token with under 5 minutes left, so 60 s tokens are refreshed on every
# use: each page that needs one makes a refresh, without sleeping in the test.


# -- pending sign-ins (sealed cookies) and flask_entra's own records (helper B) ---------------

def pending_cookie_name(state: str, *, https: bool = False) -> str:
    """The name of the cookie a sign-in with `state` is pending in (`__Host-` under https)."""
    import hashlib

    prefix = ("__Host-" if https else "") + PENDING_COOKIE_PREFIX
    return prefix + hashlib.sha256(state.encode()).hexdigest()[:16]


def pending_cookies(client) -> dict[str, str]:
    """The pending sign-in cookies a test client holds (any prefix), by name."""
    return {key: cookie.value for (_, _, key), cookie in client._cookies.items()
            if key.startswith((PENDING_COOKIE_PREFIX, "__Host-" + PENDING_COOKIE_PREFIX))}


def stored_records(app) -> dict[str, bytes]:
    """flask_entra's own records beside the sessions (sealed token caches, ended-session marks)
    in its FileStore, by file name, as stored bytes."""
    folder = Path(entra(app).store.directory) / "records"
    if not folder.exists():
        return {}
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}
