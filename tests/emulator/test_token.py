"""The token endpoint: tokens as Entra issues them, and every error with Entra's status, error
and AADSTS code."""

from __future__ import annotations

import base64
import json
import shutil
import time
import uuid

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from entra_emulator.server import EmulatorServer
from tests.support import (
    ADELE,
    DEFAULT_PASSWORD,
    MEGAN,
    WebApp,
    assert_entra_error,
    authorize_url,
    browser_sign_in,
    decode_jwt,
    default_directory_document,
    make_certificate,
    redeem_code,
    refresh,
    sign_in_for_code,
    token_url,
)

GRAPH = "00000003-0000-0000-c000-000000000000"


def post_token(emu, data, **kwargs) -> requests.Response:
    return requests.post(token_url(emu, kwargs.pop("tenant", None)), data=data,
                         verify=emu.ca_bundle, **kwargs)


def client_credentials(app: WebApp, **overrides) -> dict[str, str]:
    data = {"client_id": app.client_id, "client_secret": app.client_secret,
            "grant_type": "client_credentials", "scope": "https://graph.microsoft.com/.default",
            **overrides}
    return {k: v for k, v in data.items() if v is not None}


# ---------------------------------------------------------------------------------------------
# Tokens
# ---------------------------------------------------------------------------------------------

def test_code_redemption_answers_as_entra(emulator, default_app):
    grant = sign_in_for_code(emulator, default_app, ADELE)
    response = redeem_code(emulator, default_app, grant)
    body = response.json()
    assert response.status_code == 200, body
    assert response.headers["Cache-Control"] == "no-store, no-cache"
    assert response.headers["Pragma"] == "no-cache"
    assert list(body) == ["token_type", "scope", "expires_in", "ext_expires_in", "access_token",
                          "refresh_token", "id_token", "client_info"]
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "User.Read openid profile"   # as requested, minus offline_access
    assert 3600 <= body["expires_in"] <= 5400 and body["ext_expires_in"] == body["expires_in"]


def test_id_token_claims_and_signature(emulator, default_app):
    grant = sign_in_for_code(emulator, default_app, ADELE)
    id_token = redeem_code(emulator, default_app, grant).json()["id_token"]
    header, claims = decode_jwt(id_token)
    assert list(header) == ["typ", "alg", "kid"] and header["alg"] == "RS256"
    adele = emulator.directory.user_by_username(ADELE)
    jwks = requests.get(f"{emulator.authority}/discovery/v2.0/keys").json()
    key = jwt.PyJWK(next(k for k in jwks["keys"] if k["kid"] == header["kid"]))
    verified = jwt.decode(id_token, key.key, algorithms=["RS256"],
                          audience=default_app.client_id, issuer=f"{emulator.authority}/v2.0")
    assert verified == claims
    assert claims["nonce"] == grant.nonce   # echoed unchanged
    assert claims["oid"] == adele.id and claims["tid"] == emulator.tenant_id
    assert claims["name"] == "Adele Vance" and claims["preferred_username"] == ADELE
    assert claims["ver"] == "2.0" and claims["exp"] - claims["iat"] == 3900
    assert claims["nbf"] == claims["iat"]
    assert len(claims["sub"]) == 43 and claims["sub"] != adele.id
    uuid.UUID(claims["sid"])
    assert len(claims["uti"]) == 22
    assert "auth_time" not in claims


def test_access_token_is_a_v1_graph_token(emulator, default_app):
    grant = sign_in_for_code(emulator, default_app, ADELE)
    access_token = redeem_code(emulator, default_app, grant).json()["access_token"]
    header, claims = decode_jwt(access_token)
    assert {"typ", "alg", "kid", "x5t", "nonce"} == set(header)
    assert header["kid"] == header["x5t"]
    assert claims["aud"] == GRAPH and claims["ver"] == "1.0"
    assert claims["iss"] == f"https://sts.windows.net/{emulator.tenant_id}/"
    assert claims["scp"].split() == ["openid", "profile", "User.Read"]
    assert claims["appid"] == default_app.client_id and claims["appidacr"] == "1"
    assert claims["upn"] == ADELE and claims["name"] == "Adele Vance"
    assert claims["oid"] == emulator.directory.user_by_username(ADELE).id
    public_key = emulator.keys.public_key_for(header["kid"])
    jwt.decode(access_token, public_key, algorithms=["RS256"], audience=GRAPH)


