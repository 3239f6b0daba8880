"""Unmodified MSAL Python against the emulator over real TLS."""

from __future__ import annotations

import datetime as dt
from typing import Any

import msal
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from tests.support import (
    ADELE,
    DEFAULT_PASSWORD,
    MEGAN,
    browser_sign_in,
    decode_jwt,
    default_directory_document,
    make_certificate,
)

SCOPES = ["User.Read"]


def confidential_app(emu: Any, client_id: str,
                     credential: Any) -> msal.ConfidentialClientApplication:
    return msal.ConfidentialClientApplication(
        client_id, client_credential=credential, authority=emu.authority,
        instance_discovery=False, verify=emu.ca_bundle, token_cache=msal.TokenCache())


def sign_in_with_msal(emu: Any, app: msal.ConfidentialClientApplication, redirect_uri: str,
                      username: str, **flow_options: Any) -> dict[str, Any]:
    flow = app.initiate_auth_code_flow(SCOPES, redirect_uri=redirect_uri, **flow_options)
    result = browser_sign_in(flow["auth_uri"], username, DEFAULT_PASSWORD)
    return app.acquire_token_by_auth_code_flow(flow, result.params)


def test_auth_code_flow_then_silent_refresh_and_graph(emulator, default_app):
    app = confidential_app(emulator, default_app.client_id, default_app.client_secret)
    result = sign_in_with_msal(emulator, app, default_app.redirect_uri, ADELE)

    assert "error" not in result, result
    assert result["scope"].split() == ["User.Read", "openid", "profile"]
    assert 3600 <= result["expires_in"] <= 5400
    claims = result["id_token_claims"]
    assert claims["preferred_username"] == ADELE
    assert claims["aud"] == default_app.client_id
    assert claims["iss"] == f"{emulator.authority}/v2.0"
    user_id = emulator.directory.user_by_username(ADELE).id
    assert claims["oid"] == user_id
    # client_info was returned, so MSAL keys the account as Entra does: "{oid}.{tid}".
    [account] = app.get_accounts(username=ADELE)
    assert account["home_account_id"] == f"{user_id}.{emulator.tenant_id}"

    me = requests.get(emulator.graph_me_url, verify=emulator.ca_bundle,
                      headers={"Authorization": f"Bearer {result['access_token']}"})
    assert me.status_code == 200, me.text
    assert me.json()["userPrincipalName"] == ADELE

    # A cached access token is served from the cache; force_refresh uses the refresh token.
    cached = app.acquire_token_silent(SCOPES, account=account)
    assert cached["access_token"] == result["access_token"]
    refreshed = app.acquire_token_silent(SCOPES, account=account, force_refresh=True)
    assert "error" not in refreshed, refreshed
    assert refreshed["access_token"] != result["access_token"]
    assert refreshed["id_token_claims"]["oid"] == user_id


def test_refresh_asking_only_for_oidc_scopes_as_identity_does(emulator, default_app):
    app = confidential_app(emulator, default_app.client_id, default_app.client_secret)
    result = sign_in_with_msal(emulator, app, default_app.redirect_uri, ADELE)
    refresh_token = result["refresh_token"]
    refreshed = app.acquire_token_by_refresh_token(refresh_token, scopes=[])
    assert "error" not in refreshed, refreshed
    assert {"access_token", "refresh_token", "id_token"} <= set(refreshed)
    assert "offline_access" not in refreshed["scope"].split()


def test_max_age_gives_auth_time_msal_accepts(emulator, default_app):
    app = confidential_app(emulator, default_app.client_id, default_app.client_secret)
    result = sign_in_with_msal(emulator, app, default_app.redirect_uri, MEGAN, max_age=60)
    assert "error" not in result, result
    assert abs(result["id_token_claims"]["auth_time"] - dt.datetime.now().timestamp()) < 60


