"""The production configuration (gunicorn.conf.py) serving the real app: its access log never
carries the callback's code or state, and X-Forwarded-* are believed only through TRUSTED_PROXY_HOPS
(the app's ProxyFix), never by gunicorn on its own."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.scale.scale_support import app_config, free_port

ROOT = Path(__file__).resolve().parents[2]
GUNICORN = Path(sys.executable).with_name("gunicorn")
STARTUP_SECONDS = 30


class Gunicorn:
    def __init__(self, log_path: Path, port: int, process: subprocess.Popen[bytes]) -> None:
        self.log_path = log_path
        self.base = f"http://localhost:{port}"  # the host of REDIRECT_URI
        self.process = process

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def start_gunicorn(tmp_path: Path, emulator) -> Iterator:
    started: list[Gunicorn] = []

    def start(**settings: str) -> Gunicorn:
        port = free_port()
        env = {**os.environ, **app_config(emulator, **settings),
               "GUNICORN_BIND": f"127.0.0.1:{port}", "GUNICORN_WORKERS": "1",
               "GUNICORN_THREADS": "2", "SESSION_FILE_DIR": str(tmp_path / "sessions")}
        log_path = tmp_path / f"gunicorn-{port}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen([str(GUNICORN), "-c", "gunicorn.conf.py", "wsgi:app"],
                                       cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        server = Gunicorn(log_path, port, process)
        started.append(server)
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(f"gunicorn exited with {process.returncode}: {server.log()[-3000:]}")
            try:
                if requests.get(f"{server.base}/healthz", timeout=2).status_code == 200:
                    return server
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"gunicorn did not answer within {STARTUP_SECONDS} s: "
                            f"{server.log()[-3000:]}")
            time.sleep(0.05)

    yield start
    for server in started:
        server.process.terminate()
        try:
            server.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


def wait_for_log(server: Gunicorn, text: str) -> str:
    deadline = time.monotonic() + 5
    while text not in server.log():
        if time.monotonic() > deadline:
            pytest.fail(f"{text!r} never appeared in the access log: {server.log()[-3000:]}")
        time.sleep(0.05)
    return server.log()


def test_access_log_has_no_query_string_referrer_or_tokens(start_gunicorn):
    server = start_gunicorn(RESPONSE_MODE="query")
    leaked = ("SECRET-CODE-VALUE", "SECRET-STATE-VALUE", "SECRET-REFERRER-STATE", "eyJhbGciOi")
    response = requests.get(
        f"{server.base}/getAToken?code=SECRET-CODE-VALUE&state=SECRET-STATE-VALUE",
        headers={"Referer": "http://localhost:8080/authorize?state=SECRET-REFERRER-STATE",
                 "Authorization": "Bearer eyJhbGciOiJSUzI1NiJ9.e30.sig",
                 "User-Agent": "scale-test-agent"},
        timeout=10, allow_redirects=False)
    assert response.status_code == 400  # no sign-in in progress: the error page
    log = wait_for_log(server, '"GET /getAToken HTTP/1.1" 400')
    line = next(line for line in log.splitlines() if "/getAToken" in line)
    assert "scale-test-agent" in line  # the line is the access log's
    for value in leaked:
        assert value not in log
    assert "code=" not in log and "state=" not in log


def test_gunicorn_does_not_trust_forwarded_proto_by_itself(start_gunicorn):
    server = start_gunicorn()
    response = requests.get(f"{server.base}/", headers={"X-Forwarded-Proto": "https"}, timeout=10)
    assert response.status_code == 200
    # gunicorn's default would believe a loopback peer and make the request https.
    assert "Strict-Transport-Security" not in response.headers


def test_trusted_proxy_hops_make_the_request_https(start_gunicorn):
    server = start_gunicorn(TRUSTED_PROXY_HOPS="1")
    response = requests.get(f"{server.base}/", headers={"X-Forwarded-Proto": "https"}, timeout=10)
    assert response.status_code == 200
    assert response.headers["Strict-Transport-Security"].startswith("max-age=")
