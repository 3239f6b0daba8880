"""Graph /v1.0/me and /me/photo over real TLS, with tokens from the emulator's real flows."""

from __future__ import annotations

import base64
import json
import re
import uuid
from typing import Any

import pytest
import requests

from entra_emulator.directory import DEFAULT_DIRECTORY
from tests.emulator.authz_support import sign_in_with_msal, web_msal_app
from tests.support import ADELE, DEFAULT_PASSWORD, MEGAN, decode_jwt

GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
DEFAULT_KEYS = ["@odata.context", "businessPhones", "displayName", "givenName", "jobTitle",
                "mail", "mobilePhone", "officeLocation", "preferredLanguage", "surname",
                "userPrincipalName", "id"]
ALEX = "AlexW@contoso.onmicrosoft.com"   # no photo, mobilePhone null in the default directory
GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def delegated_access_token(emu: Any, default_app: Any, username: str) -> str:
    """Auth code flow with unmodified MSAL through the emulator's sign-in pages."""
    result = sign_in_with_msal(web_msal_app(emu, default_app), default_app.redirect_uri,
                               username, ["User.Read"])
    assert "access_token" in result, result
    return result["access_token"]


@pytest.fixture(scope="module")
def adele_token(emulator: Any, default_app: Any) -> str:
    return delegated_access_token(emulator, default_app, ADELE)


@pytest.fixture(scope="module")
def alex_token(emulator: Any, default_app: Any) -> str:
    return delegated_access_token(emulator, default_app, ALEX)


def graph_get(emu: Any, path: str, token: str | None, **headers: str) -> requests.Response:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return requests.get(f"{emu.https_base}{path}", headers=headers, verify=emu.ca_bundle)


def resign(emu: Any, token: str, **changes: Any) -> str:
    """The same token re-signed by the emulator's own current key, with claims changed."""
    header, claims = decode_jwt(token)
    claims.update(changes)
    extra = {name: value for name, value in header.items() if name not in ("typ", "alg", "kid")}
    return emu.keys.sign(claims, headers=extra)


