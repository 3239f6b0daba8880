"""A web API protected by flask_entra's token_required: every access-token defect the RP tests
use for ID tokens, plus missing scope and role, each answered with the right status,
WWW-Authenticate challenge and JSON body (RFC 6750). Tokens are signed with the emulator's own
keys (published in its real JWKS, fetched over TLS), so only the claims are the test's."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from flask import Flask, jsonify

from flask_entra import Auth

API_ID = "6f1f1e8a-2b7c-4a55-9d3e-7c0b5a1d2e3f"
CLIENT = "3cf2e0af-856d-474a-8a72-c78c404b4571"
OTHER_TENANT = "11111111-2222-3333-4444-555555555555"


def api_app(emulator: Any, **options: Any) -> Flask:
    app = Flask("todo-like-api")
    app.config.update(SECRET_KEY="api-secret-key-0123456789abcdef0123", SESSION_TYPE="filesystem")
    auth = Auth(app, **{"client_id": API_ID, "authority": emulator.authority, **options})

    @app.get("/todos")
    @auth.token_required(scopes=["ToDoList.Read", "ToDoList.ReadWrite"],
                         roles=["ToDoList.Read.All"])
    def todos(*, context: dict[str, Any]) -> Any:
        return jsonify(caller=context["claims"].get("oid"), app_only=context["app_only"])

    @app.post("/todos")
    @auth.token_required(scopes=["ToDoList.ReadWrite"])
    def add(*, context: dict[str, Any]) -> Any:
        return jsonify(ok=True)

    return app


@pytest.fixture
def api(emulator, tmp_path, monkeypatch) -> Any:
    monkeypatch.chdir(tmp_path)  # Flask-Session's folder
    return api_app(emulator).test_client()


def claims(emulator: Any, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"aud": API_ID, "iss": f"{emulator.authority}/v2.0", "tid": emulator.tenant_id,
            "iat": now, "nbf": now, "exp": now + 3600, "azp": CLIENT, "azpacr": "1",
            "oid": "87d349ed-44d7-43e1-9a83-5f2406dee5bd", "sub": "abc", "scp": "ToDoList.Read",
            "ver": "2.0", "uti": uuid.uuid4().hex}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def signed(emulator: Any, body: dict[str, Any], **headers: Any) -> str:
    return emulator.keys.sign(body, headers=headers or None)


def unsigned(header: dict[str, Any], body: dict[str, Any], signature: bytes = b"") -> str:
    def part(value: Any) -> str:
        raw = value if isinstance(value, bytes) else json.dumps(value).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    return f"{part(header)}.{part(body)}.{part(signature) if signature else ''}"


def call(api: Any, token: str | None, method: str = "GET") -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return api.open("/todos", method=method, headers=headers)


def assert_refused(response: Any, status: int, error: str, description: str) -> None:
    body = response.get_json()
    assert response.status_code == status, body
    assert body["error"] == error, body
    assert description in body["error_description"], body
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith(f'Bearer error="{error}", error_description="'), challenge
    assert response.headers["Cache-Control"] == "no-store"


def test_a_valid_delegated_token_v2_and_v1_and_an_app_only_token_are_served(api, emulator):
    v2 = call(api, signed(emulator, claims(emulator)))
    assert v2.status_code == 200, v2.get_json()
    assert v2.get_json() == {"caller": "87d349ed-44d7-43e1-9a83-5f2406dee5bd", "app_only": False}
    v1 = call(api, signed(emulator, claims(
        emulator, aud=f"api://{API_ID}", iss=f"https://sts.windows.net/{emulator.tenant_id}/",
        ver="1.0", azp=None, appid=CLIENT)))
    assert v1.status_code == 200, v1.get_json()
    app_only = call(api, signed(emulator, claims(emulator, scp=None, roles=["ToDoList.Read.All"],
                                                 idtyp="app")))
    assert app_only.get_json() == {"caller": "87d349ed-44d7-43e1-9a83-5f2406dee5bd",
                                   "app_only": True}


def test_no_token_is_a_bare_bearer_challenge(api):
    for headers in ({}, {"Authorization": "Basic dXNlcjpwdw=="}, {"Authorization": "Bearer"}):
        response = api.get("/todos", headers=headers)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert response.get_json()["error"] == "unauthorized"


def _defects(emulator: Any) -> dict[str, tuple[str, str]]:
    """name → (token, what the refusal says)."""
    good = claims(emulator)
    key = emulator.keys.current
    public_pem = key.public_key.public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
    header_hs = {"typ": "JWT", "alg": "HS256", "kid": key.kid}
    signing_input = unsigned(header_hs, good).rstrip(".")
    hs256 = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    token = signed(emulator, good)
    bad_signature = token[:-8] + ("A" * 8 if not token.endswith("A" * 8) else "B" * 8)
    return {
        "bad_signature": (bad_signature, "signature does not verify"),
        "alg_none": (unsigned({"typ": "JWT", "alg": "none"}, good), "'none' is not allowed"),
        "hs256_public_key": (unsigned(header_hs, good, hs256), "'HS256' is not allowed"),
        "wrong_iss": (signed(emulator, claims(emulator, iss="https://evil.example/v2.0")),
                      "comes from another issuer (iss)"),
        "wrong_tenant_in_iss": (signed(emulator, claims(
            emulator, iss=f"https://sts.windows.net/{OTHER_TENANT}/")),
            "comes from another issuer (iss)"),
        "wrong_aud": (signed(emulator, claims(emulator, aud="api://someone-else")),
                      "not meant for this app (aud)"),
        "another_apps_token": (signed(emulator, claims(emulator, aud=CLIENT)),
                               "not meant for this app (aud)"),
        "graph_token": (signed(emulator, claims(emulator, aud="https://graph.microsoft.com",
                                                iss=f"https://sts.windows.net/"
                                                    f"{emulator.tenant_id}/")),
                        "not meant for this app (aud)"),
        "expired": (signed(emulator, claims(emulator, exp=int(time.time()) - 3600)),
                    "has expired (exp)"),
        "not_yet_valid": (signed(emulator, claims(emulator, nbf=int(time.time()) + 3600)),
                          "dated in the future"),
        "unknown_kid": (jwt.encode(good, key.private_key, algorithm="RS256",
                                   headers={"kid": "nobody-publishes-this"}),
                        "key the provider does not publish"),
        "id_token_as_bearer": (signed(emulator, claims(emulator, scp=None, nonce="n",
                                                       name="Adele Vance")),
                               "neither scp nor roles"),
        "not_a_jwt": ("not-a-jwt", "not a well-formed JWT"),
    }


DEFECTS = ["bad_signature", "alg_none", "hs256_public_key", "wrong_iss", "wrong_tenant_in_iss",
           "wrong_aud", "another_apps_token", "graph_token", "expired", "not_yet_valid",
           "unknown_kid", "id_token_as_bearer", "not_a_jwt"]


@pytest.mark.parametrize("defect", DEFECTS)
def test_every_defective_token_is_invalid_token(api, emulator, defect):
    token, says = _defects(emulator)[defect]
    assert_refused(call(api, token), 401, "invalid_token", says)


def test_a_token_without_kid_only_while_one_key_is_published(emulator, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    kidless = jwt.encode(claims(emulator), emulator.keys.current.private_key, algorithm="RS256")
    assert call(api_app(emulator).test_client(), kidless).status_code == 200
    emulator.keys.rotate()  # two keys published (the emulator is reset after the test)
    assert_refused(call(api_app(emulator).test_client(), kidless), 401, "invalid_token",
                   "does not name its signing key (kid) and the provider publishes several")


def test_a_tenant_outside_the_allow_list_is_refused(emulator, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    organizations = emulator.authority.rsplit("/", 1)[0] + "/organizations"
    token = signed(emulator, claims(emulator))
    refused = api_app(emulator, authority=organizations, allowed_tenants=[OTHER_TENANT])
    assert_refused(call(refused.test_client(), token), 401, "invalid_token",
                   "tenant this app does not allow (tid)")
    allowed = api_app(emulator, authority=organizations, allowed_tenants=[emulator.tenant_id])
    assert call(allowed.test_client(), token).status_code == 200


def test_a_missing_scope_or_role_is_insufficient_scope(api, emulator):
    read_only = signed(emulator, claims(emulator, scp="ToDoList.Read"))
    response = call(api, read_only, method="POST")
    assert_refused(response, 403, "insufficient_scope", "ToDoList.ReadWrite")
    assert 'scope="ToDoList.ReadWrite"' in response.headers["WWW-Authenticate"]
    other_scope = signed(emulator, claims(emulator, scp="User.Read"))
    assert_refused(call(api, other_scope), 403, "insufficient_scope", "ToDoList.Read")
    wrong_role = signed(emulator, claims(emulator, scp=None, roles=["Something.Else"]))
    assert_refused(call(api, wrong_role), 403, "insufficient_scope", "ToDoList.Read.All")
    app_only_on_delegated_view = signed(emulator, claims(emulator, scp=None,
                                                         roles=["ToDoList.Read.All"]))
    assert_refused(call(api, app_only_on_delegated_view, method="POST"), 403,
                   "insufficient_scope", "takes no app-only tokens")


def test_the_key_set_is_fetched_once_not_per_request(api, emulator):
    state = api.application.extensions["flask_entra"]
    fetched: list[str] = []
    state.http.hooks["response"].append(lambda r, *a, **k: fetched.append(r.request.url))
    token = signed(emulator, claims(emulator))
    for _ in range(20):
        assert call(api, token).status_code == 200
    assert sum(url.endswith("/keys") for url in fetched) == 1
