"""Every MSAL Python method that can work offline, driven unmodified against the emulator (issue
15): the public client python-console of the default directory for the interactive, device
code, password and auth code flows, the web app and the Todo API for the confidential ones. A
scripted browser (entra_emulator.testing.browser_sign_in, device_testing.device_sign_in) stands
in for the user."""

from __future__ import annotations

import contextlib
import re
import shutil
import threading
import time
import webbrowser
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msal
import pytest
import requests

from entra_emulator.device_testing import device_sign_in
from entra_emulator.server import EmulatorServer
from tests.support import ADELE, DEFAULT_PASSWORD, WebApp, browser_sign_in, decode_jwt, get_me

CONSOLE = "9c1e7a3b-5d2f-4e8a-b6c4-1f0d3e5a7b9c"   # python-console: a public client
TODO_API = "a7b3c1d2-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
TODO_API_SECRET = "todo-api-dev-secret"
SCOPES = ["User.Read"]
README = Path(__file__).resolve().parents[2] / "README.md"


def public_app(emu: Any) -> msal.PublicClientApplication:
    # REQUESTS_CA_BUNDLE (the session's) trusts the emulator: MSAL needs nothing else.
    return msal.PublicClientApplication(CONSOLE, authority=emu.authority,
                                        instance_discovery=False,
                                        token_cache=msal.SerializableTokenCache())


def confidential_app(emu: Any, client_id: str, secret: str) -> msal.ConfidentialClientApplication:
    return msal.ConfidentialClientApplication(client_id, client_credential=secret,
                                              authority=emu.authority, instance_discovery=False,
                                              token_cache=msal.TokenCache())


def assert_tokens_for_adele(emu: Any, result: dict[str, Any], client_id: str = CONSOLE) -> None:
    assert "error" not in result, result
    assert result["id_token_claims"]["preferred_username"] == ADELE
    assert result["id_token_claims"]["aud"] == client_id
    assert result["token_source"] == "identity_provider"
    assert get_me(emu, result["access_token"]).json()["userPrincipalName"] == ADELE


def later(seconds: float, action: Any, *args: Any, **kwargs: Any) -> threading.Thread:
    """Run `action` in a thread after `seconds`; its exception is re-raised by `finish`."""
    def run() -> None:
        time.sleep(seconds)
        try:
            action(*args, **kwargs)
        except BaseException as problem:   # noqa: BLE001 - reported by finish()
            thread.problem = problem   # type: ignore[attr-defined]

    thread = threading.Thread(target=run, daemon=True)
    thread.problem = None   # type: ignore[attr-defined]
    thread.start()
    return thread


def finish(thread: threading.Thread) -> None:
    thread.join(timeout=30)
    if thread.problem is not None:   # type: ignore[attr-defined]
        raise thread.problem   # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------------
# Public client flows
# ---------------------------------------------------------------------------------------------

def test_acquire_token_interactive(emulator, monkeypatch):
    """MSAL listens on a loopback port and opens the system browser at the authorize URL; the
    "browser" here signs in on the emulator's pages, then posts the form_post page MSAL asked
    for to MSAL's listener, as a browser would."""
    opened: list[str] = []
    threads: list[threading.Thread] = []

    def browser(url: str, *args: Any, **kwargs: Any) -> bool:
        opened.append(url)

        def user() -> None:
            result = browser_sign_in(url, ADELE, DEFAULT_PASSWORD)
            # MSAL asks for response_mode=form_post: the page posts the code to its listener.
            assert result.method == "POST", result
            requests.post(result.url, data=result.data, timeout=10)
        threads.append(later(0, user))
        return True

    monkeypatch.setattr(webbrowser, "open", browser)
    monkeypatch.setattr(msal.application, "_preferred_browser", lambda: None)
    app = public_app(emulator)
    result = app.acquire_token_interactive(SCOPES, timeout=30)
    finish(threads[0])
    assert_tokens_for_adele(emulator, result)
    redirect_uri = re.search(r"redirect_uri=([^&]+)", opened[0]).group(1)
    assert re.fullmatch(r"http%3A%2F%2Flocalhost%3A\d+", redirect_uri)   # any port
    assert decode_jwt(result["access_token"])[1]["appidacr"] == "0"      # no secret


def test_initiate_device_flow_and_acquire_token_by_device_flow(emulator):
    """The user signs in on the device-login page while MSAL polls (authorization_pending
    first, then the tokens after the 5-second interval)."""
    app = public_app(emulator)
    flow = app.initiate_device_flow(scopes=SCOPES)
    assert flow["verification_uri"] == f"{emulator.http_base}/devicelogin"
    assert flow["user_code"] in flow["message"]

    def user() -> None:
        try:
            device_sign_in(flow["verification_uri"], flow["user_code"], ADELE, DEFAULT_PASSWORD)
        except BaseException:
            flow["expires_at"] = 0   # MSAL's documented way to stop polling
            raise

    signing_in = later(1, user)
    result = app.acquire_token_by_device_flow(flow)
    finish(signing_in)
    assert_tokens_for_adele(emulator, result)
    assert [a["username"] for a in app.get_accounts()] == [ADELE]