def test_wrong_secret_is_reported_to_msal(emulator, default_app):
    app = confidential_app(emulator, default_app.client_id, "not-the-secret")
    result = app.acquire_token_for_client(["https://graph.microsoft.com/.default"])
    assert result["error"] == "invalid_client"
    assert result["error_codes"] == [7000215]


def test_client_credentials(emulator, default_app):
    app = confidential_app(emulator, default_app.client_id, default_app.client_secret)
    result = app.acquire_token_for_client(["https://graph.microsoft.com/.default"])
    assert "error" not in result, result
    assert {"refresh_token", "id_token", "scope"}.isdisjoint(result)
    claims = decode_jwt(result["access_token"])[1]
    assert claims["idtyp"] == "app" and claims["appid"] == default_app.client_id
    assert claims["aud"] == "00000003-0000-0000-c000-000000000000"
    # Served from MSAL's cache the second time.
    again = app.acquire_token_for_client(["https://graph.microsoft.com/.default"])
    assert again["access_token"] == result["access_token"]


# ---------------------------------------------------------------------------------------------
# Certificate credentials
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def certificate() -> tuple[str, str, x509.Certificate]:
    return make_certificate()


@pytest.fixture
def cert_emulator(start_emulator, certificate):
    import base64

    _, _, cert = certificate
    document = default_directory_document()
    document["applications"].append({
        "appId": "7d3a1f26-52b1-4f0c-9a53-0f7f1c2d6e01",
        "displayName": "cert-daemon",
        "web": {"redirectUris": ["http://localhost:5000/getAToken"]},
        "keyCredentials": [{
            "keyId": "0c2d6e01-7d3a-4f0c-9a53-52b11f260f7f",
            "type": "AsymmetricX509Cert", "usage": "Verify",
            "customKeyIdentifier": base64.b64encode(cert.fingerprint(hashes.SHA1())).decode(),
            "key": base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode(),
        }],
    })
    return start_emulator(document)


def test_certificate_credential_ps256_with_public_certificate(cert_emulator, certificate):
    key_pem, cert_pem, _ = certificate
    app = confidential_app(cert_emulator, "7d3a1f26-52b1-4f0c-9a53-0f7f1c2d6e01",
                           {"private_key": key_pem, "public_certificate": cert_pem})
    result = app.acquire_token_for_client(["https://graph.microsoft.com/.default"])
    assert "error" not in result, result
    assert decode_jwt(result["access_token"])[1]["appidacr"] == "2"


def test_certificate_credential_rs256_with_sha1_thumbprint(cert_emulator, certificate):
    key_pem, _, cert = certificate
    app = confidential_app(cert_emulator, "7d3a1f26-52b1-4f0c-9a53-0f7f1c2d6e01",
                           {"private_key": key_pem,
                            "thumbprint": cert.fingerprint(hashes.SHA1()).hex()})
    result = app.acquire_token_for_client(["https://graph.microsoft.com/.default"])
    assert "error" not in result, result


def test_certificate_credential_sign_in_with_auth_code(cert_emulator, certificate):
    key_pem, cert_pem, _ = certificate
    app = confidential_app(cert_emulator, "7d3a1f26-52b1-4f0c-9a53-0f7f1c2d6e01",
                           {"private_key": key_pem, "public_certificate": cert_pem})
    result = sign_in_with_msal(cert_emulator, app, "http://localhost:5000/getAToken", ADELE)
    assert "error" not in result, result
    assert result["id_token_claims"]["aud"] == "7d3a1f26-52b1-4f0c-9a53-0f7f1c2d6e01"


def test_unregistered_certificate_is_refused(cert_emulator):
    other_key, other_cert, _ = make_certificate()
    app = confidential_app(cert_emulator, "7d3a1f26-52b1-4f0c-9a53-0f7f1c2d6e01",
                           {"private_key": other_key, "public_certificate": other_cert})
    result = app.acquire_token_for_client(["https://graph.microsoft.com/.default"])
    assert result["error"] == "invalid_client"
    assert result["error_codes"] == [700027]
