"""The emulator's live answers against the golden reference of Entra's (tests/emulator/golden/):
the discovery documents, token responses and error envelopes captured from Entra, each fixture
naming its sources and dates.

What is compared: field sets, statuses, `error`, AADSTS codes, messages (as templates), value
formats (GUIDs, timestamps, the error_description tail) and `error_uri` per code. Where the
emulator deliberately answers otherwise, the check names the divergence (DIVERGENCES) instead of
skipping it, and every name must appear in the README's "Parity with Entra" table.
"""

from __future__ import annotations

import html
import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from entra_emulator.errors import CATALOGUE, NO_ERROR_URI, EntraError, error_uri
from tests.support import (
    authorize_url,
    decode_jwt,
    default_directory_document,
    redeem_code,
    refresh,
    sign_in_for_code,
    token_url,
)

GOLDEN = Path(__file__).parent / "golden"
README = Path(__file__).resolve().parents[2] / "README.md"

# Every known way the emulator answers otherwise than Entra, by name. Each is used by a check
# below (grep for its name), and each appears in the README's parity table.
DIVERGENCES: dict[str, str] = {
    "local-hosts": "Endpoints and the v2 issuer are on https://localhost:<port>, not "
                   "login.microsoftonline.com (the v1 issuer keeps sts.windows.net).",
    "browser-endpoints-on-http": "authorization_endpoint and end_session_endpoint use the "
                                 "plain-http port, so a browser shows no certificate warning.",
    "no-userinfo": "No userinfo_endpoint (v2: Graph's /oidc/userinfo; v1: /openid/userinfo).",
    "no-v1-device-code": "The v1 document has no device_authorization_endpoint: the device code "
                         "flow is served on the v2 endpoints only.",
    "no-kerberos": "No kerberos_endpoint.",
    "no-mtls": "No mTLS: no mtls_endpoint_aliases, tls_client_certificate_bound_access_tokens "
               "or self_signed_tls_client_auth.",
    "no-session-iframe": "The v1 document has no check_session_iframe.",
    "no-xms-ftd": "Access tokens carry no xms_ftd (an Entra-internal claim); aio, rh and uti "
                  "are there, opaque values of the emulator's own.",
    "no-conditional-access": "No Conditional Access: an error never carries `claims`.",
    "error-uri-host": "error_uri always names login.microsoftonline.com; Entra names the host "
                      "the request was sent to (login.windows.net in a 2021 capture).",
    "error-uri-uncaptured-codes": "Codes no capture shows with or without error_uri get it "
                                  "(the common case); Entra's rule is not documented.",
}

# Discovery fields Entra serves and the emulator does not, with the divergence that says why.
MISSING_FIELDS: dict[str, str] = {
    "userinfo_endpoint": "no-userinfo",
    "device_authorization_endpoint": "no-v1-device-code",
    "kerberos_endpoint": "no-kerberos",
    "mtls_endpoint_aliases": "no-mtls",
    "tls_client_certificate_bound_access_tokens": "no-mtls",
    "check_session_iframe": "no-session-iframe",
}
# Values that differ, field: (the values the emulator leaves out, divergence).
MISSING_VALUES: dict[str, tuple[set[str], str]] = {
    "token_endpoint_auth_methods_supported": ({"self_signed_tls_client_auth"}, "no-mtls"),
}
BROWSER_FIELDS = {"authorization_endpoint", "end_session_endpoint"}  # browser-endpoints-on-http
INTERNAL_CLAIMS = {"xms_ftd"}                                        # no-xms-ftd
NEVER_SENT = {"claims": "no-conditional-access"}

TODO_API = "a7b3c1d2-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
NIL_GUID = "00000000-0000-0000-0000-000000000000"


def golden(name: str) -> dict[str, Any]:
    return json.loads((GOLDEN / name).read_text())


def divergence(name: str) -> str:
    assert name in DIVERGENCES, f"divergence {name!r} is not listed in DIVERGENCES"
    return name


ERRORS = golden("token-errors.json")
FORMATS = ERRORS["formats"]
GUID = FORMATS["guid"]
TIMESTAMP = FORMATS["timestamp"]
DESCRIPTION = re.compile(FORMATS["description"].replace("{guid}", GUID)
                         .replace("{timestamp}", TIMESTAMP), re.S)


def message_pattern(template: str) -> re.Pattern[str]:
    pattern = re.escape(template)
    for placeholder, regex in {"{app-id}": r"[^']+", "{tenant}": r"\S+", "{guid}": GUID,
                               "{any}": ".*?"}.items():
        pattern = pattern.replace(re.escape(placeholder), regex)
    return re.compile(pattern + "$", re.S)