def test_a_declined_device_flow_stops_polling(emulator):
    app = public_app(emulator)
    flow = app.initiate_device_flow(scopes=SCOPES)
    device_sign_in(flow["verification_uri"], flow["user_code"], ADELE, DEFAULT_PASSWORD,
                   confirm="cancel")
    result = app.acquire_token_by_device_flow(flow)
    assert result["error"] == "authorization_declined", result


def test_acquire_token_by_username_password(emulator_on_443):
    """MSAL asks https://<authority host>/common/userrealm/<user> (port 443) first: with the
    emulator on 443 that is the emulator, which answers Managed, and the password grant
    follows."""
    app = public_app(emulator_on_443)
    with pytest.warns(DeprecationWarning):   # MSAL deprecates it for public clients
        result = app.acquire_token_by_username_password(ADELE, DEFAULT_PASSWORD, SCOPES)
    assert_tokens_for_adele(emulator_on_443, result)
    with pytest.warns(DeprecationWarning):
        wrong = app.acquire_token_by_username_password(ADELE, "wrong", SCOPES)
    assert wrong["error"] == "invalid_grant" and wrong["error_codes"] == [50126], wrong


def test_the_password_grant_of_a_confidential_client(emulator_on_443, default_app: WebApp):
    app = confidential_app(emulator_on_443, default_app.client_id, default_app.client_secret)
    # Never consented to by Adele: the password grant cannot ask her (AADSTS65001).
    result = app.acquire_token_by_username_password(ADELE, DEFAULT_PASSWORD, SCOPES)
    assert result["error"] == "invalid_grant" and result["error_codes"] == [65001], result
    browser_sign_in(app.get_authorization_request_url(
        SCOPES, redirect_uri=default_app.redirect_uri), ADELE, DEFAULT_PASSWORD)
    # A new app: MSAL would answer the same request from its 60-second cache of HTTP 400s.
    app = confidential_app(emulator_on_443, default_app.client_id, default_app.client_secret)
    result = app.acquire_token_by_username_password(ADELE, DEFAULT_PASSWORD, SCOPES)
    assert_tokens_for_adele(emulator_on_443, result, default_app.client_id)


def test_msal_looks_the_user_realm_up_on_port_443_whatever_the_authority_port(emulator):
    """Why the password grant needs the emulator on 443 (README): MSAL builds the lookup's URL
    from the authority's host name alone, with `oidc_authority` as with `authority`."""
    for option in ("authority", "oidc_authority"):
        recording = Recording()
        authority = emulator.authority if option == "authority" else f"{emulator.authority}/v2.0"
        app = msal.PublicClientApplication(CONSOLE, **{option: authority},
                                           instance_discovery=False, http_client=recording)
        # Nothing, or not an emulator, may listen on 443 here: whatever happens next is moot.
        with pytest.warns(DeprecationWarning), contextlib.suppress(requests.RequestException):
            app.acquire_token_by_username_password(ADELE, DEFAULT_PASSWORD, SCOPES)
        lookups = [url for url in recording.asked if "/userrealm/" in url]
        assert lookups == [f"https://localhost/common/userrealm/{ADELE}?api-version=1.0"], (
            option, recording.asked)


