"""RFC 9207's `iss` authorization response parameter (security checklist section C, mix-up):
off by default, as Entra is not known to send it; an option (EmulatorServer keyword, EmulatorConfig
field, CLI flag) puts it in every authorization response and advertises it in the v2 discovery
document; and two defects, `authz_iss_wrong` and `authz_iss_missing`, spoil the next response for
a client the way a mix-up attacker (or a broken server) would."""

from __future__ import annotations

import signal
from typing import Any

import pytest
import requests
from dotenv import dotenv_values

from entra_emulator.app import EmulatorConfig, create_app
from entra_emulator.server import EmulatorServer
from tests.emulator.test_cli import read_until_ready, start_cli
from tests.support import (
    ADELE,
    DEFAULT_PASSWORD,
    MEGAN,
    authorize_url,
    browser_sign_in,
    decode_jwt,
    issuer_of,
    params_of,
    redeem_code,
    sign_in_for_code,
)

ISS_SUPPORTED = "authorization_response_iss_parameter_supported"


def v2_discovery(emu: EmulatorServer, tenant: str | None = None) -> dict[str, Any]:
    return requests.get(f"{emu.https_base}/{tenant or emu.tenant_id}/v2.0/.well-known/"
                        "openid-configuration", timeout=10).json()


def silent_authorize(emu: EmulatorServer, app: Any, browser: requests.Session | None = None,
                     **params: str) -> dict[str, str]:
    """authorize with prompt=none: a redirect back to the app at once (code or error)."""
    response = (browser or requests.Session()).get(authorize_url(
        emu, app.client_id, redirect_uri=app.redirect_uri, prompt="none", state="xyz",
        **params), allow_redirects=False)
    assert response.status_code == 302, response.text[:300]
    return params_of(response.headers["Location"])


def signed_in_browser(emu: EmulatorServer, app: Any) -> requests.Session:
    browser = requests.Session()
    sign_in_for_code(emu, app, ADELE, session=browser)
    return browser


# ---------------------------------------------------------------------------------------------
# Off by default
# ---------------------------------------------------------------------------------------------

def test_off_by_default_nothing_sent_nor_advertised(emulator, default_app):
    assert ISS_SUPPORTED not in v2_discovery(emulator)
    grant = sign_in_for_code(emulator, default_app, ADELE)
    assert "iss" not in grant.result.params
    assert "iss" not in silent_authorize(emulator, default_app)   # an error response


def test_the_config_field_defaults_off_and_reaches_the_app(tmp_path):
    assert EmulatorConfig().authorization_response_iss is False
    app = create_app(EmulatorConfig(state_dir=tmp_path, authorization_response_iss=True))
    with app.test_client() as client:
        tenant = app.extensions["entra_emulator"].directory.tenant_id
        doc = client.get(f"/{tenant}/v2.0/.well-known/openid-configuration").get_json()
    assert doc[ISS_SUPPORTED] is True


# ---------------------------------------------------------------------------------------------
# On: every authorization response, success and error, query and form_post
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("tenant", [None, "common", "contoso.onmicrosoft.com"])
def test_v2_discovery_advertises_it(iss_emulator, tenant):
    assert v2_discovery(iss_emulator, tenant)[ISS_SUPPORTED] is True


def test_v1_discovery_is_unchanged(iss_emulator):
    v1 = requests.get(f"{iss_emulator.authority}/.well-known/openid-configuration",
                      timeout=10).json()
    assert ISS_SUPPORTED not in v1


@pytest.mark.parametrize("response_mode", ["query", "form_post", "fragment"])
def test_success_responses_carry_the_issuer(iss_emulator, default_app, response_mode):
    grant = sign_in_for_code(iss_emulator, default_app, ADELE, response_mode=response_mode)
    assert grant.result.params["iss"] == issuer_of(iss_emulator)
    if response_mode == "form_post":
        assert grant.result.method == "POST"
    # ... and it is the ID token's issuer: what an app compares it with.
    body = redeem_code(iss_emulator, default_app, grant).json()
    assert decode_jwt(body["id_token"])[1]["iss"] == grant.result.params["iss"]


def test_common_tenant_responses_name_the_users_tenant(iss_emulator, default_app):
    """The document's issuer is the `{tenantid}` template; a response names the real one."""
    grant = sign_in_for_code(iss_emulator, default_app, ADELE, tenant="common")
    assert grant.result.params["iss"] == issuer_of(iss_emulator)
    assert "{tenantid}" in v2_discovery(iss_emulator, "common")["issuer"]


@pytest.mark.parametrize("response_mode", ["query", "form_post"])
def test_error_responses_carry_the_issuer(iss_emulator, default_app, response_mode):
    # prompt=none without a session: login_required, back to the app at once.
    result = browser_sign_in(authorize_url(
        iss_emulator, default_app.client_id, redirect_uri=default_app.redirect_uri,
        prompt="none", state="xyz", response_mode=response_mode), ADELE, DEFAULT_PASSWORD)
    assert result.method == ("POST" if response_mode == "form_post" else "GET")
    assert result.params["error"] == "login_required"
    assert result.params["state"] == "xyz"
    assert result.params["iss"] == issuer_of(iss_emulator)