def test_pairwise_sub_differs_per_app_but_oid_does_not(two_app_emulator):
    emu, first, second = two_app_emulator
    tokens = [redeem_code(emu, app, sign_in_for_code(emu, app, MEGAN)).json()["id_token"]
              for app in (first, second)]
    claims = [decode_jwt(token)[1] for token in tokens]
    assert claims[0]["oid"] == claims[1]["oid"]
    assert claims[0]["sub"] != claims[1]["sub"]


def test_plain_pkce_works(emulator, default_app):
    verifier = "p" * 50
    grant = sign_in_for_code(emulator, default_app, ADELE, code_challenge=verifier,
                             code_challenge_method="plain")
    assert redeem_code(emulator, default_app, grant, code_verifier=verifier).status_code == 200


def test_pkce_without_method_means_plain(emulator, default_app):
    verifier = "q" * 43
    grant = sign_in_for_code(emulator, default_app, ADELE, code_challenge=verifier,
                             code_challenge_method="")
    assert redeem_code(emulator, default_app, grant, code_verifier=verifier).status_code == 200


def test_client_secret_basic(emulator, default_app):
    grant = sign_in_for_code(emulator, default_app, ADELE)
    basic = base64.b64encode(f"{default_app.client_id}:{default_app.client_secret}".encode())
    response = requests.post(token_url(emulator), verify=emulator.ca_bundle,
                             headers={"Authorization": f"Basic {basic.decode()}"},
                             data={"grant_type": "authorization_code", "code": grant.code,
                                   "redirect_uri": grant.redirect_uri,
                                   "code_verifier": grant.verifier})
    assert response.status_code == 200, response.text


def test_refresh_rotates_and_a_used_refresh_token_is_refused(emulator, default_app):
    first = redeem_code(emulator, default_app, sign_in_for_code(emulator, default_app)).json()
    second = refresh(emulator, default_app, first["refresh_token"])
    assert second.status_code == 200, second.text
    body = second.json()
    assert body["refresh_token"] != first["refresh_token"]
    assert body["scope"] == "User.Read openid profile"
    assert "nonce" not in decode_jwt(body["id_token"])[1]
    reused = refresh(emulator, default_app, first["refresh_token"])
    assert_entra_error(reused, 400, "invalid_grant", 70000)
    # Reuse means a copy leaked: the whole family is revoked, the newest token too.
    assert_entra_error(refresh(emulator, default_app, body["refresh_token"]), 400,
                       "invalid_grant", 70000)


def test_refresh_without_scope_keeps_the_grant(emulator, default_app):
    first = redeem_code(emulator, default_app, sign_in_for_code(emulator, default_app)).json()
    body = refresh(emulator, default_app, first["refresh_token"], scope=None).json()
    assert set(body["scope"].split()) == {"User.Read", "openid", "profile"}


def test_correlation_id_echoes_client_request_id(emulator, default_app):
    sent = str(uuid.uuid4())
    response = post_token(emulator, client_credentials(default_app, client_secret="wrong"),
                          headers={"client-request-id": sent})
    body = assert_entra_error(response, 401, "invalid_client", 7000215)
    assert body["correlation_id"] == sent
    assert response.headers["Cache-Control"] == "no-store, no-cache"


# ---------------------------------------------------------------------------------------------
# Authorization code errors
# ---------------------------------------------------------------------------------------------

def test_malformed_code_is_refused_before_the_secret(emulator, default_app):
    grant = sign_in_for_code(emulator, default_app)
    response = redeem_code(emulator, default_app, grant, code="made-up",
                           client_secret="also wrong")
    assert_entra_error(response, 400, "invalid_grant", 9002313)


def test_bad_secret(emulator, default_app):
    grant = sign_in_for_code(emulator, default_app)
    response = redeem_code(emulator, default_app, grant, client_secret="wrong")
    body = assert_entra_error(response, 401, "invalid_client", 7000215)
    assert default_app.client_id in body["error_description"]
    # A failed client authentication does not spend the code.
    assert redeem_code(emulator, default_app, grant).status_code == 200


def test_missing_client_credential(emulator, default_app):
    grant = sign_in_for_code(emulator, default_app)
    assert_entra_error(redeem_code(emulator, default_app, grant, client_secret=None), 401,
                       "invalid_client", 7000218)


def test_expired_code(emulator, default_app):
    grant = sign_in_for_code(emulator, default_app)
    emulator.clock.advance(601)
    assert_entra_error(redeem_code(emulator, default_app, grant), 400, "invalid_grant", 70008)