class Recording(requests.Session):
    """MSAL's HTTP client, recording the URLs it asks."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[str] = []

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        self.asked.append(url)
        return super().request(method, url, *args, **kwargs)


def test_initiate_auth_code_flow_and_acquire_token_by_auth_code_flow(emulator):
    """A public client's auth code flow: PKCE, no secret, a loopback redirect URI on a port the
    app chose (registered without one)."""
    app = public_app(emulator)
    flow = app.initiate_auth_code_flow(SCOPES, redirect_uri="http://localhost:61234")
    response = browser_sign_in(flow["auth_uri"], ADELE, DEFAULT_PASSWORD)
    assert response.url.startswith("http://localhost:61234?code=")
    result = app.acquire_token_by_auth_code_flow(flow, response.params)
    assert_tokens_for_adele(emulator, result)


# ---------------------------------------------------------------------------------------------
# The cache and refresh tokens
# ---------------------------------------------------------------------------------------------

def signed_in_public_app(emu: Any) -> tuple[msal.PublicClientApplication, dict[str, Any]]:
    app = public_app(emu)
    flow = app.initiate_device_flow(scopes=SCOPES)
    device_sign_in(flow["verification_uri"], flow["user_code"], ADELE, DEFAULT_PASSWORD)
    result = app.acquire_token_by_device_flow(flow)   # signed in already: the first poll
    assert "access_token" in result, result
    return app, result


def test_acquire_token_silent_and_silent_with_error(emulator):
    app, first = signed_in_public_app(emulator)
    [account] = app.get_accounts(username=ADELE)
    cached = app.acquire_token_silent(SCOPES, account=account)
    assert cached["token_source"] == "cache"
    assert cached["access_token"] == first["access_token"]
    refreshed = app.acquire_token_silent_with_error(SCOPES, account=account, force_refresh=True)
    assert refreshed["token_source"] == "identity_provider", refreshed
    assert refreshed["access_token"] != first["access_token"]
    # The refresh token has outlived its lifetime (90 days): silent fails, with Entra's error.
    emulator.clock.advance(91 * 24 * 3600)
    failed = app.acquire_token_silent_with_error(SCOPES, account=account, force_refresh=True)
    assert failed["error"] == "invalid_grant" and failed["error_codes"] == [700082], failed
    assert app.acquire_token_silent(SCOPES, account=account, force_refresh=True) is None


def test_acquire_token_by_refresh_token(emulator):
    _, first = signed_in_public_app(emulator)
    # Another app (an RT migrated from ADAL, say) starts from the refresh token alone.
    app = public_app(emulator)
    result = app.acquire_token_by_refresh_token(first["refresh_token"], SCOPES)
    assert_tokens_for_adele(emulator, result)
    assert [a["username"] for a in app.get_accounts()] == [ADELE]


# ---------------------------------------------------------------------------------------------
# Confidential client flows
# ---------------------------------------------------------------------------------------------

def test_acquire_token_for_client(emulator, default_app: WebApp):
    app = confidential_app(emulator, default_app.client_id, default_app.client_secret)
    result = app.acquire_token_for_client(["https://graph.microsoft.com/.default"])
    assert "access_token" in result, result
    claims = decode_jwt(result["access_token"])[1]
    assert claims["appid"] == default_app.client_id and "scp" not in claims
    again = app.acquire_token_for_client(["https://graph.microsoft.com/.default"])
    assert again["token_source"] == "cache"


def test_acquire_token_on_behalf_of(emulator, default_app: WebApp):
    """The web app signs Adele in for the Todo API; the Todo API trades her token for Graph."""
    web = confidential_app(emulator, default_app.client_id, default_app.client_secret)
    flow = web.initiate_auth_code_flow([f"api://{TODO_API}/ToDoList.Read"],
                                       redirect_uri=default_app.redirect_uri)
    response = browser_sign_in(flow["auth_uri"], ADELE, DEFAULT_PASSWORD)
    assertion = web.acquire_token_by_auth_code_flow(flow, response.params)["access_token"]
    assert decode_jwt(assertion)[1]["aud"] == TODO_API
    api = confidential_app(emulator, TODO_API, TODO_API_SECRET)
    result = api.acquire_token_on_behalf_of(assertion, SCOPES)
    assert "access_token" in result, result
    claims = decode_jwt(result["access_token"])[1]
    assert (claims["appid"], claims["upn"]) == (TODO_API, ADELE)
    assert get_me(emulator, result["access_token"]).json()["userPrincipalName"] == ADELE


# ---------------------------------------------------------------------------------------------
# The README's device code example, run as a reader would (with the user on the page)
# ---------------------------------------------------------------------------------------------

def readme_snippet(containing: str) -> str:
    [found] = [s for s in re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
               if containing in s]
    return found


def test_the_readmes_device_code_example(emulator, monkeypatch):
    monkeypatch.setenv("AUTHORITY", emulator.authority)
    printed: list[str] = []
    script = later(0, exec, compile(readme_snippet("initiate_device_flow"), "readme_device.py",
                                    "exec"),
                   {"__name__": "readme_device", "print": lambda *a: printed.append(
                       " ".join(map(str, a)))})
    deadline = time.monotonic() + 10
    while not printed and time.monotonic() < deadline:
        time.sleep(0.05)
    match = re.search(r"open the page (\S+) and enter the code (\w+)", printed[0])
    assert match, printed
    device_sign_in(match.group(1), match.group(2), ADELE, DEFAULT_PASSWORD)
    finish(script)
    assert printed[1:] == [ADELE]


# ---------------------------------------------------------------------------------------------
# An emulator whose https port is 443 (for the password grant: see the README)
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def emulator_on_443(emulator: EmulatorServer, tmp_path: Path) -> Iterator[EmulatorServer]:
    state_dir = tmp_path / "state-443"
    shutil.copytree(emulator.state_dir / "tls", state_dir / "tls")   # trusted like the session's
    try:
        server = EmulatorServer(state_dir=state_dir, https_port=443, http_port=0).start()
    except OSError as problem:
        pytest.fail(f"MSAL's password grant needs the emulator on port 443 (see the README), "
                    f"which cannot be bound here: {problem}. Run as root, grant "
                    "CAP_NET_BIND_SERVICE, or lower net.ipv4.ip_unprivileged_port_start.")
    try:
        yield server
    finally:
        server.stop()
