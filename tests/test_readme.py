"""Every Python snippet in the README runs, as a reader would run it (against the emulator)."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from typing import Any

import pytest

import flask_entra
from entra_emulator.server import env_settings
from tests.extension.host_app import Driver
from tests.support import ADELE

README = Path(__file__).resolve().parents[1] / "README.md"
SNIPPETS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def snippet(containing: str) -> str:
    found = [s for s in SNIPPETS if containing in s]
    assert len(found) == 1, f"one README snippet with {containing!r}"
    return found[0]


def test_every_python_snippet_is_run_below():
    tested = ("@auth.login_required", "# was: from identity.flask import Auth",
              "print(result[",
              # Test files for other projects: run by tests/emulator/test_pytest_plugin.py, in a
              # project of their own.
              "def test_a_forged_id_token_is_refused", "def test_client_credentials")
    assert sorted(SNIPPETS) == sorted(snippet(marker) for marker in tested)


@pytest.fixture
def reader_env(emulator, monkeypatch) -> dict[str, str]:
    settings = env_settings(emulator)
    for key, value in {**settings, "SECRET_KEY": "readme-secret-key-0123456789abcdef"}.items():
        monkeypatch.setenv(key, value)
    return settings


def load(code: str, tmp_path: Path, name: str) -> Any:
    path = tmp_path / f"{name}.py"
    path.write_text(code)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[name]
    return module


def test_add_sign_in_to_your_own_app(reader_env, emulator, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # its session files land in ./flask_session
    module = load(snippet("@auth.login_required"), tmp_path, "readme_app")
    browser = Driver(module.app, emulator, ADELE)

    assert browser.deliver(browser.start("/")).headers["Location"] == "/"
    page = browser.client.get("/").get_data(as_text=True)
    assert page == "Hello Adele Vance! <a href='/logout'>Sign out</a>"
    assert browser.sign_out().status_code == 303
    assert browser.client.get("/").status_code == 302


def test_coming_from_identity_is_one_import(tmp_path):
    module = load(snippet("# was: from identity.flask import Auth"), tmp_path, "readme_import")
    assert module.Auth is flask_entra.Auth


def test_pointing_another_msal_app_at_the_emulator(reader_env, tmp_path, capsys):
    load(snippet("print(result["), tmp_path, "readme_msal")
    assert capsys.readouterr().out.startswith("Bearer ")