# ---------------------------------------------------------------------------------------------
# The fixtures themselves
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(p.name for p in GOLDEN.glob("*.json")))
def test_every_fixture_names_its_sources_and_dates(name):
    fixture = golden(name)
    assert fixture["captured"] and fixture["surface"]
    assert fixture["sources"]
    for source in fixture["sources"]:
        assert {"name", "what", "where", "captured"} <= set(source), source


def test_the_fixtures_record_the_older_description_tail():
    older = ERRORS["older_forms"][0]["description"]
    old = re.compile(older.replace("{guid}", GUID).replace("{timestamp}", TIMESTAMP), re.S)
    sample = (f"AADSTS70011: x.\r\nTrace ID: {uuid.uuid4()}\r\nCorrelation ID: {uuid.uuid4()}"
              "\r\nTimestamp: 2016-01-09 02:02:12Z")
    assert old.match(sample) and not DESCRIPTION.match(sample)


# ---------------------------------------------------------------------------------------------
# Discovery
# ---------------------------------------------------------------------------------------------

def get(emu, path: str) -> requests.Response:
    return requests.get(f"{emu.https_base}{path}", verify=emu.ca_bundle, timeout=10)


def check_discovery(emu, fixture: dict[str, Any], doc: dict[str, Any], *, segment: str,
                    alias: bool, v1: bool = False) -> None:
    missing = set(fixture["fields"]) - set(doc)
    expected_missing = {f for f, why in MISSING_FIELDS.items() if f in fixture["fields"]
                        and (v1 or not why.startswith("no-v1-"))}
    assert missing == expected_missing, (
        "fields Entra serves that the emulator leaves out, beyond the listed divergences: "
        f"{missing - expected_missing}; listed but now served (drop from MISSING_FIELDS): "
        f"{expected_missing - missing}")
    for name in missing:
        divergence(MISSING_FIELDS[name])
    extra = set(doc) - set(fixture["fields"])
    assert not extra, f"fields Entra does not serve: {extra}"

    for name, value in fixture["values"].items():
        if name in missing:
            continue
        if name in MISSING_VALUES:
            left_out, why = MISSING_VALUES[name]
            divergence(why)
            assert sorted(doc[name]) == sorted(set(value) - left_out), name
        else:
            assert doc[name] == value, name

    for name, template in fixture["urls"].items():
        if name in missing:
            continue
        base = emu.https_base                     # local-hosts
        if name in BROWSER_FIELDS:
            base = emu.http_base                  # browser-endpoints-on-http
            divergence("browser-endpoints-on-http")
        divergence("local-hosts")
        assert doc[name] == template.replace("{login}", base).replace("{segment}", segment), name

    issuer = fixture["issuer"]["alias" if alias else "tenant"]
    expected_issuer = (issuer.replace("{login}", emu.https_base)
                       .replace("{tid}", emu.tenant_id))
    assert doc["issuer"] == expected_issuer

    region = fixture["tenant_region_scope"]
    if alias:
        assert doc["tenant_region_scope"] is region["alias"]
    else:
        assert re.fullmatch(region["tenant_pattern"], doc["tenant_region_scope"])


@pytest.mark.parametrize("tenant", ["guid", "contoso.onmicrosoft.com", "common", "organizations"])
def test_v2_discovery_conforms(emulator, tenant):
    fixture = golden("discovery-v2.json")
    segment = emulator.tenant_id if tenant == "guid" else tenant
    response = get(emulator, f"/{segment}/v2.0/.well-known/openid-configuration")
    assert response.status_code == 200
    for header, value in fixture["headers"].items():
        assert response.headers[header] == value, header
    alias = tenant in ("common", "organizations")
    check_discovery(emulator, fixture, response.json(),
                    segment=tenant if alias else emulator.tenant_id, alias=alias)


@pytest.mark.parametrize("tenant", ["guid", "common"])
def test_v1_discovery_conforms(emulator, tenant):
    fixture = golden("discovery-v1.json")
    segment = emulator.tenant_id if tenant == "guid" else tenant
    response = get(emulator, f"/{segment}/.well-known/openid-configuration")
    assert response.status_code == 200
    check_discovery(emulator, fixture, response.json(), segment=segment,
                    alias=tenant == "common", v1=True)


# ---------------------------------------------------------------------------------------------
# Token responses
# ---------------------------------------------------------------------------------------------

def post_token(emu, data: dict[str, str | None], *, tenant: str | None = None,
               correlation: str | None = None) -> requests.Response:
    headers = {"client-request-id": correlation} if correlation else {}
    return requests.post(token_url(emu, tenant),
                         data={k: v for k, v in data.items() if v is not None},
                         headers=headers, verify=emu.ca_bundle, timeout=10)


def client_credentials(app, **change: str | None) -> dict[str, str | None]:
    return {"client_id": app.client_id, "client_secret": app.client_secret,
            "grant_type": "client_credentials",
            "scope": "https://graph.microsoft.com/.default", **change}


