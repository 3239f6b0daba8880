"""Discovery documents (v2, v1) and the JWKS, for every way of naming the tenant."""

from __future__ import annotations

import base64
import hashlib

import msal
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support import assert_entra_error


def get(emu, path: str) -> requests.Response:
    return requests.get(f"{emu.https_base}{path}", verify=emu.ca_bundle)


def b64url_int(value: str) -> int:
    return int.from_bytes(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)), "big")


def test_v2_document_for_the_tenant_guid(emulator):
    response = get(emulator, f"/{emulator.tenant_id}/v2.0/.well-known/openid-configuration")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "max-age=86400, private"
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    doc = response.json()
    tid = emulator.tenant_id
    assert doc["issuer"] == f"{emulator.https_base}/{tid}/v2.0"
    # Browser-facing endpoints are plain http; what MSAL calls is https.
    assert doc["authorization_endpoint"] == f"{emulator.http_base}/{tid}/oauth2/v2.0/authorize"
    assert doc["end_session_endpoint"] == f"{emulator.http_base}/{tid}/oauth2/v2.0/logout"
    assert doc["token_endpoint"] == f"{emulator.https_base}/{tid}/oauth2/v2.0/token"
    assert doc["jwks_uri"] == f"{emulator.https_base}/{tid}/discovery/v2.0/keys"
    assert doc["response_modes_supported"] == ["query", "fragment", "form_post"]
    assert doc["id_token_signing_alg_values_supported"] == ["RS256"]
    assert doc["tenant_region_scope"] == "NA"


def test_v2_document_by_domain_answers_with_guid_endpoints(emulator):
    doc = get(emulator, "/contoso.onmicrosoft.com/v2.0/.well-known/openid-configuration").json()
    assert doc["issuer"] == f"{emulator.https_base}/{emulator.tenant_id}/v2.0"
    assert f"/{emulator.tenant_id}/oauth2/v2.0/token" in doc["token_endpoint"]


@pytest.mark.parametrize("alias", ["common", "organizations"])
def test_v2_document_for_common_keeps_the_issuer_template(emulator, alias):
    doc = get(emulator, f"/{alias}/v2.0/.well-known/openid-configuration").json()
    assert doc["issuer"] == f"{emulator.https_base}/{{tenantid}}/v2.0"
    assert doc["token_endpoint"] == f"{emulator.https_base}/{alias}/oauth2/v2.0/token"
    assert doc["tenant_region_scope"] is None


def test_v1_document_has_the_v1_logout_endpoint(emulator):
    doc = get(emulator, f"/{emulator.tenant_id}/.well-known/openid-configuration").json()
    assert doc["issuer"] == f"https://sts.windows.net/{emulator.tenant_id}/"
    assert doc["end_session_endpoint"] == \
        f"{emulator.http_base}/{emulator.tenant_id}/oauth2/logout"
    assert doc["microsoft_multi_refresh_token"] is True


@pytest.mark.parametrize("path", [
    "/fabrikam.com/v2.0/.well-known/openid-configuration",
    "/fabrikam.com/.well-known/openid-configuration",
    "/11111111-2222-3333-4444-555555555555/discovery/v2.0/keys",
])
def test_unknown_tenant(emulator, path):
    assert_entra_error(get(emulator, path), 400, "invalid_tenant", 90002)


def test_jwks_in_entras_shape(emulator):
    keys = get(emulator, f"/{emulator.tenant_id}/discovery/v2.0/keys").json()["keys"]
    assert keys
    assert len({key["kid"] for key in keys}) == len(keys)
    for key in keys:
        assert key["kty"] == "RSA" and key["use"] == "sig" and key["e"] == "AQAB"
        assert key["kid"] == key["x5t"]
        der = base64.b64decode(key["x5c"][0])
        thumbprint = base64.urlsafe_b64encode(hashlib.sha1(der).digest()).rstrip(b"=").decode()
        assert key["kid"] == thumbprint
        public_key = x509.load_der_x509_certificate(der).public_key()
        assert isinstance(public_key, rsa.RSAPublicKey)
        assert public_key.public_numbers().n == b64url_int(key["n"])
        assert key["issuer"] == f"{emulator.https_base}/{emulator.tenant_id}/v2.0"
    common = get(emulator, "/common/discovery/v2.0/keys").json()["keys"]
    assert common[0]["issuer"] == f"{emulator.https_base}/{{tenantid}}/v2.0"


def test_msal_accepts_a_domain_authority(emulator, default_app):
    app = msal.ConfidentialClientApplication(
        default_app.client_id, client_credential=default_app.client_secret,
        authority=f"{emulator.https_base}/contoso.onmicrosoft.com", instance_discovery=False,
        verify=emulator.ca_bundle)
    result = app.acquire_token_for_client(["https://graph.microsoft.com/.default"])
    assert "access_token" in result, result


def test_discovery_is_not_served_on_plain_http(emulator):
    response = requests.get(
        f"{emulator.http_base}/{emulator.tenant_id}/v2.0/.well-known/openid-configuration")
    assert response.status_code == 404


def test_unknown_path_is_a_plain_404_not_a_stack_trace(emulator):
    response = get(emulator, "/no/such/thing")
    assert response.status_code == 404
    assert "Traceback" not in response.text