def assert_graph_error(response: requests.Response, status: int, code: str,
                       message: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert (error["code"], error["message"]) == (code, message)
    inner = error["innerError"]
    assert set(inner) == {"date", "request-id", "client-request-id"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", inner["date"])
    assert inner["request-id"] == response.headers["request-id"]
    assert GUID.match(inner["request-id"])
    assert inner["client-request-id"] == response.headers["client-request-id"]
    return error


def assert_invalid_token(response: requests.Response, emu: Any, message: str) -> None:
    assert_graph_error(response, 401, "InvalidAuthenticationToken", message)
    assert response.headers["WWW-Authenticate"] == (
        f'Bearer realm="", authorization_uri="{emu.http_base}/common/oauth2/authorize", '
        f'client_id="{GRAPH_APP_ID}"')


# ---------------------------------------------------------------------------------------------
# GET /v1.0/me
# ---------------------------------------------------------------------------------------------

def test_me_returns_the_default_properties_in_graph_order(emulator, adele_token):
    response = graph_get(emulator, "/v1.0/me", adele_token)

    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith(
        "application/json;odata.metadata=minimal")
    body = response.json()
    assert list(body) == DEFAULT_KEYS
    adele = emulator.directory.user_by_username(ADELE)
    assert body["@odata.context"] == f"{emulator.https_base}/v1.0/$metadata#users/$entity"
    assert body == {"@odata.context": body["@odata.context"],
                    **{key: adele.graph.get(key) for key in DEFAULT_KEYS[1:]}}
    assert body["id"] == adele.id and body["displayName"] == "Adele Vance"
    assert "department" not in body and "passwordProfile" not in body and "photo" not in body
    assert GUID.match(response.headers["request-id"])
    assert response.headers["client-request-id"] == response.headers["request-id"]


def test_me_keeps_null_properties_as_null(emulator, alex_token):
    body = graph_get(emulator, "/v1.0/me", alex_token).json()
    assert list(body) == DEFAULT_KEYS
    assert body["mobilePhone"] is None
    assert body["userPrincipalName"] == ALEX


def test_me_echoes_the_callers_client_request_id(emulator, adele_token):
    sent = str(uuid.uuid4())
    response = graph_get(emulator, "/v1.0/me", adele_token, **{"client-request-id": sent})
    assert response.headers["client-request-id"] == sent
    assert response.headers["request-id"] != sent


def test_select_returns_only_the_named_properties_in_the_asked_order(emulator, adele_token):
    response = graph_get(emulator, "/v1.0/me?$select=department,displayName,id,postalCode",
                         adele_token)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body == {
        "@odata.context": f"{emulator.https_base}/v1.0/$metadata"
                          "#users(department,displayName,id,postalCode)/$entity",
        "department": "Retail", "displayName": "Adele Vance",
        "id": emulator.directory.user_by_username(ADELE).id, "postalCode": None}
    assert list(body) == ["@odata.context", "department", "displayName", "id", "postalCode"]


def test_select_matches_names_case_insensitively_and_never_reveals_the_password(
        emulator, adele_token):
    body = graph_get(emulator, "/v1.0/me?$select=DISPLAYNAME, passwordprofile,otherMails",
                     adele_token).json()
    assert body["@odata.context"].endswith("#users(displayName,passwordProfile,otherMails)"
                                           "/$entity")
    assert body["displayName"] == "Adele Vance"
    assert body["passwordProfile"] is None
    assert body["otherMails"] == []
    assert DEFAULT_PASSWORD not in graph_get(emulator, "/v1.0/me?$select=passwordProfile",
                                             adele_token).text


def test_select_of_an_unknown_property_is_graphs_400(emulator, adele_token):
    response = graph_get(emulator, "/v1.0/me?$select=displayName,shoeSize", adele_token)
    assert_graph_error(response, 400, "BadRequest",
                       "Could not find a property named 'shoeSize' on type "
                       "'microsoft.graph.user'.")


# ---------------------------------------------------------------------------------------------
# Photos
# ---------------------------------------------------------------------------------------------

def test_photo_value_is_the_users_image(emulator, adele_token):
    response = graph_get(emulator, "/v1.0/me/photo/$value", adele_token)

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/png"
    expected = (DEFAULT_DIRECTORY.parent / "photos" / "AdeleV.png").read_bytes()
    assert response.content == expected
    assert GUID.match(response.headers["request-id"])


def test_photo_metadata_describes_the_image(emulator, adele_token):
    response = graph_get(emulator, "/v1.0/me/photo", adele_token)

    assert response.status_code == 200, response.text
    body = response.json()
    adele_id = emulator.directory.user_by_username(ADELE).id
    png = (DEFAULT_DIRECTORY.parent / "photos" / "AdeleV.png").read_bytes()
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert body == {
        "@odata.context": f"{emulator.https_base}/v1.0/$metadata#users('{adele_id}')"
                          "/photo/$entity",
        "@odata.mediaContentType": "image/png",
        "@odata.mediaEtag": body["@odata.mediaEtag"],
        "id": f"{width}X{height}", "height": height, "width": width}


@pytest.mark.parametrize("path", ["/v1.0/me/photo/$value", "/v1.0/me/photo"])
def test_no_photo_is_image_not_found(emulator, alex_token, path):
    assert_graph_error(graph_get(emulator, path, alex_token), 404, "ImageNotFound",
                       "Exception of type 'Microsoft.Fast.Profile.Core.Exception."
                       "ImageNotFoundException' was thrown.")


def test_photo_needs_a_valid_token_too(emulator):
    assert_invalid_token(graph_get(emulator, "/v1.0/me/photo/$value", None), emulator,
                         "Access token is empty.")


# ---------------------------------------------------------------------------------------------
# Bearer token validation
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("authorization", [None, "", "Bearer", "Bearer   ", "Basic abc"])
def test_missing_token_is_401_access_token_is_empty(emulator, authorization):
    headers = {} if authorization is None else {"Authorization": authorization}
    response = requests.get(emulator.graph_me_url, headers=headers, verify=emulator.ca_bundle)
    assert_invalid_token(response, emulator, "Access token is empty.")


@pytest.mark.parametrize("token", ["not-a-jwt", "1.AXkAopaque", "a.b.c", "eyJ9.eyJ9.x"])
def test_garbage_token_is_401_compact_token_parsing_failed(emulator, token):
    assert_invalid_token(graph_get(emulator, "/v1.0/me", token), emulator,
                         "CompactToken parsing failed with error code: 80049217")


def test_tampered_signature_is_401_validation_failure(emulator, adele_token):
    head, body, signature = adele_token.split(".")
    flipped = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]
    assert_invalid_token(graph_get(emulator, "/v1.0/me", f"{head}.{body}.{flipped}"),
                         emulator, "Access token validation failure.")


def test_tampered_claims_are_401_validation_failure(emulator, adele_token):
    head, body, signature = adele_token.split(".")
    _, claims = decode_jwt(adele_token)
    claims["scp"] = claims["scp"] + " Directory.ReadWrite.All"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    assert_invalid_token(graph_get(emulator, "/v1.0/me", f"{head}.{forged}.{signature}"),
                         emulator, "Access token validation failure.")


def test_unsigned_token_is_401_validation_failure(emulator, adele_token):
    head, body, _ = adele_token.split(".")
    none_header = base64.urlsafe_b64encode(b'{"typ":"JWT","alg":"none"}').rstrip(b"=").decode()
    assert_invalid_token(graph_get(emulator, "/v1.0/me", f"{none_header}.{body}."),
                         emulator, "Access token validation failure.")


def test_token_signed_by_an_unpublished_key_is_401(emulator, adele_token):
    _, claims = decode_jwt(adele_token)
    token = emulator.keys.sign(claims, key=emulator.keys.unpublished_key())
    assert_invalid_token(graph_get(emulator, "/v1.0/me", token), emulator,
                         "Access token validation failure.")


def test_token_for_another_audience_is_401_invalid_audience(emulator, default_app,
                                                            adele_token):
    token = resign(emulator, adele_token, aud=default_app.client_id)
    assert_invalid_token(graph_get(emulator, "/v1.0/me", token), emulator,
                         "Access token validation failure. Invalid audience.")


def test_both_graph_audience_forms_are_accepted(emulator, adele_token):
    for audience in (GRAPH_APP_ID, "https://graph.microsoft.com"):
        token = resign(emulator, adele_token, aud=audience)
        assert graph_get(emulator, "/v1.0/me", token).status_code == 200


def test_expired_token_is_401_lifetime_validation_failed(emulator, adele_token):
    _, claims = decode_jwt(adele_token)
    # Within Graph's 5-minute clock skew the token is still good...
    emulator.clock.advance(claims["exp"] - emulator.clock.now() + 200)
    assert graph_get(emulator, "/v1.0/me", adele_token).status_code == 200
    # ...and beyond it, refused.
    emulator.clock.advance(200)
    assert_invalid_token(graph_get(emulator, "/v1.0/me", adele_token), emulator,
                         "Lifetime validation failed, the token is expired.")


def test_token_not_yet_valid_is_401(emulator, adele_token):
    _, claims = decode_jwt(adele_token)
    token = resign(emulator, adele_token, nbf=claims["nbf"] + 3600, iat=claims["iat"] + 3600)
    assert_invalid_token(graph_get(emulator, "/v1.0/me", token), emulator,
                         "Access token has expired or is not yet valid.")


def test_token_without_user_read_is_403_authorization_request_denied(emulator, adele_token):
    token = resign(emulator, adele_token, scp="openid profile Mail.Read")
    assert_graph_error(graph_get(emulator, "/v1.0/me", token), 403,
                       "Authorization_RequestDenied",
                       "Insufficient privileges to complete the operation.")


def test_scope_names_compare_case_insensitively(emulator, adele_token):
    token = resign(emulator, adele_token, scp="openid USER.READ")
    assert graph_get(emulator, "/v1.0/me", token).status_code == 200


def test_app_only_token_on_me_is_400(emulator, default_app):
    result = web_msal_app(emulator, default_app).acquire_token_for_client(
        ["https://graph.microsoft.com/.default"])
    assert "access_token" in result, result
    assert_graph_error(graph_get(emulator, "/v1.0/me", result["access_token"]), 400,
                       "BadRequest",
                       "/me request is only valid with delegated authentication flow.")


def test_token_for_a_user_no_longer_in_the_directory_is_404(emulator, adele_token):
    missing = str(uuid.uuid4())
    token = resign(emulator, adele_token, oid=missing)
    assert_graph_error(graph_get(emulator, "/v1.0/me", token), 404, "Request_ResourceNotFound",
                       f"Resource '{missing}' does not exist or one of its queried "
                       "reference-property objects are not present.")


def test_token_from_another_tenant_is_401(emulator, adele_token):
    token = resign(emulator, adele_token, tid=str(uuid.uuid4()))
    assert_invalid_token(graph_get(emulator, "/v1.0/me", token), emulator,
                         "Access token validation failure. Invalid issuer.")


def test_megan_sees_her_own_profile(emulator, default_app):
    token = delegated_access_token(emulator, default_app, MEGAN)
    body = graph_get(emulator, "/v1.0/me", token).json()
    assert body["userPrincipalName"] == MEGAN
    assert body["jobTitle"] == "Auditor"


# ---------------------------------------------------------------------------------------------
# Requests this Graph cannot route
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("path", "segment"), [
    ("/v1.0/users", "users"), ("/v1.0/me/messages", "messages"),
    ("/v1.0/me/photo/$value/extra", "extra"), ("/v1.0/me/photos/48x48/$value", "photos"),
])
def test_unknown_resource_is_graphs_400(emulator, adele_token, path, segment):
    assert_graph_error(graph_get(emulator, path, adele_token), 400, "BadRequest",
                       f"Resource not found for the segment '{segment}'.")


def test_unsupported_method_on_me_is_405_in_graphs_shape(emulator, adele_token):
    response = requests.patch(emulator.graph_me_url, json={"jobTitle": "CEO"},
                              headers={"Authorization": f"Bearer {adele_token}"},
                              verify=emulator.ca_bundle)
    assert_graph_error(response, 405, "Request_BadRequest",
                       "Specified HTTP method is not allowed for the request target.")


def test_trailing_slash_and_unprefixed_select_work_as_on_graph(emulator, adele_token):
    assert graph_get(emulator, "/v1.0/me/", adele_token).status_code == 200
    body = graph_get(emulator, "/v1.0/me?select=mail", adele_token).json()
    assert list(body) == ["@odata.context", "mail"]
