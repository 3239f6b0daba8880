"""Issue 11's hardening of the token endpoint, the admin API, sign-out and the state files:
one client authentication method per request, bounded JSON everywhere (and nothing spent by a
request that is refused), post_logout_redirect_uri only for an app the request or the session
vouches for, and owner-only files."""

from __future__ import annotations

import base64
import os
import stat
import time
from pathlib import Path

import jwt
import pytest
import requests

from entra_emulator.server import EmulatorServer
from entra_emulator.serving import write_env_file
from tests.support import (
    ADELE,
    WebApp,
    assert_entra_error,
    authorize_url,
    decode_jwt,
    default_directory_document,
    params_of,
    redeem_code,
    refresh,
    sign_in_for_code,
    token_url,
)

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
GRAPH_DEFAULT = "https://graph.microsoft.com/.default"
# Deep enough for json.loads to raise RecursionError (the default limit is 1000 frames), small
# enough to stay under the emulator's 1 MiB request bound (app.MAX_REQUEST_BYTES).
DEEP = 20_000
DEEP_JSON = "[" * DEEP + "]" * DEEP


def deep_claims(depth: int = DEEP) -> str:
    return '{"access_token":' + '{"a":' * depth + "1" + "}" * depth + "}"


DEEP_CLAIMS = deep_claims()


def basic(client_id: str, secret: str) -> dict[str, str]:
    value = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {value}"}


def post_token(emu, data, headers=None) -> requests.Response:
    return requests.post(token_url(emu), data=data, headers=headers or {},
                         verify=emu.ca_bundle, timeout=30)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# ---------------------------------------------------------------------------------------------
# 1. One client authentication method per request (RFC 6749 §2.3)
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "basic_secret"), [
    ({"client_secret": "RIGHT"}, "wrong"),               # post + basic (the case)
    ({"client_secret": "RIGHT"}, "RIGHT"),               # post + basic, both right
    ({"client_secret": "RIGHT", "client_assertion": "x.y.z",
      "client_assertion_type": JWT_BEARER}, None),       # post + assertion
    ({"client_assertion": "x.y.z", "client_assertion_type": JWT_BEARER}, "RIGHT"),
])
def test_two_client_authentication_methods_are_refused(emulator, default_app, body,
                                                       basic_secret):
    secret = default_app.client_secret
    data = {"client_id": default_app.client_id, "grant_type": "client_credentials",
            "scope": GRAPH_DEFAULT,
            **{k: (secret if v == "RIGHT" else v) for k, v in body.items()}}
    headers = None
    if basic_secret is not None:
        headers = basic(default_app.client_id,
                        secret if basic_secret == "RIGHT" else basic_secret)
    response = post_token(emulator, data, headers)
    body = assert_entra_error(response, 400, "invalid_request", 90100)
    assert "access_token" not in body
    assert "more than one" in body["error_description"]


def test_two_methods_at_code_redemption_do_not_spend_the_code(emulator, default_app):
    grant = sign_in_for_code(emulator, default_app)
    data = {"client_id": default_app.client_id, "grant_type": "authorization_code",
            "client_secret": default_app.client_secret, "code": grant.code,
            "redirect_uri": grant.redirect_uri, "code_verifier": grant.verifier,
            "scope": "User.Read offline_access openid profile"}
    refused = post_token(emulator, data, basic(default_app.client_id, "wrong"))
    assert_entra_error(refused, 400, "invalid_request", 90100)
    assert redeem_code(emulator, default_app, grant).status_code == 200


def test_one_method_at_a_time_still_works(emulator, default_app):
    post = post_token(emulator, {"client_id": default_app.client_id,
                                 "grant_type": "client_credentials", "scope": GRAPH_DEFAULT,
                                 "client_secret": default_app.client_secret})
    assert post.status_code == 200, post.text
    headers = basic(default_app.client_id, default_app.client_secret)
    by_basic = post_token(emulator, {"grant_type": "client_credentials", "scope": GRAPH_DEFAULT},
                          headers)
    assert by_basic.status_code == 200, by_basic.text


# ---------------------------------------------------------------------------------------------
# 2. Bounded JSON; every parameter checked before the code or refresh token is spent
# ---------------------------------------------------------------------------------------------

def admin_post(emu, path: str, body: str | bytes) -> requests.Response:
    return requests.post(f"{emu.https_base}/_emulator/{path}", data=body,
                         headers={"Content-Type": "application/json"}, verify=emu.ca_bundle,
                         timeout=30)


@pytest.mark.parametrize("path", ["faults", "defects"])
@pytest.mark.parametrize("body", [
    DEEP_JSON,
    '{"target": ' + "[" * 1000 + "]" * 1000 + "}",
    '{"target": "graph", ',
    b'\xff\xfe{"target": 1}',
    "NaN",
])
def test_admin_answers_bad_json_with_400_in_its_shape(emulator, path, body):
    response = admin_post(emulator, path, body)
    assert response.status_code == 400, response.text[:300]
    assert response.json()["error"] == "invalid_request"
    assert emulator.faults.pending() == [] and emulator.defects.pending() == []