def test_code_reuse_is_refused_and_revokes_what_the_first_use_issued(emulator, default_app):
    grant = sign_in_for_code(emulator, default_app)
    first = redeem_code(emulator, default_app, grant).json()
    assert_entra_error(redeem_code(emulator, default_app, grant), 400, "invalid_grant", 54005)
    assert_entra_error(refresh(emulator, default_app, first["refresh_token"]), 400,
                       "invalid_grant", 70000)
    assert emulator.state.access_token_revoked(decode_jwt(first["access_token"])[1])
    me = requests.get(emulator.graph_me_url, timeout=10,
                      headers={"Authorization": f"Bearer {first['access_token']}"})
    assert me.status_code == 401
    assert me.json()["error"]["code"] == "InvalidAuthenticationToken"


@pytest.mark.parametrize("verifier", ["wrong" * 10, None])
def test_pkce_mismatch(emulator, default_app, verifier):
    grant = sign_in_for_code(emulator, default_app)
    assert_entra_error(redeem_code(emulator, default_app, grant, code_verifier=verifier), 400,
                       "invalid_grant", 501481)


def test_code_verifier_without_challenge_is_refused(emulator, default_app):
    # RFC 9700 §4.8.2: a verifier for a code issued without a challenge is a downgrade attempt.
    result = browser_sign_in(authorize_url(emulator, default_app.client_id,
                                           redirect_uri=default_app.redirect_uri),
                             ADELE, DEFAULT_PASSWORD)
    data = {"client_id": default_app.client_id, "client_secret": default_app.client_secret,
            "grant_type": "authorization_code", "code": result.params["code"],
            "redirect_uri": default_app.redirect_uri}
    assert_entra_error(post_token(emulator, {**data, "code_verifier": "x" * 43}), 400,
                       "invalid_grant", 501481)
    # Without the verifier the same code is still good: the refusal did not spend it.
    assert post_token(emulator, data).status_code == 200


def test_code_is_bound_to_the_redirect_uri(emulator, default_app):
    grant = sign_in_for_code(emulator, default_app)
    response = redeem_code(emulator, default_app, grant, redirect_uri="http://localhost:5000/")
    assert_entra_error(response, 400, "invalid_grant", 50011)


def test_code_is_bound_to_the_client(two_app_emulator):
    emu, first, second = two_app_emulator
    grant = sign_in_for_code(emu, first, MEGAN)
    response = redeem_code(emu, second, grant, redirect_uri=grant.redirect_uri)
    assert_entra_error(response, 400, "invalid_grant", 70000)


def test_scope_not_consented_at_the_token_endpoint(emulator, default_app):
    grant = sign_in_for_code(emulator, default_app)
    response = redeem_code(emulator, default_app, grant, scope="Mail.Read openid")
    assert_entra_error(response, 400, "invalid_grant", 65001)


def test_invalid_scope_at_the_token_endpoint(emulator, default_app):
    grant = sign_in_for_code(emulator, default_app)
    response = redeem_code(emulator, default_app, grant, scope="Not.A.Scope")
    assert_entra_error(response, 400, "invalid_scope", 70011)


# ---------------------------------------------------------------------------------------------
# Request-level errors
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("change", "status", "error", "code"), [
    ({"client_id": "11111111-2222-3333-4444-555555555555"}, 400, "unauthorized_client", 700016),
    # (password is served since issue 15: test_public_clients.py; implicit never is)
    ({"grant_type": "implicit"}, 400, "unsupported_grant_type", 70003),
    ({"grant_type": None}, 400, "invalid_request", 900144),
    ({"client_id": None}, 400, "invalid_request", 900144),
    ({"scope": "User.Read"}, 400, "invalid_scope", 1002012),
    ({"scope": "https://graph.microsoft.com/User.Read"}, 400, "invalid_scope", 1002012),
    ({"scope": "api://other/.default"}, 400, "invalid_resource", 500011),
    ({"scope": None}, 400, "invalid_request", 900144),
    ({"client_secret": None}, 401, "invalid_client", 7000218),
])
def test_client_credentials_errors(emulator, default_app, change, status, error, code):
    response = post_token(emulator, client_credentials(default_app, **change))
    assert_entra_error(response, status, error, code)


def test_unknown_tenant_at_the_token_endpoint(emulator, default_app):
    response = post_token(emulator, client_credentials(default_app), tenant="nowhere.example")
    assert_entra_error(response, 400, "invalid_request", 90002)


def test_get_on_the_token_endpoint(emulator):
    response = requests.get(token_url(emulator), verify=emulator.ca_bundle)
    assert_entra_error(response, 400, "invalid_request", 900561)


