"""Fault injection: each kind on each target, in process (the admin endpoint: test_admin.py)."""

from __future__ import annotations

import base64
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msal
import pytest
import requests
from msal.exceptions import MsalServiceError

from entra_emulator.faults import FaultInjector
from tests.support import (
    ADELE,
    DEFAULT_PASSWORD,
    assert_entra_error,
    browser_sign_in,
    decode_jwt,
    get_me,
    redeem_code,
    sign_in_for_code,
    token_url,
)

GRAPH_DEFAULT_SCOPE = ["https://graph.microsoft.com/.default"]


def msal_app(emu: Any, default_app: Any) -> msal.ConfidentialClientApplication:
    # A new application each time: MSAL remembers throttling (429/503) per application.
    return msal.ConfidentialClientApplication(
        default_app.client_id, client_credential=default_app.client_secret,
        authority=emu.authority, instance_discovery=False, verify=emu.ca_bundle,
        token_cache=msal.TokenCache())


def client_credentials(emu: Any, default_app: Any) -> requests.Response:
    return requests.post(token_url(emu), verify=emu.ca_bundle, data={
        "client_id": default_app.client_id, "client_secret": default_app.client_secret,
        "grant_type": "client_credentials", "scope": GRAPH_DEFAULT_SCOPE[0]})


def www_authenticate_params(header: str) -> dict[str, str]:
    assert header.startswith("Bearer ")
    return dict(re.findall(r'(\w+)="([^"]*)"', header))


# ---------------------------------------------------------------------------------------------
# Graph
# ---------------------------------------------------------------------------------------------

def test_graph_429_is_graphs_throttling_answer_then_the_real_one(emulator, access_token):
    emulator.faults.add("graph", "429", retry_after=7)

    throttled = get_me(emulator, access_token)
    assert throttled.status_code == 429
    assert throttled.headers["Retry-After"] == "7"
    error = throttled.json()["error"]
    assert error["code"] == "TooManyRequests"
    assert error["message"] == "Please retry again later."
    inner = error["innerError"]
    assert (inner["code"], inner["status"], inner["message"]) == ("429", "429",
                                                                  "Please retry after")
    assert inner["request-id"] == throttled.headers["request-id"]

    assert get_me(emulator, access_token).status_code == 200


def test_graph_429_always_carries_retry_after(emulator, access_token):
    emulator.faults.add("graph", "429")
    response = get_me(emulator, access_token)
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) >= 1


def test_graph_faults_fire_count_times_in_order(emulator, access_token):
    emulator.faults.add("graph", "429", count=2, retry_after=1)
    emulator.faults.add("graph", "503")
    statuses = [get_me(emulator, access_token).status_code for _ in range(4)]
    assert statuses == [429, 429, 503, 200]


def test_graph_503_with_and_without_retry_after(emulator, access_token):
    emulator.faults.add("graph", "503", retry_after=2.5)
    emulator.faults.add("graph", "503")

    first = get_me(emulator, access_token)
    assert first.status_code == 503
    assert first.headers["Retry-After"] == "2.5"
    assert first.json()["error"]["code"] == "serviceNotAvailable"
    second = get_me(emulator, access_token)
    assert second.status_code == 503
    assert "Retry-After" not in second.headers


def test_graph_claims_challenge_and_msal_answering_it(emulator, default_app):
    app = msal_app(emulator, default_app)
    flow = app.initiate_auth_code_flow(["User.Read"], redirect_uri=default_app.redirect_uri,
                                       response_mode="form_post")
    result = app.acquire_token_by_auth_code_flow(
        flow, browser_sign_in(flow["auth_uri"], ADELE, DEFAULT_PASSWORD).params)
    emulator.clock.advance(120)   # the challenge asks for a token newer than this one
    emulator.faults.add("graph", "claims_challenge")

    challenged = get_me(emulator, result["access_token"])
    assert challenged.status_code == 401
    assert challenged.json()["error"]["code"] == "InvalidAuthenticationToken"
    params = www_authenticate_params(challenged.headers["WWW-Authenticate"])
    assert params["error"] == "insufficient_claims"
    assert params["client_id"] == "00000003-0000-0000-c000-000000000000"
    claims = json.loads(base64.b64decode(params["claims"]))
    nbf = claims["access_token"]["nbf"]
    assert nbf["essential"] is True
    assert abs(int(nbf["value"]) - emulator.clock.now()) < 5

    # What an app does with it: ask MSAL again with the claims, which bypasses the cache.
    [account] = app.get_accounts()
    renewed = app.acquire_token_silent(["User.Read"], account=account,
                                       claims_challenge=json.dumps(claims))
    assert "access_token" in renewed, renewed
    assert renewed["access_token"] != result["access_token"]
    assert decode_jwt(renewed["access_token"])[1]["iat"] >= int(nbf["value"])
    assert get_me(emulator, renewed["access_token"]).status_code == 200


def test_graph_delay_then_the_real_answer(emulator, access_token):
    emulator.faults.add("graph", "delay", delay_seconds=0.3)
    started = time.monotonic()
    response = get_me(emulator, access_token)
    assert time.monotonic() - started >= 0.3
    assert response.status_code == 200


def test_graph_faults_do_not_touch_the_token_endpoint(emulator, default_app):
    emulator.faults.add("graph", "503")
    assert client_credentials(emulator, default_app).status_code == 200
    assert emulator.faults.pending() == [
        {"target": "graph", "kind": "503", "retry_after": None, "delay_seconds": None}]


