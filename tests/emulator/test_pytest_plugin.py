"""The pytest plugin, used as a project outside this repo uses it: a folder of its own with an
`app.py` written as the quickstart's and a test file, run with plain pytest in a subprocess (the
plugin found through its entry point, nothing copied from this repo's tests)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

README = Path(__file__).resolve().parents[2] / "README.md"
SNIPPETS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)

# The quickstart's app.py (Azure-Samples/ms-identity-python-webapp), cut to what a test reads;
# AUTH_IMPORT is the one line that differs between identity and flask_entra.
QUICKSTART_APP = '''
import os

import requests
from flask import Flask, render_template_string
AUTH_IMPORT

app = Flask(__name__)
app.config.update(SESSION_TYPE="filesystem", SECRET_KEY="outside-project-secret-key-123456")
auth = Auth(app, authority=os.getenv("AUTHORITY"), client_id=os.getenv("CLIENT_ID"),
            client_credential=os.getenv("CLIENT_SECRET"), redirect_uri=os.getenv("REDIRECT_URI"))


@app.route("/")
@auth.login_required
def index(*, context):
    return render_template_string("Welcome {{ user.name }}!", user=context["user"])


@app.route("/call_api")
@auth.login_required(scopes=os.getenv("SCOPE", "").split())
def call_downstream_api(*, context):
    api_result = requests.get(os.getenv("ENDPOINT"), timeout=30, headers={
        "Authorization": "Bearer " + context["access_token"]}).json()
    return render_template_string("{{ result|tojson(indent=4) }}", result=api_result)
'''

IDENTITY_TEST = '''
import importlib

import pytest


@pytest.fixture
def client(entra_trust, monkeypatch, tmp_path):
    for key, value in entra_trust.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    import app
    return importlib.reload(app).app.test_client()


def test_sign_in_call_graph_and_log_out(client, entra_emulator):
    page = entra_emulator.sign_in(client, "http://localhost:5000/call_api",
                                  "MeganB@contoso.onmicrosoft.com", "Passw0rd!")
    assert '"displayName": "Megan Bowen"' in page.get_data(as_text=True)
    assert client.get("/logout").status_code == 302
'''


def snippet(containing: str) -> str:
    return next(s for s in SNIPPETS if containing in s)


def quickstart_app(auth_import: str) -> str:
    return QUICKSTART_APP.replace("AUTH_IMPORT", auth_import)


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    # A subprocess, as `pytest` in that folder would run: no fixture of this repo is there.
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)


def test_the_readmes_test_passes_for_a_flask_entra_quickstart_app(pytester):
    pytester.makepyfile(app=quickstart_app("from flask_entra import Auth"),
                        test_app=snippet("def test_a_forged_id_token_is_refused"))
    run(pytester).assert_outcomes(passed=2)


def test_an_identity_quickstart_app_signs_in_with_plain_pytest(pytester):
    pytester.makepyfile(app=quickstart_app("from identity.flask import Auth"),
                        test_app=IDENTITY_TEST)
    run(pytester).assert_outcomes(passed=1)


def test_the_readmes_msal_test_passes(pytester):
    pytester.makepyfile(test_msal=snippet("def test_client_credentials"))
    run(pytester).assert_outcomes(passed=1)


def test_each_folder_gets_its_own_directory_and_every_test_a_clean_emulator(pytester):
    pytester.makepyfile(**{
        "default/test_default": '''
def test_default_tenant(entra_emulator):
    assert entra_emulator.server.directory.tenant.display_name == "Contoso"
''',
        "fabrikam/conftest": '''
import json
import pytest
from entra_emulator.directory import DEFAULT_DIRECTORY


@pytest.fixture
def entra_directory():
    document = json.loads(DEFAULT_DIRECTORY.read_text())
    document["tenant"]["displayName"] = "Fabrikam"
    return document
''',
        "fabrikam/test_fabrikam": '''
import requests

ALICE = {"id": "0b3f2a6e-5d1c-4a8e-9f00-0000000000a1", "displayName": "Alice Test",
         "userPrincipalName": "alice@contoso.onmicrosoft.com",
         "passwordProfile": {"password": "Alice-Passw0rd"}}


def test_1_changes_everything(entra_emulator):
    assert entra_emulator.server.directory.tenant.display_name == "Fabrikam"
    app_id = entra_emulator.env["CLIENT_ID"]
    entra_emulator.add_user(ALICE)
    entra_emulator.grant_consent(ALICE["id"], app_id, ["User.Read"])
    entra_emulator.defects.add(app_id, "bad_signature")
    entra_emulator.faults.add("graph", "503", count=3)
    entra_emulator.clock.advance(3600)
    entra_emulator.server.keys.rotate()
    assert len(entra_emulator.server.keys.published) == 2


def test_2_finds_it_as_it_started(entra_emulator):
    state = entra_emulator.server.state
    assert state.directory.user_by_username("alice@contoso.onmicrosoft.com") is None
    assert state.consents.granted(ALICE["id"], entra_emulator.env["CLIENT_ID"]) == frozenset()
    assert state.defects.pending() == [] and state.faults.pending() == []
    assert abs(entra_emulator.clock.now() - __import__("time").time()) < 60
    assert len(entra_emulator.server.keys.published) == 1
    keys = entra_emulator.http.get(entra_emulator.authority + "/discovery/v2.0/keys").json()
    assert len(keys["keys"]) == 1
''',
    })
    run(pytester).assert_outcomes(passed=3)


def test_the_plugin_can_be_turned_off(pytester):
    pytester.makepyfile(test_off="def test_needs_it(entra_emulator):\n    pass\n")
    result = run(pytester, "-p", "no:entra_emulator")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'entra_emulator' not found*"])
