"""`python -m entra_emulator serve`: ready line, env file, and a clean stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import requests
from dotenv import dotenv_values


def start_cli(tmp_path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "entra_emulator", "serve", "--port", "0",
         "--state-dir", str(tmp_path / "state"), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def read_until_ready(process: subprocess.Popen, timeout: float = 30) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("Ready:"):
            return lines
    process.kill()
    pytest.fail(f"no ready line; output: {''.join(lines)} {process.stderr.read()}")


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_serve_writes_the_env_file_and_stops_cleanly(tmp_path, stop_signal):
    env_file = tmp_path / "emulator.env"
    process = start_cli(tmp_path, "--env-file", str(env_file))
    try:
        output = "".join(read_until_ready(process))
        settings = dotenv_values(env_file)
        assert set(settings) == {"AUTHORITY", "CLIENT_ID", "CLIENT_SECRET", "REDIRECT_URI",
                                 "SCOPE", "ENDPOINT", "CA_BUNDLE", "REQUESTS_CA_BUNDLE"}
        # The web app's own trust setting names the same bundle (a shell's REQUESTS_CA_BUNDLE
        # cannot override it).
        assert settings["CA_BUNDLE"] == settings["REQUESTS_CA_BUNDLE"]
        assert settings["AUTHORITY"] in output and "AdeleV@contoso.onmicrosoft.com" in output
        discovery = requests.get(f"{settings['AUTHORITY']}/v2.0/.well-known/openid-configuration",
                                 verify=settings["REQUESTS_CA_BUNDLE"])
        assert discovery.status_code == 200
        assert settings["REDIRECT_URI"] == "http://localhost:5000/getAToken"
        assert settings["ENDPOINT"].endswith("/v1.0/me") and settings["SCOPE"] == "User.Read"
    finally:
        process.send_signal(stop_signal)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "Emulator stopped." in out
    assert "Traceback" not in err


def test_serve_refuses_a_malformed_directory(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"tenant": {"id": "x"}}')
    process = start_cli(tmp_path, "--directory", str(bad))
    out, err = process.communicate(timeout=60)
    assert process.returncode == 2
    assert f"{bad}: tenant, field" in err and "Traceback" not in err
