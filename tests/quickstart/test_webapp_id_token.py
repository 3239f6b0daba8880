"""ID-token validation by the app (security checklist B3, B4, B6, B7, B8), through the emulator's
defect injection. A refused sign-in must persist nothing: MSAL writes tokens into its cache before
any check runs, so the test signs in first and checks the stored session and flask_entra's records
(the sealed token caches) are byte-for-byte unchanged after the refused second sign-in."""

from __future__ import annotations

import pytest

from tests.quickstart.webapp_support import (
    MEGAN,
    Browser,
    CallRecorder,
    registered_app,
    stored_records,
    stored_sessions,
)

REFUSALS = {
    "bad_signature": "signature does not verify",
    "alg_none": "signing algorithm &#39;none&#39; is not allowed",
    "hs256_public_key": "signing algorithm &#39;HS256&#39; is not allowed",
    "wrong_iss": "comes from another issuer (iss)",
    "wrong_aud": "not meant for this app (aud)",
    "wrong_nonce": "nonce is not the one this sign-in sent",
    "missing_sub": "lacks the sub claim",
    "missing_iat": "lacks the iat claim",
    "expired": "has expired",
    "iat_future": "dated in the future",
    "unknown_kid": "key the provider does not publish",
    "aud_extra": "also meant for other audiences (aud)",
    "azp_wrong": "issued to another party (azp)",
}

# Query-mode sign-ins are used on purpose here; MSAL warns about each one.
pytestmark = pytest.mark.filterwarnings("ignore:response_mode=.form_post. is recommended")


@pytest.fixture
def query_app(make_app):
    # Query mode: the browser's session cookie reaches the callback, the harder case for
    # "nothing persisted" (in form_post the cross-site POST carries no session at all).
    return make_app(RESPONSE_MODE="query")


@pytest.fixture
def signed_in(query_app, emulator, browser_sign_in_fn):
    browser = Browser(query_app, emulator, browser_sign_in_fn)
    assert browser.sign_in().status_code == 303
    return browser


@pytest.mark.parametrize("defect", sorted(REFUSALS))
def test_defective_id_token_is_refused_and_nothing_persisted(query_app, signed_in, emulator,
                                                            defect):
    before = stored_sessions(query_app)
    records_before = stored_records(query_app)
    cookie_before = signed_in.cookie().value
    emulator.defects.add(registered_app(emulator).app_id, defect)

    response = signed_in.sign_in(username=MEGAN)

    body = response.get_data(as_text=True)
    assert response.status_code == 400, body
    assert "ID token failed validation" in body
    assert REFUSALS[defect] in body
    assert stored_sessions(query_app) == before  # tokens from that response went nowhere
    assert stored_records(query_app) == records_before
    assert signed_in.cookie().value == cookie_before
    assert not [c for c in response.headers.getlist("Set-Cookie") if c.startswith("session=")]
    assert "Adele Vance" in signed_in.client.get("/").get_data(as_text=True)


def test_rotated_signing_key_is_accepted_after_one_jwks_refetch(query_app, signed_in, emulator):
    calls = CallRecorder(query_app)
    emulator.defects.add(registered_app(emulator).app_id, "rotated_key")
    response = signed_in.sign_in(username=MEGAN)
    assert response.status_code == 303, response.get_data(as_text=True)
    assert calls.count("GET", "/discovery/v2.0/keys") == 1
    assert "Megan Bowen" in signed_in.client.get("/").get_data(as_text=True)


def test_unknown_kid_refetches_jwks_once_then_is_rate_limited(query_app, signed_in, emulator):
    calls = CallRecorder(query_app)
    client_id = registered_app(emulator).app_id
    emulator.defects.add(client_id, "unknown_kid")
    assert signed_in.sign_in(username=MEGAN).status_code == 400
    assert calls.count("GET", "/discovery/v2.0/keys") == 1
    emulator.defects.add(client_id, "unknown_kid")
    assert signed_in.sign_in(username=MEGAN).status_code == 400
    assert calls.count("GET", "/discovery/v2.0/keys") == 1  # no second fetch so soon


def test_form_post_sign_in_with_defect_creates_no_session(app, browser, emulator):
    records_before = stored_records(app)
    emulator.defects.add(registered_app(emulator).app_id, "wrong_nonce")
    response = browser.sign_in()
    assert response.status_code == 400
    assert stored_sessions(app) == {}
    assert stored_records(app) == records_before
    assert browser.cookie() is None


def test_a_token_without_kid_is_accepted_only_while_one_key_is_published(
        make_app, start_emulator, browser_sign_in_fn):
    """OpenID RP certification rp-id_token-kid-absent-single-jwks: with one published signing
    key a token without `kid` can only be signed with it; with several it is refused rather than
    tried against each. The emulator's own keys: rotating them must not disturb other tests."""
    emu = start_emulator()
    assert len(emu.keys.published) == 1
    app = make_app(emu, RESPONSE_MODE="query")
    browser = Browser(app, emu, browser_sign_in_fn)
    emu.defects.add(registered_app(emu).app_id, "no_kid")
    response = browser.sign_in()
    assert response.status_code == 303, response.get_data(as_text=True)
    assert "Adele Vance" in browser.client.get("/").get_data(as_text=True)

    emu.keys.rotate()
    assert len(emu.keys.published) == 2
    app = make_app(emu, RESPONSE_MODE="query")  # a new process: it reads the two keys
    browser = Browser(app, emu, browser_sign_in_fn)
    records_before = stored_records(app)
    sessions_before = stored_sessions(app)
    emu.defects.add(registered_app(emu).app_id, "no_kid")
    response = browser.sign_in(username=MEGAN)
    body = response.get_data(as_text=True)
    assert response.status_code == 400, body
    assert "ID token failed validation" in body
    assert "does not name its signing key (kid) and the provider publishes several" in body
    assert stored_sessions(app) == sessions_before and stored_records(app) == records_before
    assert browser.cookie() is None
