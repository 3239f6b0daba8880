"""The directory file: the packaged default, and clear refusals of malformed files."""

from __future__ import annotations

import base64
import json
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives import hashes, serialization

from entra_emulator.__main__ import main
from entra_emulator.directory import DEFAULT_DIRECTORY, DirectoryError, load_directory
from entra_emulator.server import EmulatorServer
from tests.support import default_directory_document, make_certificate


def test_default_directory():
    directory = load_directory()
    assert directory.tenant.display_name == "Contoso"
    assert directory.tenant.default_domain == "contoso.onmicrosoft.com"
    adele = directory.user_by_username("adelev@CONTOSO.onmicrosoft.com")
    assert adele.id == "87d349ed-44d7-43e1-9a83-5f2406dee5bd"
    assert adele.graph["jobTitle"] == "Retail Manager"
    assert adele.graph["businessPhones"] == ["+1 425 555 0109"]
    assert "passwordProfile" not in adele.graph and adele.password == "Passw0rd!"
    assert directory.photo_path(adele.graph).is_file()
    names = {user.display_name for user in directory.users}
    assert {"Adele Vance", "Megan Bowen", "Alex Wilber", "Diego Siciliani", "Lee Gu"} <= names
    # The web app first; the Todo API (issue 12) follows it, then a public client (issue 15).
    app, todo_api, console = directory.applications
    assert todo_api.display_name == "Todo API"
    assert console.display_name == "python-console" and console.is_fallback_public_client
    assert console.public_client_redirect_uris == ("http://localhost",)
    assert not console.password_credentials
    assert app.display_name == "python-webapp"
    assert app.redirect_uris == ("http://localhost:5000/getAToken", "http://localhost:5000/")
    assert app.password_credentials[0].secret_text == "emulator-dev-secret"
    assert directory.resolve_tenant("common") == directory.tenant_id
    assert directory.resolve_tenant("Contoso.onmicrosoft.com") == directory.tenant_id
    assert directory.resolve_tenant("fabrikam.com") is None


def write(tmp_path, document) -> str:
    path = tmp_path / "directory.json"
    path.write_text(json.dumps(document) if not isinstance(document, str) else document)
    return str(path)


def broken(change) -> dict:
    document = default_directory_document()
    change(document)
    return document


def _set(path: list, value):
    def change(document):
        target = document
        for key in path[:-1]:
            target = target[key]
        if value is KeyError:
            del target[path[-1]]
        else:
            target[path[-1]] = value
    return change


@pytest.mark.parametrize(("change", "expected"), [
    (_set(["tenant", "id"], "not-a-guid"), "tenant, field 'id': must be a GUID"),
    (_set(["tenant", "defaultDomain"], "contoso"), "tenant, field 'defaultDomain'"),
    (_set(["users", 1, "id"], "42"),
     "users[1] (MeganB@contoso.onmicrosoft.com), field 'id': must be a GUID"),
    (_set(["users", 0, "userPrincipalName"], "adele"), "users[0] (adele), field "
     "'userPrincipalName': must look like name@domain"),
    (_set(["users", 2, "passwordProfile"], KeyError), "users[2] (AlexW@contoso.onmicrosoft."
     "com), field 'passwordProfile'"),
    (_set(["users", 2, "passwordProfile", "password"], ""), "field 'passwordProfile.password'"),
    (_set(["users", 3, "businessPhones"], "+1 555"), "field 'businessPhones'"),
    (_set(["users", 3, "jobTitle"], 7), "users[3] (DiegoS@contoso.onmicrosoft.com), "
     "field 'jobTitle'"),
    (_set(["users", 4, "photo"], "photos/nobody.png"), "field 'photo': file not found"),
    (_set(["users", 1, "userPrincipalName"], "AdeleV@contoso.onmicrosoft.com"),
     "users[1], field 'userPrincipalName': duplicates another entry"),
    (_set(["applications", 0, "appId"], "python-webapp"),
     "applications[0] (python-webapp), field 'appId': must be a GUID"),
    (_set(["applications", 0, "web", "redirectUris"], ["localhost:5000/getAToken"]),
     "field 'web.redirectUris'"),
    (_set(["applications", 0, "passwordCredentials", 0, "secretText"], ""),
     "applications[0] (python-webapp).passwordCredentials[0], field 'secretText'"),
    (_set(["applications", 0, "tokenLifetimes"], {"accessToken": -5}),
     "field 'tokenLifetimes.accessToken': must be a whole number"),
    (_set(["applications", 0, "tokenLifetimes"], {"sessionToken": 60}),
     "field 'tokenLifetimes.sessionToken': unknown"),
    (_set(["applications", 0, "optionalClaims"], {"idToken": [{"name": "favourite_colour"}]}),
     "field 'optionalClaims.idToken[0].name': must be one of login_hint"),
    (_set(["applications", 0, "optionalClaims"], []),
     "field 'optionalClaims': must be an object"),
    (_set(["applications", 0, "keyCredentials"], [{"key": "bm90IGEgY2VydA=="}]),
     "keyCredentials[0], field 'key': must be an X.509 certificate"),
    (_set(["users"], KeyError), "(top level), field 'users': must be a JSON array"),
])
def test_malformed_directory_names_file_entry_and_field(tmp_path, change, expected):
    path = write(tmp_path, broken(change))
    with pytest.raises(DirectoryError) as raised:
        load_directory(path)
    assert str(raised.value).startswith(f"{path}: ")
    assert expected in str(raised.value)