def test_admin_refuses_an_oversized_body(emulator):
    # A body the endpoint would take but for its size (whitespace is valid JSON).
    body = '{"target": "graph", "kind": "503"' + " " * (200 * 1024) + "}"
    response = admin_post(emulator, "faults", body)
    assert response.status_code in (400, 413), response.text[:300]
    assert response.json()["error"] == "invalid_request"
    assert emulator.faults.pending() == []


def test_admin_still_takes_a_good_body(emulator):
    response = admin_post(emulator, "faults", '{"target": "graph", "kind": "503"}')
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("claims", [DEEP_CLAIMS, "{not json", "[1]", '{"a": NaN}'])
def test_bad_claims_at_code_redemption_is_400_and_the_code_survives(emulator, default_app,
                                                                    claims):
    grant = sign_in_for_code(emulator, default_app)
    refused = redeem_code(emulator, default_app, grant, claims=claims)
    assert_entra_error(refused, 400, "invalid_request", 90100)
    assert redeem_code(emulator, default_app, grant).status_code == 200


def test_bad_claims_at_refresh_is_400_and_the_refresh_token_survives(emulator, default_app):
    tokens = redeem_code(emulator, default_app, sign_in_for_code(emulator, default_app)).json()
    refused = refresh(emulator, default_app, tokens["refresh_token"], claims=DEEP_CLAIMS)
    assert_entra_error(refused, 400, "invalid_request", 90100)
    assert refresh(emulator, default_app, tokens["refresh_token"]).status_code == 200


def test_an_ungranted_scope_at_code_redemption_does_not_spend_the_code(emulator, default_app):
    grant = sign_in_for_code(emulator, default_app)
    refused = redeem_code(emulator, default_app, grant, scope="Mail.Send openid")
    assert_entra_error(refused, 400, "invalid_grant", 65001)
    assert redeem_code(emulator, default_app, grant).status_code == 200


def test_client_capabilities_still_reach_the_access_token(emulator, default_app):
    grant = sign_in_for_code(emulator, default_app)
    body = redeem_code(emulator, default_app, grant,
                       claims='{"access_token":{"xms_cc":{"values":["cp1"]}}}').json()
    assert decode_jwt(body["access_token"])[1]["xms_cc"] == ["cp1"]


@pytest.mark.parametrize("segment", [0, 1])
def test_a_deeply_nested_client_assertion_is_refused(emulator, default_app, segment):
    parts = [b64url(b'{"alg":"RS256","typ":"JWT"}'), b64url(b'{"iss":"x"}'), b64url(b"sig")]
    parts[segment] = b64url(DEEP_JSON.encode())
    response = post_token(emulator, {
        "client_id": default_app.client_id, "grant_type": "client_credentials",
        "scope": GRAPH_DEFAULT, "client_assertion_type": JWT_BEARER,
        "client_assertion": ".".join(parts)})
    # 400 (unreadable header) or 401 (no registered key): never a 500.
    assert response.status_code in (400, 401), response.text[:300]
    assert response.json()["error"] in ("invalid_request", "invalid_client")


# Within authorize's own bound on the claims parameter's length (request_limits.py).
@pytest.mark.parametrize("claims", [deep_claims(500), "{not json", "[1]"])
def test_bad_claims_at_authorize_goes_back_to_the_app_as_invalid_request(emulator,
                                                                         default_app, claims):
    url = authorize_url(emulator, default_app.client_id, redirect_uri=default_app.redirect_uri,
                        state="s1", claims=claims)
    response = requests.get(url, allow_redirects=False, timeout=30)
    assert response.status_code == 302, response.text[:300]
    params = params_of(response.headers["Location"])
    assert params["error"] == "invalid_request" and params["state"] == "s1"
    assert params["error_description"].startswith("AADSTS90100: ")


# ---------------------------------------------------------------------------------------------
# 3. post_logout_redirect_uri: only for an app the request or the ending session vouches for
# ---------------------------------------------------------------------------------------------

SECOND_APP = "0b6a2c55-4a7e-4d7c-9a3e-1f2d3c4b5a69"
SECOND_LOGOUT_URI = "http://localhost:5002/signed-out"


@pytest.fixture
def two_apps(start_emulator, default_app):
    document = default_directory_document()
    document["applications"].append({
        "appId": SECOND_APP, "displayName": "second-app",
        "web": {"redirectUris": ["http://localhost:5002/callback", SECOND_LOGOUT_URI]},
        "passwordCredentials": [{"secretText": "second-secret"}]})
    emu = start_emulator(directory=document)
    second = WebApp(SECOND_APP, "second-secret", "http://localhost:5002/callback",
                    SECOND_LOGOUT_URI)
    return emu, default_app, second


def logout(emu, browser=None, **params) -> requests.Response:
    return (browser or requests).get(f"{emu.http_base}/{emu.tenant_id}/oauth2/v2.0/logout",
                                     params=params, allow_redirects=False, timeout=10)