def check_success(response: requests.Response, expected: dict[str, Any],
                  fields: set[str]) -> dict[str, Any]:
    assert response.status_code == expected["status"], response.text
    body = response.json()
    optional = set(expected.get("optional_fields", []))
    assert set(body) - optional == fields, set(body) ^ fields
    assert body["token_type"] == expected["token_type"]
    for name in expected["integer_fields"]:
        assert isinstance(body[name], int) and body[name] > 0, name
    for header, value in golden("token-responses.json")["headers"].items():
        assert response.headers[header] == value, header
    return body


def test_client_credentials_response_conforms(emulator, default_app):
    expected = golden("token-responses.json")["responses"]["client_credentials"]
    check_success(post_token(emulator, client_credentials(default_app)), expected,
                  set(expected["fields"]))


def test_authorization_code_response_conforms(emulator, default_app):
    expected = golden("token-responses.json")["responses"]["authorization_code"]
    response = redeem_code(emulator, default_app, sign_in_for_code(emulator, default_app))
    body = check_success(response, expected, set(expected["fields"]))
    # A refresh answers with the same envelope (its request also sends client_info=1).
    check_success(refresh(emulator, default_app, body["refresh_token"]), expected,
                  set(expected["fields"]))


def test_app_only_v2_access_token_conforms(emulator, default_app):
    expected = golden("token-responses.json")["app_only_v2_access_token"]
    response = post_token(emulator, client_credentials(
        default_app, scope=f"api://{TODO_API}/.default"))
    assert response.status_code == 200, response.text
    header, claims = decode_jwt(response.json()["access_token"])
    assert header["alg"] == expected["header"]["alg"]
    assert header["typ"] == expected["header"]["typ"]
    assert set(expected["header"]["has"]) <= set(header)
    assert not set(expected["header"]["absent"]) & set(header)

    captured = set(expected["claim_names"])
    divergence("no-xms-ftd")
    assert captured - set(claims) == INTERNAL_CLAIMS
    # Not divergences: Entra adds these under the same configuration (the capture's app held no
    # app role on its API, and its API asked for no optional claim).
    because_configured = {"roles": "the client holds ToDoList.Read.All on the Todo API",
                          "idtyp": "the Todo API asks for the idtyp optional claim"}
    assert set(claims) - captured <= set(because_configured), set(claims) - captured

    structural = expected["structural"]
    assert claims["ver"] == structural["ver"]
    divergence("local-hosts")
    assert claims["iss"] == structural["iss"].replace("{login}", emulator.https_base).replace(
        "{tid}", emulator.tenant_id)
    assert claims["aud"] == TODO_API
    assert claims["tid"] == emulator.tenant_id
    assert "appid" not in claims
    assert claims["azp"] == default_app.client_id


# ---------------------------------------------------------------------------------------------
# Error envelopes
# ---------------------------------------------------------------------------------------------

def unknown_client(app, **change: str | None) -> dict[str, str | None]:
    return client_credentials(app, client_id="11111111-2222-3333-4444-555555555555", **change)


# How to make the emulator give each captured error (the request of the capture where known).
TRIGGERS = {
    "invalid-client-secret": lambda emu, app, cid: post_token(
        emu, client_credentials(app, client_secret="not-the-secret"), correlation=cid),
    "unregistered-resource": lambda emu, app, cid: post_token(
        emu, client_credentials(app, scope="api://not-a-registered-resource/.default"),
        correlation=cid),
    "unsupported-grant-type": lambda emu, app, cid: post_token(
        emu, client_credentials(app, grant_type="no_such_grant"), correlation=cid),
    "all-zero-client-id": lambda emu, app, cid: post_token(
        emu, client_credentials(app, client_id=NIL_GUID), correlation=cid),
    "unknown-client": lambda emu, app, cid: post_token(
        emu, unknown_client(app), correlation=cid),
    "missing-client-credential": lambda emu, app, cid: post_token(
        emu, client_credentials(app, client_secret=None), correlation=cid),
    "missing-parameter": lambda emu, app, cid: post_token(
        emu, client_credentials(app, scope=None), correlation=cid),
    "unknown-tenant": lambda emu, app, cid: post_token(
        emu, client_credentials(app), tenant="nowhere.example", correlation=cid),
    "malformed-grant": lambda emu, app, cid: refresh(emu, app, "not-a-refresh-token"),
    "invalid-scope": lambda emu, app, cid: redeem_code(
        emu, app, sign_in_for_code(emu, app), scope="Not.A.Scope"),
}
SENDS_NO_CORRELATION_ID = {"malformed-grant", "invalid-scope"}
EXPIRED_APP = "5d0c7a3e-1b2f-4c6d-8e9a-0b1c2d3e4f5a"


