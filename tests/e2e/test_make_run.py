"""`make run` as the README promises it: the launcher serves http://localhost:5000 on the embedded
emulator within seconds, a person can sign in and see their Graph profile, and Ctrl-C stops
everything it started.

It needs the README's ports (5000, 8080, 8443) free; it fails, saying so, when they are not.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.e2e.browser_support import CHROMIUM, CHROMIUM_ARGS
from tests.e2e.test_browser import USERNAME

pytestmark = pytest.mark.browser  # a real Chromium (Debian's /usr/bin/chromium)

ROOT = Path(__file__).resolve().parents[2]
PORTS = (5000, 8080, 8443)
START_TIMEOUT = 30


def port_in_use(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def make_run(tmp_path: Path) -> Iterator[subprocess.Popen]:
    busy = [port for port in PORTS if port_in_use(port)]
    if busy:
        pytest.fail(f"ports {busy} are in use (a `make run` still running?); this test runs the "
                    "launcher on the README's ports")
    env = {**os.environ,
           "EMULATOR_STATE_DIR": str(tmp_path / "emulator"),
           "SESSION_FILE_DIR": str(tmp_path / "sessions"),
           # Whatever a developer's .env says, this test is about the emulator path.
           "AUTHORITY": "", "OIDC_AUTHORITY": "", "CLIENT_ID": "", "CLIENT_SECRET": "",
           "SESSION_TYPE": "filesystem", "PYTHONUNBUFFERED": "1"}
    # Its own process group, so a failed test can still stop the web app child too.
    launcher = subprocess.Popen([sys.executable, "launch.py"], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
    try:
        yield launcher
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(launcher.pid, signal.SIGKILL)
        launcher.wait()


def wait_until_serving(launcher: subprocess.Popen) -> float:
    started = time.monotonic()
    while time.monotonic() - started < START_TIMEOUT:
        if launcher.poll() is not None:
            pytest.fail(f"launch.py exited early:\n{launcher.stdout.read()}")
        try:
            if requests.get("http://localhost:5000/", timeout=1).status_code == 200:
                return time.monotonic() - started
        except requests.ConnectionError:
            time.sleep(0.1)
    pytest.fail(f"http://localhost:5000 did not answer within {START_TIMEOUT} s")


def test_make_run_serves_the_app_on_the_emulator_and_stops_cleanly(make_run) -> None:
    from playwright.sync_api import expect, sync_playwright

    seconds = wait_until_serving(make_run)
    assert seconds < 15

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.set_default_timeout(15_000)
        page.goto("http://localhost:5000/")
        page.get_by_role("link", name="Sign in").first.click()
        page.wait_for_url("http://localhost:8080/**")
        page.fill("input[name=username]", USERNAME)
        page.fill("input[name=password]", "Passw0rd!")
        page.locator("button[type=submit]").first.click()
        page.locator("button[name=decision][value=accept]").click()
        page.wait_for_url("http://localhost:5000/**")
        expect(page.locator("h1")).to_contain_text("Adele Vance")
        page.get_by_role("link", name="Call Microsoft Graph").click()
        expect(page.locator("main")).to_contain_text("Retail Manager")
        browser.close()

    make_run.send_signal(signal.SIGINT)  # what Ctrl-C sends
    output, _ = make_run.communicate(timeout=15)
    # The banner tells a newcomer where to go and how to sign in.
    assert "http://localhost:5000" in output
    assert "AdeleV@contoso.onmicrosoft.com" in output and "Passw0rd!" in output
    for port in PORTS:
        assert not port_in_use(port), f"port {port} still served after Ctrl-C"