def test_client_credentials_by_domain_and_common(emulator, default_app):
    for tenant in ("contoso.onmicrosoft.com", "organizations"):
        response = post_token(emulator, client_credentials(default_app), tenant=tenant)
        assert response.status_code == 200, response.text
        assert decode_jwt(response.json()["access_token"])[1]["tid"] == emulator.tenant_id


def test_refresh_token_errors(emulator, default_app):
    assert_entra_error(refresh(emulator, default_app, "garbage"), 400, "invalid_grant", 9002313)
    assert_entra_error(refresh(emulator, default_app, ""), 400, "invalid_request", 900144)
    first = redeem_code(emulator, default_app, sign_in_for_code(emulator, default_app)).json()
    assert_entra_error(refresh(emulator, default_app, first["refresh_token"],
                               client_secret="wrong"), 401, "invalid_client", 7000215)
    assert_entra_error(refresh(emulator, default_app, first["refresh_token"],
                               scope="Mail.Send"), 400, "invalid_grant", 65001)
    # None of those refusals spent the token (a refused request is not a use; Entra would
    # otherwise treat the app's next, valid refresh as a stolen token's replay).
    assert refresh(emulator, default_app, first["refresh_token"]).status_code == 200


def test_expired_refresh_token(emulator, default_app):
    first = redeem_code(emulator, default_app, sign_in_for_code(emulator, default_app)).json()
    emulator.clock.advance(91 * 24 * 3600)
    assert_entra_error(refresh(emulator, default_app, first["refresh_token"]), 400,
                       "invalid_grant", 700082)


# ---------------------------------------------------------------------------------------------
# A directory with more apps: lifetimes, expired secrets, certificates
# ---------------------------------------------------------------------------------------------

SECOND_APP = "5a0e4d4c-9f67-4d1e-8d50-2c4b7f1e9a10"
SHORT_APP = "6b1f5e5d-0a78-4e2f-9e61-3d5c8a2f0b21"
EXPIRED_APP = "7c206f6e-1b89-4f30-af72-4e6d9b301c32"
CERT_APP = "8d317a7f-2c9a-4a41-b083-5f7eac412d43"


@pytest.fixture(scope="module")
def more_apps(tmp_path_factory, emulator):
    """An emulator whose directory adds a second app, short lifetimes, an expired secret and a
    certificate credential; with the certificate's key. Shared by this module's tests."""
    key_pem, _, cert = make_certificate()
    document = default_directory_document()
    web = {"redirectUris": ["http://localhost:5001/callback"]}
    document["applications"] += [
        {"appId": SECOND_APP, "displayName": "second-app", "web": web,
         "passwordCredentials": [{"secretText": "second-secret"}]},
        {"appId": SHORT_APP, "displayName": "short-lived", "web": web,
         "passwordCredentials": [{"secretText": "short-secret"}],
         "tokenLifetimes": {"accessToken": 900, "idToken": 600, "refreshToken": 3600}},
        {"appId": EXPIRED_APP, "displayName": "expired-secret", "web": web,
         "passwordCredentials": [{"secretText": "old-secret",
                                  "endDateTime": "2020-01-01T00:00:00Z"}]},
        {"appId": CERT_APP, "displayName": "cert-app", "web": web,
         "keyCredentials": [{"type": "AsymmetricX509Cert", "usage": "Verify",
                             "key": base64.b64encode(cert.public_bytes(
                                 serialization.Encoding.DER)).decode()}]},
    ]
    folder = tmp_path_factory.mktemp("more-apps")
    (folder / "directory.json").write_text(json.dumps(document))
    shutil.copytree(emulator.state_dir / "tls", folder / "state" / "tls")
    with EmulatorServer(directory=folder / "directory.json", state_dir=folder / "state",
                        https_port=0, http_port=0) as emu:
        yield emu, key_pem, cert


@pytest.fixture
def more_apps_emulator(more_apps):
    emu = more_apps[0]
    yield emu
    emu.clock.reset()


@pytest.fixture
def two_app_emulator(more_apps_emulator, default_app):
    second = WebApp(SECOND_APP, "second-secret", "http://localhost:5001/callback",
                    "http://localhost:5001/callback")
    return more_apps_emulator, default_app, second


def test_token_lifetimes_override(more_apps_emulator):
    emu = more_apps_emulator
    app = WebApp(SHORT_APP, "short-secret", "http://localhost:5001/callback", "")
    body = redeem_code(emu, app, sign_in_for_code(emu, app)).json()
    assert body["expires_in"] == 900
    claims = decode_jwt(body["id_token"])[1]
    assert claims["exp"] - claims["iat"] == 600
    emu.clock.advance(3601)
    assert_entra_error(refresh(emu, app, body["refresh_token"]), 400, "invalid_grant", 700082)


