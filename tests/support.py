"""Shared test helpers of this project (not fixtures: those are in conftest.py files, which no
test imports). The scripted browser for the emulator's pages comes from the emulator's own
testing module, as any other project's tests would use it."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from entra_emulator.directory import DEFAULT_DIRECTORY
from entra_emulator.server import EmulatorServer
from entra_emulator.testing import SignInError, SignInResult, browser_sign_in

__all__ = ["SignInError", "SignInResult", "browser_sign_in"]

DEFAULT_PASSWORD = "Passw0rd!"


ADELE = "AdeleV@contoso.onmicrosoft.com"


MEGAN = "MeganB@contoso.onmicrosoft.com"


def make_certificate() -> tuple[str, str, x509.Certificate]:
    """(private key PEM, certificate PEM, certificate): a client certificate credential."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cert-app")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return key_pem, cert.public_bytes(serialization.Encoding.PEM).decode(), cert


def default_directory_document() -> dict[str, Any]:
    """The packaged default directory as a dict, for tests that add to it."""
    document = json.loads(DEFAULT_DIRECTORY.read_text())
    # Photos are relative to the directory file; make them absolute for copies elsewhere.
    for user in document["users"]:
        if "photo" in user:
            user["photo"] = str(DEFAULT_DIRECTORY.parent / user["photo"])
    return document


SHORT_ACCESS_TOKEN = {"accessToken": 60, "refreshToken": 3600}


def issuer_of(emu: EmulatorServer) -> str:
    return f"{emu.authority}/v2.0"


def params_of(location: str) -> dict[str, str]:
    """The parameters of an authorization response URL (query or fragment)."""
    parts = urlsplit(location)
    return dict(parse_qsl(parts.fragment or parts.query))


@dataclass(frozen=True)
class WebApp:
    client_id: str
    client_secret: str
    redirect_uri: str
    post_logout_redirect_uri: str


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge)."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def authorize_url(emu: EmulatorServer, client_id: str, *, tenant: str | None = None,
                  **params: str) -> str:
    query = {"client_id": client_id, "response_type": "code",
             "scope": "User.Read offline_access openid profile", **params}
    return f"{emu.http_base}/{tenant or emu.tenant_id}/oauth2/v2.0/authorize?{urlencode(query)}"


def token_url(emu: EmulatorServer, tenant: str | None = None) -> str:
    return f"{emu.https_base}/{tenant or emu.tenant_id}/oauth2/v2.0/token"


def decode_jwt(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(header, claims) without verification, for asserting on token contents."""
    def part(index: int) -> dict[str, Any]:
        segment = token.split(".")[index]
        return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    return part(0), part(1)


@dataclass
class CodeGrant:
    """A sign-in that ended with a code, and what redeeming it needs."""

    result: SignInResult
    verifier: str
    redirect_uri: str
    nonce: str

    @property
    def code(self) -> str:
        return self.result.params["code"]


def sign_in_for_code(emu: EmulatorServer, app: WebApp, username: str = ADELE, *,
                     password: str = DEFAULT_PASSWORD, session: requests.Session | None = None,
                     **params: str) -> CodeGrant:
    """Authorize with PKCE S256 and a nonce, sign in through the pages, return the code."""
    verifier, challenge = pkce_pair()
    nonce = secrets.token_hex(16)
    query = {"redirect_uri": app.redirect_uri, "code_challenge": challenge,
             "code_challenge_method": "S256", "nonce": nonce, "state": secrets.token_hex(8),
             "client_info": "1", **params}
    result = browser_sign_in(authorize_url(emu, app.client_id, **query), username, password,
                             session=session)
    assert "code" in result.params, result.params
    return CodeGrant(result=result, verifier=verifier, redirect_uri=query["redirect_uri"],
                     nonce=nonce)


def redeem_code(emu: EmulatorServer, app: WebApp, grant: CodeGrant,
                **overrides: str | None) -> requests.Response:
    """POST the code to the token endpoint as MSAL does; overrides replace (None removes)."""
    data: dict[str, str | None] = {
        "client_id": app.client_id, "grant_type": "authorization_code", "client_info": "1",
        "client_secret": app.client_secret, "code_verifier": grant.verifier,
        "code": grant.code, "redirect_uri": grant.redirect_uri,
        "scope": "User.Read offline_access openid profile", **overrides}
    return requests.post(token_url(emu), data={k: v for k, v in data.items() if v is not None},
                         verify=emu.ca_bundle)


def refresh(emu: EmulatorServer, app: WebApp, refresh_token: str,
            **overrides: str | None) -> requests.Response:
    data: dict[str, str | None] = {
        "client_id": app.client_id, "grant_type": "refresh_token", "client_info": "1",
        "client_secret": app.client_secret, "refresh_token": refresh_token,
        "scope": "User.Read offline_access openid profile", **overrides}
    return requests.post(token_url(emu), data={k: v for k, v in data.items() if v is not None},
                         verify=emu.ca_bundle)


def assert_entra_error(response: requests.Response, status: int, error: str,
                       code: int) -> dict[str, Any]:
    """Entra's error body: {error, error_description "AADSTSnnnn: …", error_codes, timestamp,
    trace_id, correlation_id} with the expected status."""
    body = response.json()
    assert response.status_code == status, body
    assert body["error"] == error, body
    assert body["error_codes"] == [code], body
    assert body["error_description"].startswith(f"AADSTS{code}: "), body
    assert f"Trace ID: {body['trace_id']}" in body["error_description"]
    assert {"timestamp", "trace_id", "correlation_id"} <= set(body)
    return body


def get_me(emu: EmulatorServer, token: str) -> requests.Response:
    """GET the emulator's Graph /v1.0/me with a bearer token."""
    return requests.get(emu.graph_me_url, headers={"Authorization": f"Bearer {token}"},
                        verify=emu.ca_bundle, timeout=10)
