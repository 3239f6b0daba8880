"""Odd values from the provider or Graph never become a 500; a wrong AUTHORITY is shown as a
configuration error, not as an outage; the provider's signing keys are re-read on the metadata's
schedule, so a withdrawn key stops being trusted.

Odd Graph answers come from a small Graph stand-in over HTTPS on loopback (the emulator's own
server certificate, so the app trusts it through CA_BUNDLE): the emulator's directory only holds
well-formed users, as real Graph does.
"""

from __future__ import annotations

import http.server
import json
import logging
import math
import ssl
import threading
import time
import traceback
from collections.abc import Iterator
from typing import Any

import jwt
import pytest

from flask_entra.errors import from_provider_error
from flask_entra.outbound import OutboundSession
from flask_entra.provider import (
    KEYS_LIFETIME_SECONDS,
    METADATA_RETRY_SECONDS,
    Provider,
    ProviderError,
    TokenError,
)
from tests.quickstart.webapp_support import (
    ADELE,
    Browser,
    CallRecorder,
    change_stored_session,
    entra,
    entry_of,
    registered_app,
)
from webapp.graph import GraphResult, graph_error
from webapp.views import _claim_value, _initials

UNKNOWN_TENANT = "0badc0de-0000-4000-8000-000000000000"

# -- a Graph that answers odd JSON ---------------------------------------------------------------


