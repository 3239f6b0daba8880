"""OpenID discovery documents (v2, and the v1 one `identity` reads at logout) and the JWKS.

Shapes follow real Entra captures (entra-protocol.md §1.1, §1.6). The browser-facing
endpoints (authorize, logout) use the plain-http base so a browser shows no certificate
warning; everything MSAL calls uses https.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response

from entra_emulator.context import (
    current_state,
    is_tenant_alias,
    tenant_id_for,
)
from entra_emulator.errors import EntraError, error_body, json_response

bp = Blueprint("discovery", __name__)

ISSUER_TEMPLATE_TENANT = "{tenantid}"


def _endpoint_segment(segment: str, tenant_id: str) -> str:
    # Entra answers a domain-named request with GUID endpoints; common stays common.
    return segment if is_tenant_alias(segment) else tenant_id


def v2_configuration(segment: str, tenant_id: str) -> dict[str, Any]:
    state = current_state()
    path = _endpoint_segment(segment, tenant_id)
    issuer_tenant = ISSUER_TEMPLATE_TENANT if is_tenant_alias(segment) else tenant_id
    secure, browser = f"{state.https_base}/{path}", f"{state.http_base}/{path}"
    document = {
        "token_endpoint": f"{secure}/oauth2/v2.0/token",
        "token_endpoint_auth_methods_supported": [
            "client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": f"{secure}/discovery/v2.0/keys",
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": f"{state.https_base}/{issuer_tenant}/v2.0",
        "request_uri_parameter_supported": False,
        "authorization_endpoint": f"{browser}/oauth2/v2.0/authorize",
        "device_authorization_endpoint": f"{secure}/oauth2/v2.0/devicecode",   # device_code.py
        "http_logout_supported": True,
        "frontchannel_logout_supported": True,
        "end_session_endpoint": f"{browser}/oauth2/v2.0/logout",
        "claims_supported": [
            "sub", "iss", "cloud_instance_name", "cloud_instance_host_name",
            "cloud_graph_host_name", "msgraph_host", "aud", "exp", "iat", "auth_time", "acr",
            "nonce", "preferred_username", "name", "tid", "ver", "at_hash", "c_hash", "email"],
        "tenant_region_scope": None if is_tenant_alias(segment) else "NA",
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
        "rbac_url": "https://pas.windows.net",
    }
    if current_state().defects.authorization_response_iss:  # RFC 9207, EmulatorConfig
        # RFC 9207 §3: the promise that lets an app refuse a response without `iss`.
        document["authorization_response_iss_parameter_supported"] = True
    return document


def v1_configuration(segment: str, tenant_id: str) -> dict[str, Any]:
    state = current_state()
    path = _endpoint_segment(segment, tenant_id)
    issuer_tenant = ISSUER_TEMPLATE_TENANT if is_tenant_alias(segment) else tenant_id
    secure, browser = f"{state.https_base}/{path}", f"{state.http_base}/{path}"
    return {
        "token_endpoint": f"{secure}/oauth2/token",
        "token_endpoint_auth_methods_supported": [
            "client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": f"{state.https_base}/common/discovery/keys",
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "token id_token",
                                     "token"],
        "scopes_supported": ["openid"],
        "issuer": state.v1_issuer(issuer_tenant),
        "microsoft_multi_refresh_token": True,
        "authorization_endpoint": f"{browser}/oauth2/authorize",
        "http_logout_supported": True,
        "frontchannel_logout_supported": True,
        "end_session_endpoint": f"{browser}/oauth2/logout",
        "claims_supported": [
            "sub", "iss", "cloud_instance_name", "cloud_instance_host_name",
            "cloud_graph_host_name", "msgraph_host", "aud", "exp", "iat", "auth_time", "acr",
            "amr", "nonce", "email", "given_name", "family_name", "nickname"],
        "tenant_region_scope": None if is_tenant_alias(segment) else "NA",
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
        "rbac_url": "https://pas.windows.net",
    }


def _metadata_response(body: dict[str, Any]) -> Response:
    response = json_response(body, no_store=False)
    response.headers["Cache-Control"] = "max-age=86400, private"
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.headers["Access-Control-Allow-Methods"] = "GET, OPTIONS"
    return response


@bp.errorhandler(EntraError)
def _metadata_error(err: EntraError) -> Response:
    body = error_body(err)
    if err.code == 90002:
        body["error"] = "invalid_tenant"   # what Entra's metadata endpoints answer
    return json_response(body, status=err.status, no_store=False)


@bp.get("/<tenant>/v2.0/.well-known/openid-configuration")
def openid_configuration_v2(tenant: str) -> Response:
    return _metadata_response(v2_configuration(tenant, tenant_id_for(tenant)))


@bp.get("/<tenant>/.well-known/openid-configuration")
def openid_configuration_v1(tenant: str) -> Response:
    return _metadata_response(v1_configuration(tenant, tenant_id_for(tenant)))


@bp.get("/<tenant>/discovery/v2.0/keys")
def keys_v2(tenant: str) -> Response:
    tenant_id = tenant_id_for(tenant)
    issuer_tenant = ISSUER_TEMPLATE_TENANT if is_tenant_alias(tenant) else tenant_id
    state = current_state()
    return _metadata_response(state.keys.jwks(f"{state.https_base}/{issuer_tenant}/v2.0"))


@bp.get("/<tenant>/discovery/keys")
def keys_v1(tenant: str) -> Response:
    tenant_id = tenant_id_for(tenant)
    issuer_tenant = ISSUER_TEMPLATE_TENANT if is_tenant_alias(tenant) else tenant_id
    state = current_state()
    return _metadata_response(state.keys.jwks(state.v1_issuer(issuer_tenant)))
