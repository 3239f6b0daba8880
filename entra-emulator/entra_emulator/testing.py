"""Testing apps against the emulator: a typed handle on a running emulator (`EntraEmulator`) and a
scripted browser for its pages (`browser_sign_in`, and `sign_in` for a whole sign-in through an
app). The pytest plugin (pytest_plugin.py) hands these out as fixtures; they work without pytest
too.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
from dataclasses import dataclass, field
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urljoin, urlsplit

import requests

from entra_emulator.directory import DEFAULT_DIRECTORY, parse_directory
from entra_emulator.server import EmulatorServer
from entra_emulator.serving import env_settings

FaultTarget = Literal["graph", "token"]
FaultKind = Literal["429", "503", "claims_challenge", "delay"]
Defect = Literal[
    "bad_signature", "alg_none", "hs256_public_key", "wrong_iss", "wrong_aud", "wrong_nonce",
    "missing_sub", "missing_iat", "expired", "iat_future", "no_kid", "unknown_kid",
    "rotated_key", "aud_extra", "azp_wrong", "wrong_sub", "authz_iss_wrong", "authz_iss_missing"]
META_REFRESH = re.compile(r"""<meta[^>]+http-equiv=["']?refresh["']?[^>]*content=["']?\d+;\s*"""
                          r"""url=([^"'>]+)""", re.I)
SIGN_IN_LINK = re.compile(r"""<a[^>]+href=["']([^"']+)["'][^>]*>\s*Sign[ -]?in""", re.I)


# ---------------------------------------------------------------------------------------------
# The emulator, typed
# ---------------------------------------------------------------------------------------------

class Faults:
    """The next Graph or token calls fail as asked (429, 503, a claims challenge, a delay)."""

    def __init__(self, server: EmulatorServer) -> None:
        self._server = server

    def add(self, target: FaultTarget, kind: FaultKind, count: int = 1,
            retry_after: float | None = None, delay_seconds: float | None = None) -> None:
        self._server.faults.add(target, kind, count, retry_after, delay_seconds)

    def clear(self) -> None:
        self._server.faults.clear()


class Defects:
    """The next ID token (or authorization response) issued to a client is flawed as asked."""

    def __init__(self, server: EmulatorServer) -> None:
        self._server = server

    def add(self, client_id: str, defect: Defect, count: int = 1) -> None:
        self._server.defects.add(client_id, defect, count)

    def clear(self) -> None:
        self._server.defects.clear()


class TestClock:
    """The emulator's clock: move it forward to see codes, tokens and sessions expire."""

    __test__ = False  # not a pytest test class

    def __init__(self, server: EmulatorServer) -> None:
        self._server = server

    def now(self) -> float:
        return self._server.clock.now()

    def advance(self, seconds: float) -> None:
        self._server.clock.advance(seconds)

    def reset(self) -> None:
        self._server.clock.reset()


class TrustingSession(requests.Session):
    """A requests.Session that trusts the emulator's CA bundle whatever the environment says:
    requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override a session's own `verify`, so it
    is passed with every request instead."""

    def __init__(self, ca_bundle: str) -> None:
        super().__init__()
        self.verify = ca_bundle

    def request(self, method: str | bytes, url: str | bytes, *args: Any,  # type: ignore[override]
                **kwargs: Any) -> requests.Response:
        kwargs.setdefault("verify", self.verify)
        return super().request(method, url, *args, **kwargs)


class EntraEmulator:
    """A running emulator and what a test needs of it."""

    def __init__(self, server: EmulatorServer, directory: dict[str, Any],
                 source: Path) -> None:
        self.server = server
        self._initial_directory = copy.deepcopy(directory)
        self._directory = copy.deepcopy(directory)
        self._source = source
        self._initial_state = server.state.snapshot()   # signing keys and consents
        self._directory_changed = False
        self.faults = Faults(server)
        self.defects = Defects(server)
        self.clock = TestClock(server)
        self.http = TrustingSession(self.ca_bundle)  # the emulator's CA and the public roots

    @classmethod
    def start(cls, directory: dict[str, Any] | str | Path | None, state_dir: Path,
              **options: Any) -> EntraEmulator:
        """Start an emulator on free ports with `directory` (Graph-shaped dict, path, or None
        for the packaged default) and its state (keys, CA) in `state_dir`."""
        document, source = _directory_document(directory)
        server = EmulatorServer(directory=parse_directory(document, source), state_dir=state_dir,
                                https_port=0, http_port=0, **options).start()
        return cls(server, document, source)

    # -- where it is --------------------------------------------------------------------------

    @property
    def authority(self) -> str:
        return self.server.authority

    @property
    def tenant_id(self) -> str:
        return self.server.tenant_id

    @property
    def https_base(self) -> str:
        return self.server.https_base

    @property
    def http_base(self) -> str:
        return self.server.http_base

    @property
    def graph_me_url(self) -> str:
        return self.server.graph_me_url

    @property
    def ca_bundle(self) -> str:
        return self.server.ca_bundle

    @property
    def env(self) -> dict[str, str]:
        """The keys `serve --env-file` writes: AUTHORITY, CLIENT_ID, CLIENT_SECRET, REDIRECT_URI,
        SCOPE, ENDPOINT, CA_BUNDLE, REQUESTS_CA_BUNDLE."""
        return env_settings(self.server)

    def msal_kwargs(self, **extra: Any) -> dict[str, Any]:
        """What MSAL needs besides the client: `msal.ConfidentialClientApplication(client_id,
        client_credential=..., **emu.msal_kwargs())`: the authority, no instance discovery
        (it would ask login.microsoftonline.com about this host), and an HTTP client trusting
        the emulator whatever REQUESTS_CA_BUNDLE says (MSAL's own `verify=` does not win)."""
        return {"authority": self.authority, "instance_discovery": False,
                "http_client": TrustingSession(self.ca_bundle), **extra}

    # -- changing it from a test ---------------------------------------------------------------

    def add_user(self, user: dict[str, Any]) -> None:
        """A user in Graph's shape (id, displayName, userPrincipalName, passwordProfile...)."""
        self._change("users", user)

    def add_application(self, application: dict[str, Any]) -> None:
        """An application in Graph's shape (appId, web.redirectUris, passwordCredentials...)."""
        self._change("applications", application)

    def grant_consent(self, user_id: str, app_id: str, scopes: list[str]) -> None:
        """As if the user had accepted the consent page for these permissions."""
        self.server.state.consents.grant(user_id, app_id, set(scopes))

    def _change(self, kind: str, entry: dict[str, Any]) -> None:
        document = copy.deepcopy(self._directory)
        document.setdefault(kind, []).append(copy.deepcopy(entry))
        # Checked as at start: a malformed entry raises DirectoryError naming the field.
        # Every worker serves it from its next request on (state.py, EmulatorState.sync).
        self.server.state.change_directory(document, self._source)
        self._directory = document
        self._directory_changed = True

    # -- isolation -----------------------------------------------------------------------------

    def reset(self) -> None:
        """Back to how it started, without a restart: consents, SSO sessions, codes, tokens,
        faults, defects, the clock, the directory and the signing keys."""
        if self._directory_changed:
            self._directory = copy.deepcopy(self._initial_directory)
            self._directory_changed = False
        self.server.state.reset_to(self._initial_state)

    def stop(self) -> None:
        self.http.close()
        self.server.stop()

    # -- signing in ----------------------------------------------------------------------------

    def sign_in(self, client: Any, start_url: str, user: str, password: str, *,
                consent: str = "accept", idp: requests.Session | None = None) -> Any:
        """`sign_in()` through this emulator (see the module function)."""
        return sign_in(client, start_url, user, password, consent=consent,
                       idp=idp or self._idp(), emulator_origins=(self.http_base,
                                                                 self.https_base))

    def _idp(self) -> requests.Session:
        return TrustingSession(self.ca_bundle)


def copy_tls(from_state: Path, to_state: Path) -> None:
    """Give a new state folder another emulator's CA and certificate, so one bundle trusts
    both."""
    if not (to_state / "tls").exists():
        shutil.copytree(from_state / "tls", to_state / "tls")


def _directory_document(directory: dict[str, Any] | str | Path | None
                        ) -> tuple[dict[str, Any], Path]:
    if isinstance(directory, dict):
        # Photos of the packaged directory stay findable from a dict built on it.
        return copy.deepcopy(directory), DEFAULT_DIRECTORY
    path = Path(directory) if directory is not None else DEFAULT_DIRECTORY
    return json.loads(path.read_text(encoding="utf-8")), path


# ---------------------------------------------------------------------------------------------
# A scripted browser
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
    """Drive the emulator's pages from its authorize URL as a browser would: fill the sign-in
    form, answer the consent page (`consent="accept"` or `"cancel"`), and return the request
    the browser then makes to the app. Pass the same `session` to keep the emulator's SSO
    cookie between sign-ins."""
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


def sign_in(client: Any, start_url: str, user: str, password: str, *, consent: str = "accept",
            idp: requests.Session | None = None, emulator_origins: tuple[str, ...] = (),
            max_steps: int = 12) -> Any:
    """A whole sign-in through an app, the way a browser makes it: from `start_url` at the app
    (a protected page, or its login route), follow redirects, meta refreshes and a login page's
    "Sign in" link to the emulator, fill its sign-in and consent forms, deliver its answer to
    the app (a form_post or a redirect), and follow the app's redirects; returns the app's final
    response. `client` is a requests.Session for an app served over HTTP, or a Flask test client
    for an app in-process (then the emulator's pages go over HTTP through `idp`)."""
    idp = idp or requests.Session()
    in_process = not isinstance(client, requests.Session)

    def at_emulator(url: str) -> bool:
        return url.startswith(emulator_origins) if emulator_origins else not url.startswith("/")

    def app_request(method: str, url: str, data: dict[str, str] | None = None) -> Any:
        if not in_process:
            return client.request(method, url, data=data, allow_redirects=False)
        parts = urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        return client.open(target, method=method, data=data,
                           base_url=f"{parts.scheme}://{parts.netloc}" if parts.netloc else None)

    url, response = start_url, app_request("GET", start_url)
    for _ in range(max_steps):
        location = _next_location(response, url)
        if location is None:
            return response
        if at_emulator(location):
            result = browser_sign_in(location, user, password, session=idp, consent=consent)
            url = result.url
            response = app_request(result.method, result.url,
                                   result.data if result.method == "POST" else None)
            continue
        url, response = urljoin(url, location), app_request("GET", urljoin(url, location))
    raise SignInError(f"no final page after {max_steps} steps")


def _next_location(response: Any, url: str) -> str | None:
    """Where a browser goes next from an app's response: its redirect, or a login page's meta
    refresh or sign-in link; None for a final page."""
    status = getattr(response, "status_code", 200)
    headers = response.headers
    if 300 <= status < 400 and headers.get("Location"):
        return urljoin(url, headers["Location"])
    content_type = headers.get("Content-Type", "")
    if status != 200 or "html" not in content_type:
        return None
    text = response.text if hasattr(response, "text") and isinstance(response.text, str) \
        else response.get_data(as_text=True)
    match = META_REFRESH.search(text) or SIGN_IN_LINK.search(text)
    if match and "/authorize" in unescape(match.group(1)):
        return urljoin(url, unescape(match.group(1)).strip())
    return None
