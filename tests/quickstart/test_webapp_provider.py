"""Talking to the provider: a redirect never carries the client's credentials elsewhere (RFC 9700
§4.12, checklist G5); the emulator's `--env-file` output is enough for the web app; the provider's
AADSTS errors reach the user with the hint for their common cause."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from entra_emulator.serving import env_settings, write_env_file
from flask_entra.outbound import OutboundSession
from tests.quickstart.webapp_support import (
    Browser,
    state_of,
)
from webapp import create_app


class Recorder(http.server.BaseHTTPRequestHandler):
    """Answers every POST with a 307 to `redirect_to` (when set) and records what it received."""

    redirect_to = ""
    received: list[bytes]

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.received.append(body)
        if self.redirect_to:
            self.send_response(307)
            self.send_header("Location", self.redirect_to)
        else:
            self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def serve(redirect_to: str = "") -> tuple[http.server.ThreadingHTTPServer, list[bytes]]:
    received: list[bytes] = []
    handler = type("Handler", (Recorder,), {"redirect_to": redirect_to, "received": received})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, received


@pytest.fixture
def attacker_and_token_endpoint() -> Iterator[tuple[str, list[bytes], list[bytes]]]:
    attacker, stolen = serve()
    endpoint, received = serve(redirect_to=f"http://127.0.0.1:{attacker.server_port}/steal")
    yield f"http://127.0.0.1:{endpoint.server_port}/token", received, stolen
    attacker.shutdown()
    endpoint.shutdown()


def test_a_307_from_the_token_endpoint_is_not_followed(attacker_and_token_endpoint) -> None:
    url, received, stolen = attacker_and_token_endpoint
    response = OutboundSession(timeout=5).post(url, data={"client_secret": "s3cret", "code": "c"})
    assert response.status_code == 307
    assert received and b"client_secret=s3cret" in received[0]
    assert stolen == []


def test_the_emulators_env_file_is_all_the_web_app_needs(emulator, tmp_path, monkeypatch,
                                                         browser_sign_in_fn) -> None:
    """`entra-emulator serve --env-file .env`, then the web app reads that .env (and nothing
    else): REQUESTS_CA_BUNDLE in it is trusted, so sign-in and Graph work."""
    write_env_file(tmp_path / ".env", env_settings(emulator))
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "CA_BUNDLE", "AUTHORITY", "CLIENT_ID",
                 "CLIENT_SECRET", "ENDPOINT", "REDIRECT_URI", "SESSION_TYPE", "OIDC_AUTHORITY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SECRET_KEY", "env-file-test-secret-key-0123456789")
    monkeypatch.setenv("SESSION_FILE_DIR", str(tmp_path / "sessions"))
    monkeypatch.chdir(tmp_path)

    app = create_app()
    browser = Browser(app, emulator, browser_sign_in_fn)
    browser.sign_in()
    page = browser.client.get("/graph")
    assert page.status_code == 200
    assert "Adele Vance" in page.get_data(as_text=True)
    assert Path(tmp_path / ".env").read_text().count("REQUESTS_CA_BUNDLE") == 1


def test_a_wrong_client_secret_shows_aadsts7000215_with_its_hint(make_app, emulator,
                                                                  browser_sign_in_fn) -> None:
    browser = Browser(make_app(CLIENT_SECRET="the-secret-id-not-its-value"), emulator,
                      browser_sign_in_fn)
    page = browser.sign_in()
    html = page.get_data(as_text=True)
    assert page.status_code in (400, 401)
    assert "AADSTS7000215" in html
    assert "not its Secret ID" in html
    assert "the-secret-id-not-its-value" not in html


@pytest.mark.parametrize(("error", "code", "hint"), [
    ("unauthorized_client", "700016", "Check the client ID"),
    ("invalid_request", "50011", "localhost and 127.0.0.1 differ"),
    ("invalid_grant", "54005", "already used"),
])
def test_provider_errors_show_their_aadsts_code_and_hint(browser, error, code, hint) -> None:
    start = browser.start()
    state = state_of(start.headers["Location"])
    description = f"AADSTS{code}: something went wrong.\r\nTrace ID: 00000000"
    page = browser.client.get("/getAToken", query_string={
        "error": error, "error_description": description, "state": state})
    html = page.get_data(as_text=True)
    assert page.status_code >= 400
    assert f"AADSTS{code}" in html and hint in html
    assert "Trace ID" not in html