def test_expired_secret(more_apps_emulator):
    emu = more_apps_emulator
    app = WebApp(EXPIRED_APP, "old-secret", "", "")
    assert_entra_error(post_token(emu, client_credentials(app)), 401, "invalid_client",
                       7000222)


def assertion(key, cert, *, alg="PS256", aud=None, iss=CERT_APP, exp_in=600,
              thumbprint="sha256", emu=None) -> str:
    headers = ({"x5t#S256": base64.urlsafe_b64encode(cert.fingerprint(hashes.SHA256()))
                .rstrip(b"=").decode()} if thumbprint == "sha256" else
               {"x5t": base64.urlsafe_b64encode(cert.fingerprint(hashes.SHA1()))
                .rstrip(b"=").decode()})
    now = int(time.time())
    claims = {"aud": aud or token_url(emu), "iss": iss, "sub": iss, "jti": str(uuid.uuid4()),
              "iat": now, "nbf": now, "exp": now + exp_in}
    return jwt.encode(claims, key, algorithm=alg, headers=headers)


@pytest.mark.parametrize(("options", "code"), [
    ({"aud": "https://elsewhere.example/token"}, 700023),
    ({"exp_in": -3600}, 700024),
    ({"iss": SECOND_APP}, 700021),
    ({"wrong_key": True}, 700027),
    ({"alg": "HS256"}, 700027),
])
def test_client_assertion_errors(more_apps, options, code):
    emu, key_pem, cert = more_apps
    key = serialization.load_pem_private_key(key_pem.encode(), None)
    if options.pop("wrong_key", False):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if options.get("alg") == "HS256":
        key = "a shared secret that is long enough for HS256"
    token = assertion(key, cert, emu=emu, **options)
    data = {"client_id": CERT_APP, "grant_type": "client_credentials",
            "scope": "https://graph.microsoft.com/.default",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": token}
    assert_entra_error(post_token(emu, data), 401, "invalid_client", code)


def test_client_assertion_rs256_with_sha1_thumbprint(more_apps):
    emu, key_pem, cert = more_apps
    key = serialization.load_pem_private_key(key_pem.encode(), None)
    data = {"client_id": CERT_APP, "grant_type": "client_credentials",
            "scope": "https://graph.microsoft.com/.default",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion(key, cert, alg="RS256", thumbprint="sha1", emu=emu)}
    response = post_token(emu, data)
    assert response.status_code == 200, response.text



def test_scope_is_echoed_in_the_fully_qualified_form_when_asked_so(emulator, default_app):
    scope = "https://graph.microsoft.com/User.Read offline_access openid profile"
    grant = sign_in_for_code(emulator, default_app, scope=scope)
    body = redeem_code(emulator, default_app, grant, scope=scope).json()
    assert body["scope"] == "https://graph.microsoft.com/User.Read openid profile"
    assert "User.Read" in decode_jwt(body["access_token"])[1]["scp"].split()


def test_delegated_default_scope_stands_for_the_static_permissions(emulator, default_app):
    scope = "https://graph.microsoft.com/.default offline_access openid profile"
    grant = sign_in_for_code(emulator, default_app, scope=scope)
    body = redeem_code(emulator, default_app, grant, scope=scope).json()
    # The web app's requiredResourceAccess, with GroupMember.Read.All granted by an admin
    # (the default directory's oauth2PermissionGrants, issue 12).
    assert body["scope"] == "GroupMember.Read.All User.Read openid profile"
    assert body["refresh_token"]


def test_client_capabilities_reach_the_access_token(emulator, default_app):
    grant = sign_in_for_code(emulator, default_app)
    claims = '{"access_token":{"xms_cc":{"values":["cp1"]}}}'
    body = redeem_code(emulator, default_app, grant, claims=claims).json()
    assert decode_jwt(body["access_token"])[1]["xms_cc"] == ["cp1"]
    bad = redeem_code(emulator, default_app, sign_in_for_code(emulator, default_app),
                      claims="{not json")
    assert_entra_error(bad, 400, "invalid_request", 90100)


def test_no_refresh_token_without_offline_access(emulator, default_app):
    grant = sign_in_for_code(emulator, default_app, scope="openid profile User.Read")
    body = redeem_code(emulator, default_app, grant, scope="openid profile User.Read").json()
    assert "refresh_token" not in body and "id_token" in body