def test_not_json(tmp_path):
    path = write(tmp_path, '{"tenant": {,}')
    with pytest.raises(DirectoryError, match=r"not valid JSON: .* line 1, column 13"):
        load_directory(path)


def test_missing_file(tmp_path):
    with pytest.raises(DirectoryError, match="cannot read the directory file"):
        load_directory(tmp_path / "absent.json")


def test_key_credentials_in_graph_form(tmp_path):
    _, cert_pem, cert = make_certificate()
    der = cert.public_bytes(serialization.Encoding.DER)
    sha1 = cert.fingerprint(hashes.SHA1())
    forms = [
        {"key": base64.b64encode(der).decode(),
         "customKeyIdentifier": base64.b64encode(sha1).decode()},
        {"key": cert_pem, "customKeyIdentifier": sha1.hex().upper()},
    ]
    for form in forms:
        document = broken(_set(["applications", 0, "keyCredentials"], [form]))
        app = load_directory(write(tmp_path, document)).applications[0]
        assert app.key_credential_for(sha1=sha1) is not None
    mismatched = broken(_set(["applications", 0, "keyCredentials"],
                             [{**forms[0], "customKeyIdentifier": "00" * 20}]))
    with pytest.raises(DirectoryError, match="customKeyIdentifier.*does not match"):
        load_directory(write(tmp_path, mismatched))


def test_emulator_refuses_to_start_with_a_malformed_file(tmp_path):
    path = write(tmp_path, broken(_set(["tenant", "id"], "nope")))
    with pytest.raises(DirectoryError, match="tenant, field 'id'"):
        EmulatorServer(directory=path, state_dir=tmp_path / "state", https_port=0,
                       http_port=0).start()


def test_check_command(tmp_path, capsys):
    assert main(["check", str(DEFAULT_DIRECTORY)]) == 0
    assert "OK: tenant Contoso" in capsys.readouterr().out
    path = write(tmp_path, broken(_set(["users", 0, "id"], "x")))
    assert main(["check", path]) == 2
    assert "users[0] (AdeleV@contoso.onmicrosoft.com), field 'id'" in capsys.readouterr().err


def test_check_command_as_a_module(tmp_path):
    path = write(tmp_path, broken(_set(["applications", 0, "web"], "http://x")))
    completed = subprocess.run([sys.executable, "-m", "entra_emulator", "check", path],
                               capture_output=True, text=True, timeout=60, check=False)
    assert completed.returncode == 2
    assert "applications[0] (python-webapp), field 'web'" in completed.stderr
    assert "Traceback" not in completed.stderr
