"""Shared fixtures: a real emulator over real TLS, and a scripted browser for its sign-in pages.

- `emulator` (session): EmulatorServer on free ports, state in a temporary folder, the packaged
  default directory. Faults, defects and the emulator clock are reset after each test using it.
- `default_app`: the directory's web application (client_id, client_secret, redirect_uri).
- `browser_sign_in(authorize_url, username, password, session=None, consent="accept")`: drives
  the sign-in (and consent) pages over HTTP like a browser and returns the request the browser
  would make to the app (also importable: `from conftest import browser_sign_in`).
- `start_emulator(directory=..., state_dir=...)`: another emulator for a test's own directory.
- `iss_emulator` (module): an emulator that sends RFC 9207's `iss`.
- `short_lived`: an emulator whose access tokens live 60 s, which MSAL renews on every use.
- `redis_server`: a real redis-server on a free loopback port, in the test's temporary folder, no
  persistence; stopped after the test. Fails (never skips) when the binary is missing.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from entra_emulator.directory import DEFAULT_DIRECTORY
from entra_emulator.server import EmulatorServer

DEFAULT_PASSWORD = "Passw0rd!"
ADELE = "AdeleV@contoso.onmicrosoft.com"
MEGAN = "MeganB@contoso.onmicrosoft.com"


# ---------------------------------------------------------------------------------------------
# Emulators
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorServer]:
    """The emulator, trusted the way an app trusts it: REQUESTS_CA_BUNDLE names its CA bundle
    for the whole session (requests lets that variable override a Session's own `verify`)."""
    state_dir = tmp_path_factory.mktemp("emulator-state")
    with EmulatorServer(directory=None, state_dir=state_dir, host="localhost", https_port=0,
                        http_port=0) as emu, pytest.MonkeyPatch.context() as patch:
        patch.setenv("REQUESTS_CA_BUNDLE", emu.ca_bundle)
        patch.setenv("CURL_CA_BUNDLE", emu.ca_bundle)
        yield emu


@pytest.fixture(autouse=True)
def _reset_emulator_after_test(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "emulator" in request.fixturenames:
        emu = request.getfixturevalue("emulator")
        emu.faults.clear()
        emu.defects.clear()
        emu.clock.reset()


@pytest.fixture
def start_emulator(tmp_path: Path, emulator: EmulatorServer) -> Iterator[Any]:
    """Factory: start_emulator(directory=dict|path|None, state_dir=None) -> started emulator,
    stopped after the test. A new state folder gets the session emulator's CA and server
    certificate, so the session's REQUESTS_CA_BUNDLE trusts it too."""
    started: list[EmulatorServer] = []

    def start(directory: dict[str, Any] | str | Path | None = None,
              state_dir: str | Path | None = None) -> EmulatorServer:
        if isinstance(directory, dict):
            path = tmp_path / f"directory-{len(started)}.json"
            path.write_text(json.dumps(directory))
            directory = path
        if state_dir is None:
            state_dir = tmp_path / f"state-{len(started)}"
            shutil.copytree(emulator.state_dir / "tls", Path(state_dir) / "tls")
        emu = EmulatorServer(directory=directory, state_dir=state_dir, https_port=0,
                             http_port=0).start()
        started.append(emu)
        return emu

    yield start
    for emu in started:
        emu.stop()


def make_certificate() -> tuple[str, str, x509.Certificate]:
    """(private key PEM, certificate PEM, certificate): a client certificate credential."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cert-app")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return key_pem, cert.public_bytes(serialization.Encoding.PEM).decode(), cert


def default_directory_document() -> dict[str, Any]:
    """The packaged default directory as a dict, for tests that add to it."""
    document = json.loads(DEFAULT_DIRECTORY.read_text())
    # Photos are relative to the directory file; make them absolute for copies elsewhere.
    for user in document["users"]:
        if "photo" in user:
            user["photo"] = str(DEFAULT_DIRECTORY.parent / user["photo"])
    return document


# MSAL treats an access token with under 5 minutes left as expired: with 60 s tokens every call
# that needs one refreshes, without sleeping in the test.
SHORT_ACCESS_TOKEN = {"accessToken": 60, "refreshToken": 3600}


@pytest.fixture
def short_lived(start_emulator):
    directory = default_directory_document()
    directory["applications"][0]["tokenLifetimes"] = SHORT_ACCESS_TOKEN
    return start_emulator(directory=directory)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Any]:
    from tests.scale.scale_support import RedisServer

    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def iss_emulator(emulator, tmp_path_factory) -> Iterator[EmulatorServer]:
    """An emulator that sends RFC 9207's `iss` in every authorization response and advertises
    it; its certificates are the session emulator's, which the tests already trust. Its defects
    are cleared after each test that uses it."""
    state_dir = tmp_path_factory.mktemp("iss-emulator")
    shutil.copytree(emulator.state_dir / "tls", state_dir / "tls")
    with EmulatorServer(state_dir=state_dir, authorization_response_iss=True) as emu:
        yield emu


@pytest.fixture(autouse=True)
def _clear_iss_emulator_defects(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "iss_emulator" in request.fixturenames:
        request.getfixturevalue("iss_emulator").defects.clear()


def issuer_of(emu: EmulatorServer) -> str:
    return f"{emu.authority}/v2.0"


def params_of(location: str) -> dict[str, str]:
    """The parameters of an authorization response URL (query or fragment)."""
    parts = urlsplit(location)
    return dict(parse_qsl(parts.fragment or parts.query))


@dataclass(frozen=True)
class WebApp:
    client_id: str
    client_secret: str
    redirect_uri: str
    post_logout_redirect_uri: str


@pytest.fixture(scope="session")
def default_app(emulator: EmulatorServer) -> WebApp:
    app = emulator.directory.applications[0]
    return WebApp(client_id=app.app_id, client_secret=app.password_credentials[0].secret_text,
                  redirect_uri=app.redirect_uris[0],
                  post_logout_redirect_uri=app.redirect_uris[1])


# ---------------------------------------------------------------------------------------------
# A scripted browser for the sign-in pages
# ---------------------------------------------------------------------------------------------

@dataclass
class SignInResult:
    """The request a browser would make to the app after the emulator's pages."""

    url: str
    method: str                      # "GET" (query/fragment redirect) or "POST" (form_post)
    data: dict[str, str] = field(default_factory=dict)

    @property
    def params(self) -> dict[str, str]:
        """The authorization response parameters, wherever the response mode put them."""
        if self.method == "POST":
            return dict(self.data)
        parts = urlsplit(self.url)
        return dict(parse_qsl(parts.fragment or parts.query))


class SignInError(AssertionError):
    """The emulator showed an error (or the sign-in form again, with its message)."""


@dataclass
class _Form:
    action: str = ""
    method: str = "get"
    inputs: dict[str, str] = field(default_factory=dict)
    buttons: list[tuple[str, str]] = field(default_factory=list)


class _PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[_Form] = []
        self.errors: list[str] = []
        self._in_error = 0
        self._in_form = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if tag == "form":
            self.forms.append(_Form(action=attributes.get("action", ""),
                                    method=attributes.get("method", "get").lower()))
            self._in_form = True
        elif tag == "input" and self._in_form and "name" in attributes:
            self.forms[-1].inputs[attributes["name"]] = attributes.get("value", "")
        elif tag == "button" and self._in_form and "name" in attributes:
            self.forms[-1].buttons.append((attributes["name"], attributes.get("value", "")))
        if "error" in attributes.get("class", "").split():
            self._in_error += 1
            self.errors.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._in_form = False
        if self._in_error and tag in ("p", "div", "span"):
            self._in_error -= 1

    def handle_data(self, data: str) -> None:
        if self._in_error:
            self.errors[-1] += data


def browser_sign_in(authorize_url: str, username: str, password: str,
                    session: requests.Session | None = None, consent: str = "accept",
                    verify: str | bool | None = None, max_steps: int = 6) -> SignInResult:
    """Drive the emulator's pages as a browser would: fill the sign-in form, answer the
    consent page (`consent="accept"` or `"cancel"`), and return the final request to the app.
    Pass the same `session` to keep the emulator's SSO cookie between sign-ins."""
    browser = session or requests.Session()
    if verify is not None:
        browser.verify = verify
    response = browser.get(authorize_url, allow_redirects=False)
    for _ in range(max_steps):
        if response.is_redirect:
            return SignInResult(url=response.headers["Location"], method="GET")
        page = _PageParser()
        page.feed(response.text)
        if response.status_code != 200 or not page.forms:
            raise SignInError(f"emulator answered {response.status_code}: "
                              f"{' '.join(page.errors) or response.text[:500]}")
        form = page.forms[0]
        target = urljoin(response.url, form.action)
        if "username" in form.inputs and "password" in form.inputs:
            if page.errors and form.inputs.get("username") == username:
                raise SignInError(" ".join(page.errors).strip())
            data = {**form.inputs, "username": username, "password": password}
        elif ("decision", "accept") in form.buttons:
            data = {**form.inputs, "decision": consent}
        else:   # the form_post page: the browser's script posts it to the app
            return SignInResult(url=target, method="POST", data=dict(form.inputs))
        response = browser.post(target, data=data, allow_redirects=False)
    raise SignInError(f"no answer for the app after {max_steps} pages")


@pytest.fixture(name="browser_sign_in")
def browser_sign_in_fixture() -> Any:
    return browser_sign_in


# ---------------------------------------------------------------------------------------------
# Protocol helpers
# ---------------------------------------------------------------------------------------------

def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge)."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def authorize_url(emu: EmulatorServer, client_id: str, *, tenant: str | None = None,
                  **params: str) -> str:
    query = {"client_id": client_id, "response_type": "code",
             "scope": "User.Read offline_access openid profile", **params}
    return f"{emu.http_base}/{tenant or emu.tenant_id}/oauth2/v2.0/authorize?{urlencode(query)}"