def test_concurrent_calls_consume_each_fault_exactly_once(emulator, access_token):
    emulator.faults.add("graph", "429", count=10, retry_after=1)
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(lambda _: get_me(emulator, access_token).status_code,
                                 range(20)))
    assert sorted(statuses) == [200] * 10 + [429] * 10
    assert emulator.faults.pending() == []


# ---------------------------------------------------------------------------------------------
# Token endpoint
# ---------------------------------------------------------------------------------------------

def test_token_429_is_entras_error_with_retry_after(emulator, default_app):
    emulator.faults.add("token", "429", retry_after=3)
    response = client_credentials(emulator, default_app)
    assert_entra_error(response, 429, "temporarily_unavailable", 90055)
    assert response.headers["Retry-After"] == "3"
    assert response.headers["Cache-Control"].startswith("no-store")
    assert client_credentials(emulator, default_app).status_code == 200


def test_token_429_reaches_the_app_through_msal(emulator, default_app):
    emulator.faults.add("token", "429", retry_after=1)
    result = msal_app(emulator, default_app).acquire_token_for_client(GRAPH_DEFAULT_SCOPE)
    assert result["error"] == "temporarily_unavailable"
    assert result["error_codes"] == [90055]


def test_token_503_is_entras_error_and_msal_raises_on_it(emulator, default_app):
    emulator.faults.add("token", "503", retry_after=2)
    response = client_credentials(emulator, default_app)
    assert_entra_error(response, 503, "temporarily_unavailable", 90033)
    assert response.headers["Retry-After"] == "2"

    emulator.faults.add("token", "503")
    with pytest.raises(MsalServiceError, match="HTTP Error: 503"):   # MSAL raises on 5xx
        msal_app(emulator, default_app).acquire_token_for_client(GRAPH_DEFAULT_SCOPE)


def test_token_claims_challenge_is_interaction_required(emulator, default_app):
    emulator.faults.add("token", "claims_challenge")
    result = msal_app(emulator, default_app).acquire_token_for_client(GRAPH_DEFAULT_SCOPE)
    assert result["error"] == "interaction_required"
    assert result["error_codes"] == [50076]
    assert result["suberror"] == "basic_action"
    assert result["error_description"].startswith("AADSTS50076: ")


def test_token_claims_challenge_on_the_code_redemption(emulator, default_app):
    grant = sign_in_for_code(emulator, default_app)
    emulator.faults.add("token", "claims_challenge")
    assert_entra_error(redeem_code(emulator, default_app, grant), 400, "interaction_required",
                       50076)


@pytest.mark.parametrize(("kind", "status", "error", "code", "text"), [
    ("429", 429, "temporarily_unavailable", 90055,
     "There are too many incoming requests. Please try again later."),
    ("503", 503, "temporarily_unavailable", 90033,
     "A transient error has occurred. Please try again."),
    ("claims_challenge", 400, "interaction_required", 50076,
     "Due to a configuration change made by your administrator, or because you moved to a new "
     "location, you must use multi-factor authentication to access "
     "'00000003-0000-0000-c000-000000000000'."),
])
def test_token_fault_bodies_are_entras_full_error_shape(emulator, default_app, kind, status,
                                                        error, code, text):
    emulator.faults.add("token", kind)
    response = client_credentials(emulator, default_app)
    body = assert_entra_error(response, status, error, code)
    assert body["error_description"].startswith(f"AADSTS{code}: {text} Trace ID: ")
    assert body["error_uri"] == f"https://login.microsoftonline.com/error?code={code}"
    # Only Conditional Access's 50076 says what kind of interaction it needs.
    assert body.get("suberror") == ("basic_action" if code == 50076 else None)
    assert response.headers["Cache-Control"].startswith("no-store")


def test_token_delay_then_the_real_answer(emulator, default_app):
    emulator.faults.add("token", "delay", delay_seconds=0.3)
    started = time.monotonic()
    response = client_credentials(emulator, default_app)
    assert time.monotonic() - started >= 0.3
    assert response.status_code == 200
    assert "access_token" in response.json()


def test_token_faults_do_not_touch_graph(emulator, access_token):
    emulator.faults.add("token", "429")
    assert get_me(emulator, access_token).status_code == 200
    assert len(emulator.faults.pending()) == 1


# ---------------------------------------------------------------------------------------------
# In-process API
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("args", "kwargs", "complaint"), [
    (("mail", "429"), {}, "target must be one of graph, token"),
    (("graph", "500"), {}, "kind must be one of 429, 503, claims_challenge, delay"),
    (("graph", "429"), {"count": 0}, "count must be a whole number"),
    (("graph", "429"), {"count": True}, "count must be a whole number"),
    (("graph", "429"), {"retry_after": -1}, "retry_after must be a number of seconds"),
    (("graph", "429"), {"retry_after": float("nan")}, "retry_after must be a number"),
    (("graph", "delay"), {}, "kind 'delay' needs delay_seconds"),
    (("token", "delay"), {"delay_seconds": 7200}, "delay_seconds must be a number"),
])
def test_add_refuses_bad_arguments_with_a_clear_message(args, kwargs, complaint):
    faults = FaultInjector()
    with pytest.raises(ValueError, match=re.escape(complaint)):
        faults.add(*args, **kwargs)
    assert faults.pending() == []


def test_clear_drops_every_pending_fault(emulator, access_token):
    emulator.faults.add("graph", "429", count=3)
    emulator.faults.add("token", "503")
    emulator.faults.clear()
    assert emulator.faults.pending() == []
    assert get_me(emulator, access_token).status_code == 200