class OddGraph(http.server.BaseHTTPRequestHandler):
    """Answers GET /v1.0/me with `status` and `body` (JSON); the photo with 404."""

    status = 200
    body: Any = None

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        if self.path.endswith("/photo/$value"):
            status, payload = 404, {"error": {"code": "ImageNotFound", "message": "none"}}
        else:
            status, payload = type(self).status, type(self).body
        content = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def odd_graph(emulator) -> Iterator[type[OddGraph]]:
    """The stand-in Graph's handler class (set `status` and `body`); its URL is `.url`."""
    handler = type("Handler", (OddGraph,), {})
    server = http.server.ThreadingHTTPServer(("localhost", 0), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(emulator.tls.server_cert, emulator.tls.server_key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    handler.url = f"https://localhost:{server.server_port}/v1.0/me"
    yield handler
    server.shutdown()
    server.server_close()


@pytest.fixture
def signed_in_with_odd_graph(make_app, emulator, browser_sign_in_fn, odd_graph) -> Browser:
    browser = Browser(make_app(ENDPOINT=odd_graph.url), emulator, browser_sign_in_fn)
    assert browser.sign_in().status_code == 303
    return browser


# -- 1. odd values never make a 500 --------------------------------------------------------------

@pytest.mark.parametrize("display_name", [None, 42, ["Adele", "Vance"], {"first": "Adele"}])
def test_a_profile_whose_display_name_is_not_a_string_is_shown(signed_in_with_odd_graph,
                                                              odd_graph, display_name) -> None:
    odd_graph.status, odd_graph.body = 200, {
        "displayName": display_name, "jobTitle": 7, "mail": None, "businessPhones": [1, None],
        "id": "odd-user"}
    page = signed_in_with_odd_graph.client.get("/graph")
    html = page.get_data(as_text=True)
    assert page.status_code == 200, html
    assert "odd-user" in html
    assert "Something went wrong" not in html
    if display_name == 42:
        assert '<h1 class="profile-name">42</h1>' in html  # the raw value, not a crash


@pytest.mark.parametrize("message", [None, 12345, {"text": "nested"}, ["a", "b"]])
def test_a_graph_error_whose_message_is_not_a_string_is_shown(signed_in_with_odd_graph,
                                                             odd_graph, message) -> None:
    odd_graph.status, odd_graph.body = 403, {"error": {"code": 7, "message": message}}
    page = signed_in_with_odd_graph.client.get("/graph")
    html = page.get_data(as_text=True)
    assert page.status_code == 502, html
    assert "Microsoft Graph answered HTTP 403" in html
    assert "Something went wrong" not in html
    if message == 12345:
        assert '<p class="detail">12345</p>' in html


@pytest.mark.parametrize(("value", "shown"), [
    (10**30, str(10**30)),         # OverflowError
    (1e300, "1e+300"),             # beyond year 9999
    (-(10**20), str(-(10**20))),   # before year 1
    (math.nan, "nan"),             # ValueError
    (math.inf, "inf"),             # OverflowError
    ("1700000000", "1700000000"),  # a string: shown as sent
    (True, "True"),                # a bool is an int to Python, not a time
    (None, "None"),
])
def test_odd_timestamp_claims_are_shown_raw(value, shown) -> None:
    assert _claim_value("exp", value) == shown


def test_a_real_timestamp_claim_is_also_shown_as_a_date() -> None:
    assert _claim_value("iat", 0) == "0 (1970-01-01 00:00:00 UTC)"


def test_the_claims_page_survives_odd_timestamps(browser, app) -> None:
    assert browser.sign_in().status_code == 303
    odd = {"exp": 10**30, "iat": math.nan, "nbf": "tomorrow", "auth_time": -(10**20)}
    change_stored_session(app, browser, claims={**entry_of(app, browser)["claims"], **odd})

    page = browser.client.get("/claims")
    html = page.get_data(as_text=True)
    assert page.status_code == 200, html
    assert str(10**30) in html and "tomorrow" in html and str(-(10**20)) in html


@pytest.mark.parametrize(("name", "initials"), [
    (None, "?"), (42, "?"), (["Adele"], "?"), ("", "?"), ("adele vance", "AV"),
])
def test_initials_of_any_display_name(name, initials) -> None:
    assert _initials(name) == initials


@pytest.mark.parametrize("message", [None, 3, ["x"], {"y": 1}])
def test_graph_error_page_from_any_message(message) -> None:
    body = json.dumps({"error": {"code": ["odd"], "message": message}}).encode()
    error = graph_error(GraphResult(500, {}, body))
    assert error.status == 502
    assert isinstance(error.detail, str) and isinstance(error.code, str)
    assert error.detail == ("" if message is None else json.dumps(message))


# -- 2. a wrong AUTHORITY is a configuration error, not an outage --------------------------------

def test_an_unknown_tenant_is_a_configuration_error_with_the_aadsts90002_hint(make_app,
                                                                             emulator) -> None:
    app = make_app(AUTHORITY=f"{emulator.https_base}/{UNKNOWN_TENANT}")
    response = app.test_client().get("/login")
    html = response.get_data(as_text=True)
    assert response.status_code == 503
    assert "identity provider is unavailable" not in html
    assert "configuration problem in the app&#39;s authority setting" in html
    assert "AADSTS90002" in html
    assert "The tenant in the authority does not exist" in html  # AADSTS_HINTS["90002"]
    assert f"Tenant &#39;{UNKNOWN_TENANT}&#39; not found" in html  # Entra's own message line
    assert "Trace ID" not in html
    assert "Sign in again" not in html


def test_an_issuer_mismatch_is_a_configuration_error(make_app, emulator) -> None:
    app = make_app(AUTHORITY=None, OIDC_AUTHORITY=emulator.authority)
    response = app.test_client().get("/login")
    html = response.get_data(as_text=True)
    assert response.status_code == 503
    assert "identity provider is unavailable" not in html
    assert "does not belong to the configured authority" in html
    assert "configuration problem in the app&#39;s authority setting" in html
    assert "Sign in again" not in html


def test_the_real_tenant_signs_in(make_app, emulator, browser_sign_in_fn) -> None:
    browser = Browser(make_app(AUTHORITY=emulator.authority), emulator, browser_sign_in_fn)
    assert browser.sign_in().status_code == 303
    assert "Adele Vance" in browser.client.get("/").get_data(as_text=True)


def test_an_unreachable_provider_is_still_an_outage_page(make_app, closed_port) -> None:
    app = make_app(AUTHORITY=f"https://localhost:{closed_port}/{UNKNOWN_TENANT}",
                   HTTP_TIMEOUT="2")
    response = app.test_client().get("/login")
    html = response.get_data(as_text=True)
    assert response.status_code == 502
    assert "The identity provider is unavailable" in html
    assert f"Could not reach the identity provider at https://localhost:{closed_port}" in html
    assert "configuration problem" not in html


def test_a_provider_server_error_is_still_an_outage_page() -> None:
    error = from_provider_error(ProviderError(
        "The identity provider answered 503 for its OpenID configuration.", url="https://x/"))
    assert (error.status, error.title) == (503, "The identity provider is unavailable")


# -- 3. signing keys are re-read on the metadata's schedule --------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def id_token(emu, key, client_id: str) -> str:
    now = int(time.time())
    claims = {"iss": f"{emu.authority}/v2.0", "aud": client_id, "sub": "subject-1",
              "tid": emu.tenant_id, "iat": now, "nbf": now, "exp": now + 600}
    return jwt.encode(claims, key.private_key, algorithm="RS256", headers={"kid": key.kid})


def test_a_withdrawn_signing_key_is_refused_once_the_keys_are_re_read(start_emulator) -> None:
    emu = start_emulator()  # its own keys: rotating them must not disturb other tests
    client_id = registered_app(emu).app_id
    clock = Clock()
    provider = Provider(OutboundSession(5, str(emu.ca_bundle)), emu.authority, client_id,
                        clock=clock)
    withdrawn = emu.keys.current
    token = id_token(emu, withdrawn, client_id)
    assert provider.verify_id_token(token)["sub"] == "subject-1"

    for _ in range(3):  # the emulator keeps three keys published: this one is now gone
        emu.keys.rotate()
    assert withdrawn.kid not in {key.kid for key in emu.keys.published}

    clock.now += KEYS_LIFETIME_SECONDS - 60
    provider.verify_id_token(token)  # still within the keys' lifetime: the cached set holds
    clock.now += 120
    with pytest.raises(TokenError, match="key the provider does not publish"):
        provider.verify_id_token(token)
    current = id_token(emu, emu.keys.current, client_id)
    assert provider.verify_id_token(current)["sub"] == "subject-1"


def test_the_signing_keys_are_fetched_again_only_after_their_lifetime(
        make_app, emulator, browser_sign_in_fn, monkeypatch) -> None:
    clock = Clock()
    app = make_app()
    state = entra(app)
    provider = Provider(state.http, emulator.authority, registered_app(emulator).app_id,
                        clock=clock)
    monkeypatch.setattr(state, "provider", provider)
    monkeypatch.setattr(state.tokens, "provider", provider)
    calls = CallRecorder(app)
    browser = Browser(app, emulator, browser_sign_in_fn)

    assert browser.sign_in().status_code == 303
    assert browser.sign_in(username=ADELE).status_code == 303
    assert calls.count("GET", "/discovery/v2.0/keys") == 1  # one fetch serves many sign-ins
    clock.now += KEYS_LIFETIME_SECONDS + 1
    assert browser.sign_in().status_code == 303
    assert calls.count("GET", "/discovery/v2.0/keys") == 2


@pytest.mark.parametrize("logger_name", ["msal.authority", "msal.oauth2cli.authcode",
                                         "msal.oauth2cli.oauth2.child", "msal.application"])
def test_msal_logs_are_redacted_from_every_msal_logger(make_app, caplog, logger_name) -> None:
    make_app()  # installs the redaction
    with caplog.at_level(logging.DEBUG):
        logging.getLogger(logger_name).debug('token request code=SECRETCODE body %s',
                                             '{"refresh_token": "SECRETRT"}')
    assert caplog.records, "the record was not logged at all"
    assert "SECRETCODE" not in caplog.text and "SECRETRT" not in caplog.text
    assert "[redacted]" in caplog.text


def test_a_slow_key_fetch_does_not_hold_up_sign_ins(emulator) -> None:
    """A token with an unknown kid makes the provider re-read its keys under its lock; reading
    the already known metadata (every sign-in and sign-out does) must not wait for that."""
    provider = Provider(OutboundSession(5, str(emulator.ca_bundle)), emulator.authority,
                        registered_app(emulator).app_id)
    known = provider.metadata()
    fetching = threading.Event()
    done = threading.Event()

    def slow_key_fetch() -> None:
        with provider._lock:  # as _refresh_keys holds it while the JWKS endpoint is slow
            fetching.set()
            done.wait(5)

    holder = threading.Thread(target=slow_key_fetch)
    holder.start()
    fetching.wait(5)
    began = time.monotonic()
    assert provider.metadata() is known
    assert time.monotonic() - began < 0.5
    done.set()
    holder.join(5)


def test_pages_do_not_keep_waiting_on_a_provider_that_is_down(closed_port) -> None:
    """The CSP's sign-out target is read when first needed; while the provider is down, pages
    (which can do without it) try again only after a while, not on every request."""
    clock = Clock()
    http = OutboundSession(5, None)
    provider = Provider(http, f"https://localhost:{closed_port}/tenant-id", "client-id",
                        clock=clock)
    attempts = []
    real_get = http.get
    http.get = lambda *args, **kwargs: attempts.append(args) or real_get(*args, **kwargs)

    assert provider.metadata_if_available() is None
    tried = len(attempts)
    assert tried >= 1
    clock.now += METADATA_RETRY_SECONDS - 1
    assert provider.metadata_if_available() is None
    assert len(attempts) == tried  # not tried again yet
    clock.now += 2
    assert provider.metadata_if_available() is None
    assert len(attempts) > tried
    with pytest.raises(ProviderError):  # what needs it (a sign-in) still tries, and says why
        provider.metadata()


def test_while_the_provider_is_down_each_caller_gets_its_own_error(closed_port) -> None:
    """The remembered failure is raised as a copy: re-raising one exception object would
    chain every failed request's frames onto its traceback (and share it between threads)."""
    provider = Provider(OutboundSession(5, None), f"https://localhost:{closed_port}/tenant-id",
                        "client-id", clock=Clock())
    raised = []
    for _ in range(50):
        with pytest.raises(ProviderError) as caught:
            provider.metadata()
        raised.append(caught.value)
    assert len({id(error) for error in raised}) == len(raised)
    depths = [len(traceback.extract_tb(error.__traceback__)) for error in raised]
    assert max(depths) < 10 and len(set(depths[1:])) == 1   # no growth from call to call
    assert {str(error) for error in raised} == {str(raised[0])}
