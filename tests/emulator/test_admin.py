"""The admin endpoints (`/_emulator/...`): what they do, and who may call them.

Driven over real HTTPS, as a developer's curl or a cross-site page in a browser would; only the
caller's address, which a test cannot change over a real socket, goes through Flask's client.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests

from tests.support import get_me

JSON = {"Content-Type": "application/json"}
ENDPOINTS = [("GET", "faults"), ("POST", "faults"), ("DELETE", "faults"), ("GET", "defects"),
             ("POST", "defects"), ("DELETE", "defects"), ("POST", "rotate-keys")]


def admin(emu: Any, method: str, path: str, **kwargs: Any) -> requests.Response:
    return requests.request(method, f"{emu.https_base}/_emulator/{path}", verify=emu.ca_bundle,
                            timeout=10, **kwargs)


def accepted_body(method: str, path: str, default_app: Any) -> bytes:
    """A body the endpoint would accept (the defect is for the default app)."""
    if (method, path) == ("POST", "faults"):
        return b'{"target": "graph", "kind": "503"}'
    if (method, path) == ("POST", "defects"):
        return f'{{"client_id": "{default_app.client_id}", "defect": "alg_none"}}'.encode()
    return b""


def assert_nothing_changed(emu: Any, kids_before: list[str]) -> None:
    assert emu.faults.pending() == []
    assert emu.defects.pending() == []
    assert [key["kid"] for key in emu.keys.jwks()["keys"]] == kids_before


# ---------------------------------------------------------------------------------------------
# What they do
# ---------------------------------------------------------------------------------------------

def test_admin_adds_lists_and_clears_faults(emulator, access_token):
    added = admin(emulator, "POST", "faults",
                  json={"target": "graph", "kind": "429", "count": 2, "retry_after": 4})
    assert added.status_code == 201, added.text
    assert added.headers["Content-Type"].startswith("application/json")
    assert admin(emulator, "GET", "faults").json()["pending"] == [
        {"target": "graph", "kind": "429", "retry_after": 4, "delay_seconds": None}] * 2

    response = get_me(emulator, access_token)
    assert response.status_code == 429 and response.headers["Retry-After"] == "4"
    assert len(admin(emulator, "GET", "faults").json()["pending"]) == 1

    cleared = admin(emulator, "DELETE", "faults")
    assert cleared.status_code == 200
    assert admin(emulator, "GET", "faults").json() == {"pending": []}
    assert get_me(emulator, access_token).status_code == 200


@pytest.mark.parametrize(("body", "complaint"), [
    (b"{not json", "the body must be a JSON object"),
    (b"[1, 2]", "the body must be a JSON object"),
    (b"", "the body must be a JSON object"),
    (b'{"target": "graph", "kind": "418"}', "kind must be one of"),
    (b'{"target": "userinfo", "kind": "429"}', "target must be one of"),
    (b'{"target": "graph", "kind": "429", "count": "3"}', "count must be a whole number"),
    (b'{"target": "graph", "kind": "429", "retry_after": "soon"}', "retry_after must be"),
    (b'{"target": "graph", "kind": "delay"}', "needs delay_seconds"),
    (b'{"target": "graph", "kind": "429", "colour": "red"}', "unknown field(s): colour"),
])
def test_admin_refuses_bad_fault_requests_with_400(emulator, body, complaint):
    response = admin(emulator, "POST", "faults", data=body, headers=JSON)
    assert response.status_code == 400
    error = response.json()
    assert error["error"] == "invalid_request"
    assert complaint in error["error_description"]
    assert emulator.faults.pending() == []


def test_admin_adds_lists_and_clears_defects(emulator, default_app):
    added = admin(emulator, "POST", "defects",
                  json={"client_id": default_app.client_id, "defect": "alg_none", "count": 2})
    assert added.status_code == 201, added.text
    assert admin(emulator, "GET", "defects").json()["pending"] == [
        {"client_id": default_app.client_id, "defect": "alg_none"}] * 2
    assert admin(emulator, "DELETE", "defects").status_code == 200
    assert emulator.defects.pending() == []


@pytest.mark.parametrize(("body", "complaint"), [
    ({"defect": "rot13"}, "unknown defect 'rot13'; known defects: bad_signature, alg_none"),
    ({"defect": "alg_none", "client_id": None}, "client_id must be the appId of an "
                                                "application in the directory (got None)"),
    ({"defect": "alg_none", "client_id": "not-an-app"}, "(got 'not-an-app')"),
    ({"defect": "alg_none", "count": -1}, "count must be"),
    ({"defect": "alg_none", "count": 10**9}, "count must be"),
])
def test_admin_refuses_bad_defect_requests_with_400(emulator, default_app, body, complaint):
    body = {"client_id": default_app.client_id, **body}
    response = admin(emulator, "POST", "defects", json=body)
    assert response.status_code == 400
    assert complaint in response.json()["error_description"]
    assert emulator.defects.pending() == []


def test_admin_rotates_keys_keeping_the_old_one_published(start_emulator):
    emu = start_emulator()
    jwks_uri = requests.get(f"{emu.authority}/v2.0/.well-known/openid-configuration",
                            verify=emu.ca_bundle).json()["jwks_uri"]
    before = [key["kid"] for key in requests.get(jwks_uri, verify=emu.ca_bundle).json()["keys"]]

    # No body, as with curl -X POST -H 'content-type: application/json'.
    response = admin(emu, "POST", "rotate-keys", headers=JSON)

    assert response.status_code == 200, response.text
    new_kid = response.json()["current_kid"]
    after = [key["kid"] for key in requests.get(jwks_uri, verify=emu.ca_bundle).json()["keys"]]
    assert new_kid not in before
    assert new_kid in after and set(before) <= set(after)
    assert emu.keys.current.kid == new_kid


# ---------------------------------------------------------------------------------------------
# Who may call them
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("address", "allowed"), [
    ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("::ffff:127.0.0.1", True),
    ("192.168.1.20", False), ("10.0.0.1", False), ("2001:db8::1", False),
    ("::ffff:192.0.2.1", False), ("", False),
])
def test_admin_answers_loopback_callers_only(emulator, address, allowed):
    client = emulator.app.test_client()
    environ = {"REMOTE_ADDR": address}
    response = client.post("/_emulator/faults", json={"target": "graph", "kind": "503"},
                           environ_base=environ)
    if allowed:
        assert response.status_code == 201
    else:
        assert response.status_code == 403
        assert response.json["error"] == "access_denied"
        assert emulator.faults.pending() == []
        for method, path in (("GET", "faults"), ("DELETE", "faults"), ("POST", "defects"),
                             ("DELETE", "defects"), ("POST", "rotate-keys")):
            refused = client.open(f"/_emulator/{path}", method=method, environ_base=environ,
                                  json={})
            assert refused.status_code == 403, (method, path)


# What a cross-site page can POST without a CORS preflight: a form's content types, or none.
@pytest.mark.parametrize("content_type", [
    "text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x", None,
])
@pytest.mark.parametrize("path", ["faults", "defects", "rotate-keys"])
def test_admin_post_without_a_json_content_type_is_415(emulator, default_app, path,
                                                       content_type):
    kids_before = [key["kid"] for key in emulator.keys.jwks()["keys"]]
    headers = {"Content-Type": content_type} if content_type else {}
    # requests adds no Content-Type of its own for raw bytes, so None really sends none.
    response = admin(emulator, "POST", path, data=accepted_body("POST", path, default_app),
                     headers=headers)

    assert response.status_code == 415, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    error = response.json()
    assert error["error"] == "invalid_request"
    assert "Content-Type: application/json" in error["error_description"]
    assert_nothing_changed(emulator, kids_before)


def test_admin_accepts_json_with_a_charset(emulator):
    response = admin(emulator, "POST", "faults", data=b'{"target": "graph", "kind": "503"}',
                     headers={"Content-Type": "application/json; charset=utf-8"})
    assert response.status_code == 201, response.text
    assert len(emulator.faults.pending()) == 1


@pytest.mark.parametrize("host", [
    "evil.example", "evil.example:{port}", "localhost.evil.example:{port}",
    "127.0.0.1.nip.io:{port}", "localhost@evil.example", "192.168.1.20:{port}",
    "[::2]:{port}", "localhost:{port}/x", "",
])
@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_admin_refuses_requests_not_addressed_to_loopback(emulator, default_app, host, method,
                                                          path):
    # DNS rebinding: the browser reaches 127.0.0.1 but still names the attacker's host.
    kids_before = [key["kid"] for key in emulator.keys.jwks()["keys"]]
    port = emulator.https_base.rsplit(":", 1)[1]
    response = admin(emulator, method, path, data=accepted_body(method, path, default_app),
                     headers={**JSON, "Host": host.format(port=port)})

    assert response.status_code == 403, response.text
    error = response.json()
    assert error["error"] == "access_denied"
    assert "localhost, 127.0.0.1 or [::1]" in error["error_description"]
    assert_nothing_changed(emulator, kids_before)


@pytest.mark.parametrize("host", [
    "localhost:{port}", "127.0.0.1:{port}", "[::1]:{port}", "LocalHost:{port}", "localhost",
    "127.0.0.1:1",
])
def test_admin_answers_any_loopback_host_and_port(emulator, host):
    port = emulator.https_base.rsplit(":", 1)[1]
    response = admin(emulator, "POST", "faults", json={"target": "graph", "kind": "503"},
                     headers={"Host": host.format(port=port)})
    assert response.status_code == 201, response.text
    listed = admin(emulator, "GET", "faults", headers={"Host": host.format(port=port)})
    assert listed.status_code == 200 and len(listed.json()["pending"]) == 1