def assert_signed_out_page(response: requests.Response) -> None:
    assert response.status_code == 200, response.headers.get("Location")
    assert "You signed out" in response.text


def test_without_client_hint_or_session_no_app_uri_is_redirected_to(emulator, default_app):
    assert_signed_out_page(logout(emulator,
                                  post_logout_redirect_uri=default_app.post_logout_redirect_uri))


def test_the_session_vouches_only_for_the_apps_it_signed_in_to(two_apps):
    emu, first, second = two_apps
    browser = requests.Session()
    sign_in_for_code(emu, first, ADELE, session=browser)
    assert_signed_out_page(logout(emu, browser, post_logout_redirect_uri=SECOND_LOGOUT_URI))


def test_the_session_vouches_for_its_app(two_apps):
    emu, first, _ = two_apps
    browser = requests.Session()
    sign_in_for_code(emu, first, ADELE, session=browser)
    response = logout(emu, browser, post_logout_redirect_uri=first.post_logout_redirect_uri)
    assert response.status_code == 302
    assert response.headers["Location"] == first.post_logout_redirect_uri


def test_a_named_client_vouches_for_its_own_uris(two_apps):
    emu, _, second = two_apps
    response = logout(emu, client_id=SECOND_APP, post_logout_redirect_uri=SECOND_LOGOUT_URI,
                      state="x")
    assert response.headers.get("Location") == f"{SECOND_LOGOUT_URI}?state=x"


def test_a_verified_id_token_hint_vouches_for_its_app(two_apps):
    emu, _, second = two_apps
    tokens = redeem_code(emu, second, sign_in_for_code(emu, second)).json()
    response = logout(emu, id_token_hint=tokens["id_token"],
                      post_logout_redirect_uri=SECOND_LOGOUT_URI)
    assert response.status_code == 302
    assert response.headers["Location"] == SECOND_LOGOUT_URI


@pytest.mark.parametrize("forgery", ["unsigned", "other_key", "garbage", "deep"])
def test_an_unverifiable_id_token_hint_is_ignored(two_apps, forgery):
    emu, _, _ = two_apps
    now = int(time.time())
    claims = {"aud": SECOND_APP, "iss": f"{emu.authority}/v2.0", "iat": now, "exp": now + 600}
    if forgery == "unsigned":
        hint = jwt.encode(claims, None, algorithm="none")
    elif forgery == "other_key":
        from cryptography.hazmat.primitives.asymmetric import rsa
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        kid = emu.keys.current.kid   # claims to be the emulator's key
        hint = jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})
    elif forgery == "deep":
        hint = ".".join([b64url(b"[" * 2000 + b"]" * 2000), b64url(b"{}"), b64url(b"sig")])
    else:
        hint = "not-a-jwt"
    assert_signed_out_page(logout(emu, id_token_hint=hint,
                                  post_logout_redirect_uri=SECOND_LOGOUT_URI))


# ---------------------------------------------------------------------------------------------
# 4. Owner-only files: the env file (it holds the client secret) and the state folder
# ---------------------------------------------------------------------------------------------

def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_env_file_is_written_owner_only(tmp_path):
    path = tmp_path / "emulator.env"
    path.write_text("old\n")
    path.chmod(0o644)
    write_env_file(path, {"CLIENT_SECRET": "s3cret"})
    assert mode(path) == 0o600
    assert 'CLIENT_SECRET="s3cret"' in path.read_text()
    fresh = tmp_path / "fresh.env"
    write_env_file(fresh, {"CLIENT_ID": "x"})
    assert mode(fresh) == 0o600


def assert_owner_only(folder: Path) -> None:
    assert mode(folder) == 0o700, folder
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            assert mode(Path(root, name)) == 0o700, Path(root, name)
        for name in files:
            assert mode(Path(root, name)) & 0o077 == 0, Path(root, name)


def test_a_new_state_folder_is_owner_only(tmp_path, default_app):
    state = tmp_path / "state"
    with EmulatorServer(state_dir=state, https_port=0, http_port=0) as emu:
        emu.state.consents.grant("user", default_app.client_id, {"User.Read"})
        assert_owner_only(state)
        assert {"state.sqlite3", "tls"} <= {p.name for p in state.iterdir()}


def test_an_existing_loose_state_folder_is_tightened(tmp_path):
    state = tmp_path / "state"
    with EmulatorServer(state_dir=state, https_port=0, http_port=0):
        pass
    # What an older version left: folders 0755, certificates and the CA bundle 0644.
    state.chmod(0o755)
    (state / "tls").chmod(0o755)
    for name in ("ca.pem", "server.pem", "ca-bundle.pem"):
        (state / "tls" / name).chmod(0o644)
    (state / "state.sqlite3").chmod(0o644)
    with EmulatorServer(state_dir=state, https_port=0, http_port=0) as emu:
        assert_owner_only(state)
        # The CA bundle stays usable by the (same-user) web app.
        response = requests.get(f"{emu.authority}/v2.0/.well-known/openid-configuration",
                                verify=emu.ca_bundle, timeout=10)
        assert response.status_code == 200, response.text