def test_every_kind_of_error_redirect_carries_the_issuer(iss_emulator, default_app):
    url = authorize_url(iss_emulator, default_app.client_id,
                        redirect_uri=default_app.redirect_uri, state="xyz")
    # Refused before the response mode is known (answered in the query).
    bad_mode = requests.get(url + "&response_mode=telepathy", allow_redirects=False)
    assert params_of(bad_mode.headers["Location"])["iss"] == issuer_of(iss_emulator)
    # A bad parameter after it.
    bad_prompt = requests.get(url + "&prompt=sometimes", allow_redirects=False)
    assert params_of(bad_prompt.headers["Location"])["iss"] == issuer_of(iss_emulator)
    # The user cancelling consent (a fresh user of this emulator).
    cancelled = browser_sign_in(url, "LeeG@contoso.onmicrosoft.com", DEFAULT_PASSWORD,
                                consent="cancel")
    assert cancelled.params["error"] == "access_denied"
    assert cancelled.params["iss"] == issuer_of(iss_emulator)


# ---------------------------------------------------------------------------------------------
# The defects
# ---------------------------------------------------------------------------------------------

def test_authz_iss_wrong_spoils_only_the_next_response(iss_emulator, default_app):
    browser = signed_in_browser(iss_emulator, default_app)
    iss_emulator.defects.add(default_app.client_id, "authz_iss_wrong")

    spoiled = silent_authorize(iss_emulator, default_app, browser)
    after = silent_authorize(iss_emulator, default_app, browser)

    assert "code" in spoiled and spoiled["iss"] == issuer_of(iss_emulator) + "1"
    assert after["iss"] == issuer_of(iss_emulator)
    assert iss_emulator.defects.pending() == []


def test_authz_iss_wrong_is_sent_even_where_iss_is_not_advertised(emulator, default_app):
    """An app must refuse an `iss` that is present and wrong, whatever the metadata says."""
    emulator.defects.add(default_app.client_id, "authz_iss_wrong")
    params = silent_authorize(emulator, default_app)   # an error response, login_required
    assert params["error"] == "login_required"
    assert params["iss"] == issuer_of(emulator) + "1"
    assert "iss" not in silent_authorize(emulator, default_app)


def test_authz_iss_missing_leaves_it_out_once_while_still_advertised(iss_emulator,
                                                                     default_app):
    browser = signed_in_browser(iss_emulator, default_app)
    iss_emulator.defects.add(default_app.client_id, "authz_iss_missing", count=2)

    first = silent_authorize(iss_emulator, default_app, browser)
    second = silent_authorize(iss_emulator, default_app, browser, response_mode="fragment")
    third = silent_authorize(iss_emulator, default_app, browser)

    assert "code" in first and "iss" not in first
    assert "code" in second and "iss" not in second
    assert third["iss"] == issuer_of(iss_emulator)
    assert v2_discovery(iss_emulator)[ISS_SUPPORTED] is True


def test_authz_iss_missing_is_refused_where_iss_is_never_sent(emulator, default_app):
    with pytest.raises(ValueError, match="authz_iss_missing needs the emulator to send"):
        emulator.defects.add(default_app.client_id, "authz_iss_missing")
    response = requests.post(f"{emulator.https_base}/_emulator/defects", timeout=10, json={
        "client_id": default_app.client_id, "defect": "authz_iss_missing"})
    assert response.status_code == 400
    assert "--authorization-response-iss" in response.json()["error_description"]
    assert emulator.defects.pending() == []


def test_admin_endpoint_injects_the_authorization_response_defects(iss_emulator,
                                                                   default_app):
    admin = f"{iss_emulator.https_base}/_emulator/defects"
    for defect in ("authz_iss_wrong", "authz_iss_missing"):
        added = requests.post(admin, timeout=10,
                              json={"client_id": default_app.client_id, "defect": defect})
        assert added.status_code == 201, added.text
    assert requests.get(admin, timeout=10).json()["pending"] == [
        {"client_id": default_app.client_id, "defect": "authz_iss_wrong"},
        {"client_id": default_app.client_id, "defect": "authz_iss_missing"}]

    browser = signed_in_browser(iss_emulator, default_app)   # consumes the first
    assert "iss" not in silent_authorize(iss_emulator, default_app, browser)
    assert requests.delete(admin, timeout=10).json() == {"pending": []}


def test_id_token_and_authorization_response_defects_share_a_queue_but_not_a_turn(
        iss_emulator, default_app):
    """An ID-token defect waits for an ID token, whatever authorization responses come
    first; an authorization-response defect waits for a response, whatever tokens come."""
    iss_emulator.defects.add(default_app.client_id, "wrong_nonce")
    iss_emulator.defects.add(default_app.client_id, "authz_iss_wrong")

    grant = sign_in_for_code(iss_emulator, default_app, MEGAN)
    assert grant.result.params["iss"] == issuer_of(iss_emulator) + "1"
    assert iss_emulator.defects.pending() == [
        {"client_id": default_app.client_id, "defect": "wrong_nonce"}]
    body = redeem_code(iss_emulator, default_app, grant).json()
    assert decode_jwt(body["id_token"])[1]["nonce"] != grant.nonce
    assert iss_emulator.defects.pending() == []


# ---------------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------------

def test_cli_flag_turns_it_on(tmp_path):
    env_file = tmp_path / "emulator.env"
    process = start_cli(tmp_path, "--env-file", str(env_file), "--authorization-response-iss")
    try:
        read_until_ready(process)
        settings = dotenv_values(env_file)
        doc = requests.get(f"{settings['AUTHORITY']}/v2.0/.well-known/openid-configuration",
                           verify=settings["REQUESTS_CA_BUNDLE"], timeout=10).json()
        assert doc[ISS_SUPPORTED] is True
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    assert process.returncode == 0
