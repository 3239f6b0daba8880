"""Every Python snippet in the README runs, as a reader would run it (against the emulator)."""

from __future__ import annotations

import importlib.util
import re
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import flask_entra
from entra_emulator.serving import env_settings
from tests.extension.host_app import Driver
from tests.support import ADELE, MEGAN

README = Path(__file__).resolve().parents[1] / "README.md"
SNIPPETS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def snippet(containing: str) -> str:
    found = [s for s in SNIPPETS if containing in s]
    assert len(found) == 1, f"one README snippet with {containing!r}"
    return found[0]


def test_every_python_snippet_is_run_below():
    tested = ("return f\"Hello {context", "# was: from identity.flask import Auth",
              "@auth.login_required(roles=", "@auth.token_required(",
              "print(result[",
              # Run by tests/emulator/test_msal_methods.py, with the user on the device page.
              "initiate_device_flow",
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
    module = load(snippet("return f\"Hello {context"), tmp_path, "readme_app")
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


def test_protect_your_own_web_api(emulator, monkeypatch, tmp_path):
    api_id = "6f1f1e8a-2b7c-4a55-9d3e-7c0b5a1d2e3f"
    monkeypatch.setenv("AUTHORITY", emulator.authority)
    monkeypatch.setenv("API_CLIENT_ID", api_id)
    client = load(snippet("@auth.token_required("), tmp_path, "readme_api").api.test_client()
    now = int(time.time())
    token = emulator.keys.sign({
        "aud": api_id, "iss": f"{emulator.authority}/v2.0", "tid": emulator.tenant_id,
        "iat": now, "nbf": now, "exp": now + 600, "oid": "caller-oid", "sub": "caller",
        "scp": "ToDoList.Read", "ver": "2.0"})

    served = client.get("/api/todos", headers={"Authorization": f"Bearer {token}"})
    assert served.get_json() == {"caller": "caller-oid", "app_only": False}
    refused = client.get("/api/todos")
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"] == "Bearer"


def test_roles_and_groups(reader_env, emulator, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    directory = emulator.directory
    adele = directory.user_by_username(ADELE)
    group = directory.direct_groups(adele.id)[0]
    monkeypatch.setenv("TEAM_GROUP_ID", group.id)
    module = load(snippet("@auth.login_required(roles="), tmp_path, "readme_roles")

    adele_browser = Driver(module.app, emulator, ADELE)
    adele_browser.deliver(adele_browser.start("/admin"))
    assert adele_browser.client.get("/admin").get_data(as_text=True) == (
        "Hello admin Adele Vance")
    assert adele_browser.client.get("/team").get_data(as_text=True).startswith("Groups: ")
    megan = Driver(module.app, emulator, MEGAN)
    megan.deliver(megan.start("/admin"))
    refused = megan.client.get("/admin")
    assert refused.status_code == 403
    assert "app role Admin" in refused.get_data(as_text=True)