@pytest.fixture(scope="module")
def expired_secret_emulator(entra_emulators):
    document = default_directory_document()
    document["applications"].append(
        {"appId": EXPIRED_APP, "displayName": "expired-secret",
         "passwordCredentials": [{"secretText": "old-secret",
                                  "endDateTime": "2020-01-01T00:00:00Z"}]})
    return entra_emulators.get(document).server


def test_every_captured_error_has_a_trigger():
    assert {case["id"] for case in ERRORS["cases"]} == set(TRIGGERS) | {"expired-client-secret"}


def check_error(response: requests.Response, case: dict[str, Any],
                correlation: str | None) -> dict[str, Any]:
    body = response.json()
    assert response.status_code == case["status"], body
    assert body["error"] == case["error"], body
    assert body["error_codes"] == [case["code"]], body

    envelope = ERRORS["envelope"]
    assert set(envelope["fields"]) <= set(body), body
    assert set(body) <= set(envelope["fields"]) | set(envelope["optional_fields"]), body
    for name, why in NEVER_SENT.items():
        divergence(why)
        assert name not in body

    match = DESCRIPTION.match(body["error_description"])
    assert match, body["error_description"]
    assert match["code"] == str(case["code"])
    assert message_pattern(case["message"]).match(match["message"]), match["message"]
    assert match["trace_id"] == body["trace_id"]
    assert match["correlation_id"] == body["correlation_id"]
    assert match["timestamp"] == body["timestamp"]
    assert re.fullmatch(GUID, body["trace_id"]) and re.fullmatch(GUID, body["correlation_id"])
    assert re.fullmatch(TIMESTAMP, body["timestamp"])
    if correlation:
        assert body["correlation_id"] == correlation

    if case["error_uri"] is None:      # not known for Entra: the emulator sends it
        divergence("error-uri-uncaptured-codes")
        assert "error_uri" in body
    else:
        assert ("error_uri" in body) is case["error_uri"], body
    if "error_uri" in body:
        divergence("error-uri-host")
        assert body["error_uri"] == FORMATS["error_uri"].replace("{code}", str(case["code"]))
    return body


@pytest.mark.parametrize("case", [c for c in ERRORS["cases"] if c["id"] in TRIGGERS],
                         ids=lambda c: c["id"])
def test_token_error_conforms(emulator, default_app, case):
    correlation = None if case["id"] in SENDS_NO_CORRELATION_ID else str(uuid.uuid4())
    check_error(TRIGGERS[case["id"]](emulator, default_app, correlation), case, correlation)


def test_expired_secret_error_conforms(expired_secret_emulator):
    case = next(c for c in ERRORS["cases"] if c["id"] == "expired-client-secret")
    emu = expired_secret_emulator
    response = post_token(emu, {"client_id": EXPIRED_APP, "client_secret": "old-secret",
                                "grant_type": "client_credentials",
                                "scope": "https://graph.microsoft.com/.default"})
    check_error(response, case, None)


def test_all_zero_client_id_at_authorize_is_entras_error_page(emulator, default_app):
    page = golden("token-errors.json")["authorize_error_pages"][0]
    response = requests.get(authorize_url(emulator, NIL_GUID,
                                          redirect_uri=default_app.redirect_uri),
                            allow_redirects=False, timeout=10)
    assert response.status_code == 400
    assert "Location" not in response.headers
    assert html.escape(page["message"], quote=True) in response.text


def test_error_uri_is_left_out_only_where_captures_leave_it_out():
    without = {c["code"] for c in ERRORS["cases"] if c["error_uri"] is False}
    assert without == set(NO_ERROR_URI)
    for name, (code, *_rest) in CATALOGUE.items():
        has_uri = bool(error_uri(EntraError(name, _fields_for(name))))
        assert has_uri is (code not in without), name
        if has_uri and not any(c["code"] == code for c in ERRORS["cases"]):
            divergence("error-uri-uncaptured-codes")


def _fields_for(name: str) -> dict[str, str]:
    return {key: "x" for key in re.findall(r"{(\w+)}", CATALOGUE[name][3])}


# ---------------------------------------------------------------------------------------------
# The README's parity table
# ---------------------------------------------------------------------------------------------

def parity_section() -> str:
    text = README.read_text()
    start = text.index("### Parity with Entra")
    end = re.search(r"^#{2,3} ", text[start + 4:], re.M)
    return text[start:start + 4 + end.start()] if end else text[start:]


def test_every_divergence_is_in_the_readme_parity_table():
    section = parity_section()
    missing = [name for name in DIVERGENCES if f"`{name}`" not in section]
    assert not missing, f"divergences not in the README's parity table: {missing}"


def test_every_divergence_is_checked_somewhere():
    source = Path(__file__).read_text()
    for name in DIVERGENCES:
        # Once as a key of DIVERGENCES, and at least once more where a check names it.
        assert source.count(f'"{name}"') >= 2, f"{name} is listed but no check names it"