def token_url(emu: EmulatorServer, tenant: str | None = None) -> str:
    return f"{emu.https_base}/{tenant or emu.tenant_id}/oauth2/v2.0/token"


def decode_jwt(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(header, claims) without verification, for asserting on token contents."""
    def part(index: int) -> dict[str, Any]:
        segment = token.split(".")[index]
        return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    return part(0), part(1)


@dataclass
class CodeGrant:
    """A sign-in that ended with a code, and what redeeming it needs."""

    result: SignInResult
    verifier: str
    redirect_uri: str
    nonce: str

    @property
    def code(self) -> str:
        return self.result.params["code"]


def sign_in_for_code(emu: EmulatorServer, app: WebApp, username: str = ADELE, *,
                     password: str = DEFAULT_PASSWORD, session: requests.Session | None = None,
                     **params: str) -> CodeGrant:
    """Authorize with PKCE S256 and a nonce, sign in through the pages, return the code."""
    verifier, challenge = pkce_pair()
    nonce = secrets.token_hex(16)
    query = {"redirect_uri": app.redirect_uri, "code_challenge": challenge,
             "code_challenge_method": "S256", "nonce": nonce, "state": secrets.token_hex(8),
             "client_info": "1", **params}
    result = browser_sign_in(authorize_url(emu, app.client_id, **query), username, password,
                             session=session)
    assert "code" in result.params, result.params
    return CodeGrant(result=result, verifier=verifier, redirect_uri=query["redirect_uri"],
                     nonce=nonce)


def redeem_code(emu: EmulatorServer, app: WebApp, grant: CodeGrant,
                **overrides: str | None) -> requests.Response:
    """POST the code to the token endpoint as MSAL does; overrides replace (None removes)."""
    data: dict[str, str | None] = {
        "client_id": app.client_id, "grant_type": "authorization_code", "client_info": "1",
        "client_secret": app.client_secret, "code_verifier": grant.verifier,
        "code": grant.code, "redirect_uri": grant.redirect_uri,
        "scope": "User.Read offline_access openid profile", **overrides}
    return requests.post(token_url(emu), data={k: v for k, v in data.items() if v is not None},
                         verify=emu.ca_bundle)


def refresh(emu: EmulatorServer, app: WebApp, refresh_token: str,
            **overrides: str | None) -> requests.Response:
    data: dict[str, str | None] = {
        "client_id": app.client_id, "grant_type": "refresh_token", "client_info": "1",
        "client_secret": app.client_secret, "refresh_token": refresh_token,
        "scope": "User.Read offline_access openid profile", **overrides}
    return requests.post(token_url(emu), data={k: v for k, v in data.items() if v is not None},
                         verify=emu.ca_bundle)


def assert_entra_error(response: requests.Response, status: int, error: str,
                       code: int) -> dict[str, Any]:
    """Entra's error body: {error, error_description "AADSTSnnnn: …", error_codes, timestamp,
    trace_id, correlation_id} with the expected status."""
    body = response.json()
    assert response.status_code == status, body
    assert body["error"] == error, body
    assert body["error_codes"] == [code], body
    assert body["error_description"].startswith(f"AADSTS{code}: "), body
    assert f"Trace ID: {body['trace_id']}" in body["error_description"]
    assert {"timestamp", "trace_id", "correlation_id"} <= set(body)
    return body


def get_me(emu: EmulatorServer, token: str) -> requests.Response:
    """GET the emulator's Graph /v1.0/me with a bearer token."""
    return requests.get(emu.graph_me_url, headers={"Authorization": f"Bearer {token}"},
                        verify=emu.ca_bundle, timeout=10)
