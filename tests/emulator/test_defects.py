"""ID-token defects: sign in with each defect pending and check, with a strict relying-party
validator built on PyJWT and the emulator's published JWKS, that exactly that defect is there."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization

from entra_emulator.defects import DEFECTS, DefectInjector
from tests.support import decode_jwt, redeem_code, refresh, sign_in_for_code

CLOCK_SKEW = 300
# What a strict RP (security-checklist.md §I, steps 4-5) finds wrong with each defect.
EXPECTED_PROBLEMS = {
    "bad_signature": ["signature"],
    "alg_none": ["alg"],
    "hs256_public_key": ["alg"],
    "wrong_iss": ["iss"],
    "wrong_aud": ["aud"],
    "wrong_nonce": ["nonce"],
    "missing_sub": ["sub"],
    "missing_iat": ["missing_iat"],
    "expired": ["exp"],
    "iat_future": ["iat_future"],
    "no_kid": ["no_kid"],
    "unknown_kid": ["unknown_kid"],
    "aud_extra": ["aud_extra"],
    "azp_wrong": ["azp"],
}


def published_keys(emu: Any) -> dict[str, Any]:
    """kid -> public key, from the JWKS the discovery document points at (as an RP fetches)."""
    discovery = requests.get(f"{emu.authority}/v2.0/.well-known/openid-configuration",
                             verify=emu.ca_bundle).json()
    jwks = requests.get(discovery["jwks_uri"], verify=emu.ca_bundle).json()
    return {key["kid"]: jwt.PyJWK(key).key for key in jwks["keys"]}


def id_token_problems(token: str, *, keys: dict[str, Any], client_id: str, issuer: str,
                      nonce: str, now: float) -> list[str]:
    """Every check an RP must make on an ID token, each reported on its own."""
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, options={"verify_signature": False})
    problems: list[str] = []
    if header.get("alg") != "RS256":
        problems.append("alg")
    elif "kid" not in header:
        problems.append("no_kid")
    elif header["kid"] not in keys:
        problems.append("unknown_kid")
    else:
        try:
            jwt.decode(token, keys[header["kid"]], algorithms=["RS256"],
                       options={"verify_aud": False, "verify_exp": False, "verify_iat": False,
                                "verify_nbf": False, "verify_iss": False})
        except jwt.InvalidSignatureError:
            problems.append("signature")
    if claims.get("iss") != issuer:
        problems.append("iss")
    audience = claims.get("aud")
    if isinstance(audience, list) and client_id in audience and len(audience) > 1:
        problems.append("aud_extra")
    elif audience != client_id and audience != [client_id]:
        problems.append("aud")
    if "azp" in claims and claims["azp"] != client_id:
        problems.append("azp")
    if not isinstance(claims.get("exp"), int) or now > claims["exp"] + CLOCK_SKEW:
        problems.append("exp")
    if not isinstance(claims.get("iat"), int):
        problems.append("missing_iat")
    elif claims["iat"] > now + CLOCK_SKEW:
        problems.append("iat_future")
    if not isinstance(claims.get("sub"), str) or not claims["sub"]:
        problems.append("sub")
    if claims.get("nonce") != nonce:
        problems.append("nonce")
    return problems


@pytest.fixture(scope="module")
def browser() -> requests.Session:
    """One browser for the module: after the first sign-in its SSO cookie signs in silently."""
    return requests.Session()


def sign_in(emu: Any, app: Any, browser: requests.Session) -> tuple[str, dict[str, Any], str]:
    """(id_token, token response, nonce) from the auth code flow through the sign-in pages."""
    grant = sign_in_for_code(emu, app, session=browser)
    response = redeem_code(emu, app, grant)
    assert response.status_code == 200, response.text
    body = response.json()
    return body["id_token"], body, grant.nonce


def problems_of(emu: Any, app: Any, token: str, nonce: str) -> list[str]:
    return id_token_problems(token, keys=published_keys(emu), client_id=app.client_id,
                             issuer=f"{emu.authority}/v2.0", nonce=nonce, now=emu.clock.now())


def test_a_normal_id_token_passes_every_check(emulator, default_app, browser):
    token, _, nonce = sign_in(emulator, default_app, browser)
    assert problems_of(emulator, default_app, token, nonce) == []


@pytest.mark.parametrize("defect", sorted(EXPECTED_PROBLEMS))
def test_each_defect_is_exactly_what_it_says(emulator, default_app, browser, defect):
    emulator.defects.add(default_app.client_id, defect)

    token, body, nonce = sign_in(emulator, default_app, browser)

    assert problems_of(emulator, default_app, token, nonce) == EXPECTED_PROBLEMS[defect]
    assert emulator.defects.pending() == []
    # Only the ID token is defective; the access token Graph takes is untouched.
    me = requests.get(emulator.graph_me_url, verify=emulator.ca_bundle,
                      headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.status_code == 200, me.text


def test_bad_signature_keeps_a_genuine_header_and_claims(emulator, default_app, browser):
    emulator.defects.add(default_app.client_id, "bad_signature")
    token, _, _ = sign_in(emulator, default_app, browser)
    header, claims = decode_jwt(token)
    assert header == {"typ": "JWT", "alg": "RS256", "kid": emulator.keys.current.kid}
    good = emulator.keys.sign(claims)
    assert token.rsplit(".", 1)[0] == good.rsplit(".", 1)[0]
    assert token != good


def test_alg_none_is_unsigned(emulator, default_app, browser):
    emulator.defects.add(default_app.client_id, "alg_none")
    token, _, _ = sign_in(emulator, default_app, browser)
    assert decode_jwt(token)[0]["alg"] == "none"
    assert token.endswith(".")


def test_hs256_is_keyed_with_the_published_rsa_public_key(emulator, default_app, browser):
    emulator.defects.add(default_app.client_id, "hs256_public_key")
    token, _, _ = sign_in(emulator, default_app, browser)
    header, _ = decode_jwt(token)
    assert header["alg"] == "HS256"
    # The attacker's recipe: the PEM of the key the JWKS publishes, used as an HMAC secret.
    published = published_keys(emulator)[header["kid"]]
    secret = published.public_bytes(serialization.Encoding.PEM,
                                    serialization.PublicFormat.SubjectPublicKeyInfo)
    signing_input, _, signature = token.rpartition(".")
    expected = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    assert base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)) == expected


def test_no_kid_is_signed_by_the_published_key(emulator, default_app, browser):
    emulator.defects.add(default_app.client_id, "no_kid")
    token, _, _ = sign_in(emulator, default_app, browser)
    assert "kid" not in decode_jwt(token)[0]
    jwt.decode(token, emulator.keys.current.public_key, algorithms=["RS256"],
               audience=default_app.client_id)


def test_unknown_kid_is_a_real_signature_by_a_never_published_key(emulator, default_app,
                                                                   browser):
    emulator.defects.add(default_app.client_id, "unknown_kid")
    token, _, _ = sign_in(emulator, default_app, browser)
    kid = decode_jwt(token)[0]["kid"]
    assert kid not in published_keys(emulator)   # a refetch does not help
    jwt.decode(token, emulator.keys.unpublished_key().public_key, algorithms=["RS256"],
               audience=default_app.client_id)


def test_expired_and_iat_future_are_well_outside_the_clock_skew(emulator, default_app,
                                                                 browser):
    emulator.defects.add(default_app.client_id, "expired")
    emulator.defects.add(default_app.client_id, "iat_future")
    now = emulator.clock.now()
    expired = decode_jwt(sign_in(emulator, default_app, browser)[0])[1]
    future = decode_jwt(sign_in(emulator, default_app, browser)[0])[1]
    assert expired["iat"] < expired["exp"] < now - CLOCK_SKEW
    assert future["iat"] > now + CLOCK_SKEW
    assert future["exp"] > now   # only iat is wrong


def test_rotated_key_needs_one_jwks_refetch_then_validates(start_emulator, default_app):
    emu = start_emulator()
    browser = requests.Session()
    cached_keys = published_keys(emu)   # the RP's JWKS cache, fetched before the sign-in
    emu.defects.add(default_app.client_id, "rotated_key")

    token, _, nonce = sign_in(emu, default_app, browser)

    kid = decode_jwt(token)[0]["kid"]
    assert kid not in cached_keys
    check = {"client_id": default_app.client_id, "issuer": f"{emu.authority}/v2.0",
             "nonce": nonce, "now": emu.clock.now()}
    assert id_token_problems(token, keys=cached_keys, **check) == ["unknown_kid"]
    refetched = published_keys(emu)
    assert set(cached_keys) < set(refetched)   # the old key stays published
    assert id_token_problems(token, keys=refetched, **check) == []


def test_count_makes_that_many_tokens_defective_then_normal_ones(emulator, default_app,
                                                                  browser):
    emulator.defects.add(default_app.client_id, "wrong_aud", count=2)
    results = [sign_in(emulator, default_app, browser) for _ in range(3)]
    problems = [problems_of(emulator, default_app, token, nonce)
                for token, _, nonce in results]
    assert problems == [["aud"], ["aud"], []]


def test_defects_queue_in_order(emulator, default_app, browser):
    emulator.defects.add(default_app.client_id, "missing_sub")
    emulator.defects.add(default_app.client_id, "wrong_nonce")
    first = sign_in(emulator, default_app, browser)
    second = sign_in(emulator, default_app, browser)
    assert problems_of(emulator, default_app, first[0], first[2]) == ["sub"]
    assert problems_of(emulator, default_app, second[0], second[2]) == ["nonce"]


def test_client_ids_compare_case_insensitively(emulator, default_app, browser):
    emulator.defects.add(default_app.client_id.upper(), "wrong_nonce")
    token, _, nonce = sign_in(emulator, default_app, browser)
    assert problems_of(emulator, default_app, token, nonce) == ["nonce"]


def test_a_defect_for_another_client_leaves_this_one_alone(emulator, default_app, browser):
    emulator.defects.add("11111111-2222-3333-4444-555555555555", "alg_none")
    token, _, nonce = sign_in(emulator, default_app, browser)
    assert problems_of(emulator, default_app, token, nonce) == []
    assert emulator.defects.pending() == [
        {"client_id": "11111111-2222-3333-4444-555555555555", "defect": "alg_none"}]


def test_refresh_grant_id_tokens_carry_defects_too(emulator, default_app, browser):
    _, body, _ = sign_in(emulator, default_app, browser)
    emulator.defects.add(default_app.client_id, "wrong_iss")

    refreshed = refresh(emulator, default_app, body["refresh_token"])

    assert refreshed.status_code == 200, refreshed.text
    token = refreshed.json()["id_token"]
    claims = decode_jwt(token)[1]
    assert "nonce" not in claims
    assert id_token_problems(token, keys=published_keys(emulator),
                             client_id=default_app.client_id,
                             issuer=f"{emulator.authority}/v2.0", nonce=None,
                             now=emulator.clock.now()) == ["iss"]


def test_wrong_sub_is_another_user_in_a_token_that_passes_every_other_check(
        emulator, default_app, browser):
    genuine, _, _ = sign_in(emulator, default_app, browser)
    emulator.defects.add(default_app.client_id, "wrong_sub")

    token, _, nonce = sign_in(emulator, default_app, browser)

    # Nothing a single token shows is wrong: only comparing with the user signed in can tell
    # (OIDC Core 12.2, SEC-B9).
    assert problems_of(emulator, default_app, token, nonce) == []
    before, after = decode_jwt(genuine)[1], decode_jwt(token)[1]
    assert after["sub"] != before["sub"] and after["oid"] != before["oid"]
    assert len(after["sub"]) == len(before["sub"])   # a pairwise sub, as Entra shapes it
    assert {k: v for k, v in after.items() if k not in ("sub", "oid", "iat", "nbf", "exp",
                                                         "uti", "aio", "nonce")} == \
        {k: v for k, v in before.items() if k not in ("sub", "oid", "iat", "nbf", "exp",
                                                       "uti", "aio", "nonce")}


def test_wrong_sub_in_a_refresh_response(emulator, default_app, browser):
    """SEC-B9: the ID token of a refresh names another user than the sign-in's."""
    signed_in, body, _ = sign_in(emulator, default_app, browser)
    emulator.defects.add(default_app.client_id, "wrong_sub")

    refreshed = refresh(emulator, default_app, body["refresh_token"])

    assert refreshed.status_code == 200, refreshed.text
    token = refreshed.json()["id_token"]
    before, after = decode_jwt(signed_in)[1], decode_jwt(token)[1]
    assert after["sub"] != before["sub"] and after["oid"] != before["oid"]
    assert after["iss"] == before["iss"] and after["aud"] == before["aud"]
    assert id_token_problems(token, keys=published_keys(emulator),
                             client_id=default_app.client_id,
                             issuer=f"{emulator.authority}/v2.0", nonce=None,
                             now=emulator.clock.now()) == []
    # The next refresh is genuine again, for the signed-in user.
    again = refresh(emulator, default_app, refreshed.json()["refresh_token"])
    assert decode_jwt(again.json()["id_token"])[1]["sub"] == before["sub"]


def test_every_defect_has_an_expectation():
    assert set(EXPECTED_PROBLEMS) | {"rotated_key", "wrong_sub"} == set(DEFECTS)


def test_unknown_defect_is_refused_with_the_list_of_names():
    injector = DefectInjector()
    with pytest.raises(ValueError, match="unknown defect 'sig_none'; known defects: "
                                         "bad_signature, alg_none, hs256_public_key"):
        injector.add("client", "sig_none")
    with pytest.raises(ValueError, match="count must be"):
        injector.add("client", "alg_none", count=0)
    assert injector.pending() == []
