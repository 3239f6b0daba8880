"""OpenID Connect Back-Channel Logout 1.0 (security checklist SEC-F4): POST /backchannel-logout,
opt-in (BACKCHANNEL_LOGOUT=true, flask_entra's backchannel_logout).

Users sign in through the real emulator; the logout tokens the provider would send are minted here
with the emulator's own signing keys (Entra itself sends none), and posted by a client without the
user's cookies, as the provider does. A valid token ends the sessions it names and only those;
every invalid one is a 400 in OAuth's error shape that leaves every session as it was.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import hmac
import io
import json
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from entra_emulator.keys import SigningKey
from flask_entra import StoreUnavailable, backchannel  # backchannel: its store keys, for tests
from tests.quickstart.webapp_support import (
    ADELE,
    MEGAN,
    Browser,
    entra,
    entry_of,
    session_of,
    stored_sessions,
    token_cache_of,
)

ENDPOINT = "/backchannel-logout"
LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
REMOVE = object()  # a claim value meaning "leave this claim out"
ON = {"BACKCHANNEL_LOGOUT": "true"}


# -- minting and sending logout tokens ---------------------------------------------------------

def signed_in_claims(app, browser: Browser) -> dict[str, Any]:
    """The ID-token claims of the browser's session: the iss, sub and sid a provider would name
    (with Redis sessions, read from the ID token kept with the session's tokens)."""
    if hasattr(app.session_interface, "cache"):
        return entry_of(app, browser)["claims"]
    id_token = next(iter(token_cache_of(app, browser)["IdToken"].values()))["secret"]
    return jwt.decode(id_token, options={"verify_signature": False})


def logout_claims(of: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A valid logout token's claims for the session whose ID-token claims are `of` (by sid);
    `changes` replace claims, REMOVE drops one."""
    now = int(time.time())
    claims = {"iss": of["iss"], "aud": of["aud"], "iat": now, "exp": now + 120,
              "jti": secrets.token_urlsafe(16), "sid": of["sid"], "events": {LOGOUT_EVENT: {}},
              **changes}
    return {name: value for name, value in claims.items() if value is not REMOVE}


def sign(emulator, claims: dict[str, Any]) -> str:
    """Signed as the provider signs: its current RS256 key, explicitly typed (§2.4)."""
    return emulator.keys.sign(claims, headers={"typ": "logout+jwt"})


def send(app, token: str | None = None, **post: Any):
    """POST to the endpoint as the provider does: its own client, no cookie, no CSRF token."""
    if token is not None:
        post.setdefault("data", {"logout_token": token})
    return app.test_client().post(ENDPOINT, **post)


def read(app, key: str) -> Any:
    raw = entra(app).store.get(key)
    return None if raw is None else json.loads(raw)


def index_keys(claims: dict[str, Any]) -> list[str]:
    """The index keys a session of these ID-token claims goes under: its sub's and its sid's."""
    return [prefix + backchannel._digest(claims["iss"], value)
            for prefix, value in ((backchannel.SUB_INDEX, claims["sub"]),
                                  (backchannel.SID_INDEX, claims["sid"]))]


def sign_in_times(app, browser: Browser) -> list[float]:
    """The sign-in time (what a logout token's iat is compared with) the browser's session has
    in each of its index entries."""
    session_id = browser.cookie().value
    return [e["since"] for key in index_keys(signed_in_claims(app, browser))
            for e in read(app, key) or () if e["session"] == session_id]


def set_sign_in_time(app, browser: Browser, since: float) -> None:
    """As if the browser's session had signed in with an ID token issued at `since`."""
    session_id = browser.cookie().value
    for key in index_keys(signed_in_claims(app, browser)):
        entries = read(app, key)
        ours = [e for e in entries if e["session"] == session_id]
        assert len(ours) == 1, entries
        ours[0]["since"] = since
        ttl = int(max(e["until"] for e in entries) - time.time()) + 1
        entra(app).store.set(key, json.dumps(entries).encode(), ttl)


def backdate_sign_in(app, browser: Browser, seconds: float) -> None:
    set_sign_in_time(app, browser, sign_in_times(app, browser)[0] - seconds)


def logged_out_marker(app, claims: dict[str, Any]):
    """The logged-out marker a logout token with these claims leaves: its iat, or a later one."""
    if "sid" in claims:
        key = backchannel.ENDED_SID + backchannel._digest(claims["iss"], claims["sid"])
    else:
        key = backchannel.ENDED_SUB + backchannel._digest(claims["iss"], claims["sub"])
    return read(app, key)


def naming(of: dict[str, Any], by: str) -> dict[str, Any]:
    """Logout claims naming the session of the ID-token claims `of` by its sid, or by its user's
    sub alone."""
    return {"sid": of["sid"]} if by == "sid" else {"sid": REMOVE, "sub": of["sub"]}


@contextlib.contextmanager
def when_code_redeemed(app, action: Callable[[dict[str, Any]], None]) -> Iterator[None]:
    """Run `action` with the new ID token's claims when the provider answers the app's code
    redemption: the ID token is issued, and the app has not yet started the session."""
    hooks = entra(app).http.hooks["response"]

    def hook(response, *args: Any, **kwargs: Any):
        body = response.request.body or ""
        if "grant_type=authorization_code" in (body.decode() if isinstance(body, bytes) else body):
            action(jwt.decode(response.json()["id_token"], options={"verify_signature": False}))
        return response

    hooks.append(hook)
    try:
        yield
    finally:
        hooks.remove(hook)


def meanwhile(action: Callable[[], Any]) -> Any:
    """Run `action` in another thread, as another request while one of the app's is under way in
    this one, and wait for its result."""
    results = []
    other = threading.Thread(target=lambda: results.append(action()))
    other.start()
    other.join()
    return results[0]


@contextlib.contextmanager
def backchannel_records_failing(app, monkeypatch) -> Iterator[None]:
    """The store keeps none of the back-channel records (a disk gone wrong, as the file store
    reports it: StoreUnavailable on a write) and finds none; its other records still work."""
    store = entra(app).store
    real_get, real_set = store.get, store.set

    def get(key: str):
        return None if key.startswith("backchannel:") else real_get(key)

    def set_(key: str, value: bytes, ttl: int) -> None:
        if key.startswith("backchannel:"):
            raise StoreUnavailable("could not write")
        real_set(key, value, ttl)

    with monkeypatch.context() as patch:
        patch.setattr(store, "get", get)
        patch.setattr(store, "set", set_)
        yield


def is_signed_in(browser: Browser) -> bool:
    return 'class="user-name"' in browser.client.get("/").get_data(as_text=True)


def signed_in_sessions(app) -> list[dict[str, Any]]:
    return [s for s in stored_sessions(app).values() if "flask_entra" in s]


def assert_ended(response) -> None:
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["Cache-Control"] == "no-store"
    assert response.get_data() == b""
    assert not response.headers.getlist("Set-Cookie")  # no session made for the provider


def assert_refused(response, reason: str, token: str | None = None) -> None:
    body = response.get_json()
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.headers["Cache-Control"] == "no-store"
    assert response.mimetype == "application/json"
    assert body["error"] == "invalid_request"
    assert reason in body["error_description"], body
    assert not response.headers.getlist("Set-Cookie")
    if token and len(token) > 8:
        text = response.get_data(as_text=True)
        assert all(part not in text for part in token.split(".") if len(part) > 8)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# -- fixtures ----------------------------------------------------------------------------------

@pytest.fixture(name="app")
def app_with_backchannel_logout(make_app):
    return make_app(**ON)


@pytest.fixture
def make_browser(emulator, browser_sign_in_fn) -> Callable[..., Browser]:
    def make(app, username: str | None = None, emu=None) -> Browser:
        browser = Browser(app, emu or emulator, browser_sign_in_fn)
        response = browser.sign_in(username=username or ADELE)
        assert response.status_code == 303, response.get_data(as_text=True)
        assert is_signed_in(browser)
        return browser
    return make


@pytest.fixture
def adele(app, make_browser) -> Browser:
    return make_browser(app)


@pytest.fixture
def megan(app, make_browser) -> Browser:
    return make_browser(app, MEGAN)


# -- off by default ----------------------------------------------------------------------------

def test_off_by_default_no_route_and_nothing_indexed(make_app, emulator, make_browser):
    app = make_app()
    browser = make_browser(app)
    of = signed_in_claims(app, browser)
    assert all(read(app, key) is None for key in index_keys(of))

    response = send(app, sign(emulator, logout_claims(of)))

    assert response.status_code == 404
    assert is_signed_in(browser)
    assert all(read(app, key) is None for key in index_keys(of))
    # Turned on, a sign-in is indexed.
    on = make_app(**ON)
    assert all(read(on, key) for key in index_keys(signed_in_claims(on, make_browser(on))))


# -- valid logout tokens -----------------------------------------------------------------------

def test_a_token_by_sid_ends_that_session_only(app, emulator, make_browser, adele, megan):
    adele_elsewhere = make_browser(app)  # the same user, another browser: another provider sid
    of = signed_in_claims(app, adele)
    assert signed_in_claims(app, adele_elsewhere)["sid"] != of["sid"]
    before = signed_in_sessions(app)

    assert_ended(send(app, sign(emulator, logout_claims(of))))

    assert session_of(app, adele) is None
    assert entra(app).tokens.load_cache(adele.cookie().value) is None
    assert len(signed_in_sessions(app)) == len(before) - 1
    page = adele.client.get("/").get_data(as_text=True)
    assert "Sign in" in page and "Adele Vance" not in page
    assert is_signed_in(adele_elsewhere)
    assert is_signed_in(megan)


def test_a_token_by_sub_ends_all_of_that_users_sessions(app, emulator, make_browser, adele,
                                                        megan):
    adele_elsewhere = make_browser(app)
    of = signed_in_claims(app, adele)

    assert_ended(send(app, sign(emulator, logout_claims(of, sid=REMOVE, sub=of["sub"]))))

    assert not is_signed_in(adele)
    assert not is_signed_in(adele_elsewhere)
    assert is_signed_in(megan)
    assert len(signed_in_sessions(app)) == 1


def test_a_token_by_sid_and_sub_ends_the_session_of_that_sid_and_user(app, emulator,
                                                                      make_browser, adele, megan):
    adele_elsewhere = make_browser(app)
    of = signed_in_claims(app, adele)
    # Valid, so 200 (§2.8), but the provider session's recorded user is not the one named.
    wrong_user = signed_in_claims(app, megan)["sub"]
    assert_ended(send(app, sign(emulator, logout_claims(of, sub=wrong_user))))
    assert is_signed_in(adele)

    assert_ended(send(app, sign(emulator, logout_claims(of, sub=of["sub"]))))
    assert not is_signed_in(adele)
    assert is_signed_in(adele_elsewhere)
    assert is_signed_in(megan)


def test_a_token_for_no_known_session_is_accepted_and_ends_nothing(app, emulator, adele):
    of = signed_in_claims(app, adele)
    for claims in (logout_claims(of, sid="no-such-session"),
                   logout_claims(of, sid=REMOVE, sub="no-such-user"),
                   logout_claims(of, sid="\ud800"),  # a lone surrogate, as JSON allows
                   # Claims and events it does not know are ignored (§2.4).
                   logout_claims(of, sid="no-such-session-either", extra=[1],
                                 events={LOGOUT_EVENT: {"reason": 1}, "urn:other": 1})):
        assert_ended(send(app, sign(emulator, claims)))
    assert is_signed_in(adele)


def test_a_replayed_token_is_refused_and_ends_no_new_session(app, emulator, adele):
    # Issued before the sign-in that follows (iat is in whole seconds: a sign-in in the same
    # second as a logout of its sid counts as ended by it).
    backdate_sign_in(app, adele, 3600)
    claims = logout_claims(signed_in_claims(app, adele), iat=int(time.time()) - 600)
    token = sign(emulator, claims)
    assert_ended(send(app, token))
    assert not is_signed_in(adele)
    # Signing in again in the same browser: the provider's SSO session, so the same sid.
    assert adele.sign_in().status_code == 303
    assert signed_in_claims(app, adele)["sid"] == claims["sid"]

    assert_refused(send(app, token), "already used (jti)", token)
    assert is_signed_in(adele)

    # Once its jti is forgotten (after JTI_RETENTION_SECONDS) the replay is accepted, and ends
    # nothing: the session is newer than the token.
    seen = backchannel.SEEN_JTI + backchannel._digest(claims["iss"], claims["jti"])
    assert read(app, seen) is not None
    entra(app).store.delete(seen)
    assert_ended(send(app, token))
    assert is_signed_in(adele)


def test_a_late_token_ends_the_sessions_signed_in_by_its_iat_and_only_those(app, emulator,
                                                                            make_browser, adele,
                                                                            megan):
    # A provider retrying after the app was down for half an hour: its token is that old (§2.6
    # sets no age limit). It ends the user's sessions whose ID token was issued by its iat, not
    # one issued a second later, nor one since: both times are the provider's clock, so there is
    # no skew to allow for.
    adele_at_its_iat, adele_just_after, adele_since = (make_browser(app) for _ in range(3))
    iat = int(time.time()) - 1800
    backdate_sign_in(app, adele, 3600)
    set_sign_in_time(app, adele_at_its_iat, iat)
    set_sign_in_time(app, adele_just_after, iat + 1)
    of = signed_in_claims(app, adele)
    claims = logout_claims(of, sid=REMOVE, sub=of["sub"], iat=iat, exp=REMOVE)

    assert_ended(send(app, sign(emulator, claims)))

    assert not is_signed_in(adele)
    assert not is_signed_in(adele_at_its_iat)
    assert is_signed_in(adele_just_after)
    assert is_signed_in(adele_since)
    assert is_signed_in(megan)


@pytest.mark.parametrize("by", ["sid", "sub"])
def test_the_sign_in_time_is_the_id_tokens_iat(app, emulator, adele, by):
    # The provider's clock, as the logout token's iat is: not the app's time at the callback.
    of = signed_in_claims(app, adele)
    assert sign_in_times(app, adele) == [of["iat"], of["iat"]]

    assert_ended(send(app, sign(emulator, logout_claims(of, iat=of["iat"] - 1, **naming(of, by))))
                 )
    assert is_signed_in(adele)

    assert_ended(send(app, sign(emulator, logout_claims(of, iat=of["iat"], **naming(of, by)))))
    assert not is_signed_in(adele)


def test_index_entries_live_no_longer_than_the_session(make_app, emulator, make_browser):
    app = make_app(SESSION_LIFETIME="600", **ON)
    browser = make_browser(app)
    entries = [e for key in index_keys(signed_in_claims(app, browser)) for e in read(app, key)]
    assert len(entries) == 2
    assert all(e["until"] <= time.time() + 600 for e in entries)


@pytest.mark.parametrize("later_by", [1, 0])  # 0: the same second, which may be the later
@pytest.mark.parametrize("by", ["sid", "sub"])
def test_a_logout_while_the_sign_in_completes_refuses_it(app, emulator, browser, by, later_by):
    # The provider signs the user out after issuing the ID token, and its logout token arrives
    # while the app is still redeeming the code: no session is indexed yet for it to end.
    logouts = []

    def provider_signs_out(id_token: dict[str, Any]) -> None:
        claims = logout_claims(id_token, iat=id_token["iat"] + later_by, **naming(id_token, by))
        logouts.append(meanwhile(lambda: send(app, sign(emulator, claims))))

    started = browser.start()
    assert started.status_code == 302, started.get_data(as_text=True)
    answer = browser.authorize(started.headers["Location"])
    with when_code_redeemed(app, provider_signs_out):
        response = browser.deliver(answer)

    assert len(logouts) == 1
    assert_ended(logouts[0])
    page = response.get_data(as_text=True)
    assert response.status_code == 400, page
    assert "Sign-in failed" in page
    assert "ended this sign-in (it signed you out) while it was completing" in page
    assert not is_signed_in(browser)
    assert not signed_in_sessions(app)


@pytest.mark.parametrize("by", ["sid", "sub"])
def test_a_sign_in_issued_after_a_logout_token_works(app, emulator, adele, by):
    backdate_sign_in(app, adele, 60)
    of = signed_in_claims(app, adele)
    claims = logout_claims(of, iat=of["iat"] - 30, **naming(of, by))
    assert_ended(send(app, sign(emulator, claims)))
    assert not is_signed_in(adele)
    # An older token afterwards does not move the marker back.
    assert_ended(send(app, sign(emulator, {**claims, "iat": claims["iat"] - 100,
                                           "jti": secrets.token_urlsafe(16)})))
    assert logged_out_marker(app, claims) == claims["iat"]

    # The provider's SSO session: the same sid and sub, in an ID token issued after the logout.
    response = adele.sign_in()

    assert response.status_code == 303, response.get_data(as_text=True)
    assert is_signed_in(adele)
    assert signed_in_claims(app, adele)["sid"] == of["sid"]


def test_a_sign_in_while_a_logout_ends_sessions_stays_indexed(app, emulator, make_browser, adele,
                                                              monkeypatch):
    # The logout read the index, and ends the sessions it found; a sign-in of the same user
    # completes meanwhile. The logout must not write back the entry it read, without the sign-in.
    backdate_sign_in(app, adele, 3600)
    of = signed_in_claims(app, adele)
    token = sign(emulator, logout_claims(of, sid=REMOVE, sub=of["sub"],
                                         iat=int(time.time()) - 300))
    real_end_session, signed_in_meanwhile = backchannel.end_session, []

    def end_session(sid: str | None = None) -> None:
        real_end_session(sid)
        if not signed_in_meanwhile:
            signed_in_meanwhile.append(meanwhile(lambda: make_browser(app)))

    monkeypatch.setattr(backchannel, "end_session", end_session)
    assert_ended(send(app, token))
    monkeypatch.undo()

    adele_again = signed_in_meanwhile[0]
    assert not is_signed_in(adele)
    assert is_signed_in(adele_again)
    # Still indexed: the next logout of the user finds it.
    assert_ended(send(app, sign(emulator, logout_claims(of, sid=REMOVE, sub=of["sub"]))))
    assert not is_signed_in(adele_again)


def test_sign_ins_at_once_are_all_indexed(app):
    # Concurrent sign-ins of one user append to one index entry; the lock keeps every one.
    claims = {"iss": "https://issuer.example", "sub": "one-user", "sid": "one-sid", "iat": 1}
    session_ids = [f"session-{n}" for n in range(12)]
    barrier = threading.Barrier(len(session_ids))

    def sign_in(session_id: str) -> None:
        with app.test_request_context():
            barrier.wait()
            backchannel.remember_session(claims, session_id)

    threads = [threading.Thread(target=sign_in, args=(s,)) for s in session_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for key in index_keys(claims):
        assert sorted(e["session"] for e in read(app, key)) == sorted(session_ids)


def test_generic_openid_provider(make_app, emulator, make_browser):
    # The configuration the endpoint exists for: OIDC_AUTHORITY, a provider's issuer URL.
    app = make_app(AUTHORITY=None, OIDC_AUTHORITY=f"{emulator.authority}/v2.0", **ON)
    browser = make_browser(app)
    of = signed_in_claims(app, browser)
    v1_issuer = f"https://sts.windows.net/{emulator.tenant_id}/"
    assert_refused(send(app, sign(emulator, logout_claims(of, iss=v1_issuer))),
                   "another issuer (iss)")
    assert is_signed_in(browser)
    assert_ended(send(app, sign(emulator, logout_claims(of))))
    assert not is_signed_in(browser)


def test_another_instance_sharing_the_file_store_ends_the_session(make_app, emulator,
                                                                  make_browser):
    # Two processes on one session folder (make_app uses the test's folder): the one the provider
    # reaches ends the session the other signed in, and both refuse the token's replay.
    first, second = make_app(**ON), make_app(**ON)
    browser = make_browser(first)
    token = sign(emulator, logout_claims(signed_in_claims(first, browser)))
    assert_ended(send(second, token))
    assert not is_signed_in(browser)
    assert_refused(send(first, token), "already used (jti)")


# -- invalid logout tokens ---------------------------------------------------------------------

def _alg_none(emulator, claims):
    return jwt.encode(claims, None, algorithm="none", headers={"kid": emulator.keys.current.kid})


def _hs256_with_public_key(emulator, claims):
    # Key confusion: HMAC keyed with the provider's public key, which anyone can fetch.
    key = emulator.keys.current
    secret = key.public_key.public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    header = {"typ": "JWT", "alg": "HS256", "kid": key.kid}
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def _another_key_same_kid(emulator, claims):
    impostor = dataclasses.replace(emulator.keys.current,
                                   private_key=SigningKey.generate().private_key)
    return emulator.keys.sign(claims, key=impostor)


def _unpublished_key(emulator, claims):
    return emulator.keys.sign(claims, key=emulator.keys.unpublished_key())


def _no_kid_another_key(emulator, claims):
    # No kid, and not the provider's key: the one published key does not verify it.
    return jwt.encode(claims, SigningKey.generate().private_key, algorithm="RS256")


def _flipped_signature(emulator, claims):
    signing_input, _, signature = sign(emulator, claims).rpartition(".")
    raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    return f"{signing_input}.{b64url(bytes(b ^ 0xFF for b in raw))}"


def _signed(**changes: Any) -> Callable[..., str]:
    """Properly signed, with claims changed: a callable value gets the valid claims."""
    def make(emulator, claims):
        changed = {name: value(claims) if callable(value) else value
                   for name, value in changes.items()}
        return sign(emulator, {**claims, **changed})
    return make


def _without(name: str) -> Callable[..., str]:
    def make(emulator, claims):
        return sign(emulator, {k: v for k, v in claims.items() if k != name})
    return make


NOT_ALLOWED = "is not allowed (only RS256)"
INVALID_TOKENS: dict[str, tuple[Callable[..., str], str]] = {
    "alg_none": (_alg_none, NOT_ALLOWED),
    "hs256_public_key": (_hs256_with_public_key, NOT_ALLOWED),
    "signed_by_another_key": (_another_key_same_kid, "signature does not verify"),
    "flipped_signature": (_flipped_signature, "signature does not verify"),
    "unpublished_key": (_unpublished_key, "key the provider does not publish"),
    "no_kid_another_key": (_no_kid_another_key, "signature does not verify"),
    "wrong_aud": (_signed(aud=str(uuid.uuid4())), "not meant for this app (aud)"),
    "extra_aud": (_signed(aud=lambda c: [c["aud"], str(uuid.uuid4())]),
                  "also meant for other audiences (aud)"),
    "wrong_azp": (_signed(azp=str(uuid.uuid4())), "issued to another party (azp)"),
    "wrong_iss": (_signed(iss="https://login.example.com/another/v2.0"), "another issuer (iss)"),
    "missing_iss": (_without("iss"), "lacks the iss claim"),
    "missing_events": (_without("events"), "no events object"),
    "events_not_object": (_signed(events=LOGOUT_EVENT), "no events object"),
    "wrong_events_member": (_signed(events={"http://schemas.openid.net/event/other": {}}),
                            "do not hold the back-channel logout event"),
    "event_not_object": (_signed(events={LOGOUT_EVENT: "logout"}),
                         "do not hold the back-channel logout event"),
    "contains_nonce": (_signed(nonce="n-0S6_WzA2Mj"), "must not contain a nonce"),
    "neither_sub_nor_sid": (_without("sid"), "neither a subject (sub) nor a session (sid)"),
    "empty_sid": (_signed(sid=""), "sid is not a non-empty string"),
    "sid_not_string": (_signed(sid=42), "sid is not a non-empty string"),
    "sub_not_string": (_signed(sub=42), "empty subject (sub)"),
    "empty_sub": (_signed(sub=""), "empty subject (sub)"),
    "jti_not_string": (_signed(jti=7), "jti is not a valid identifier"),
    "jti_too_long": (_signed(jti="j" * 257), "jti is not a valid identifier"),
    "missing_iat": (_without("iat"), "lacks the iat claim"),
    "iat_not_number": (_signed(iat=lambda c: str(c["iat"])), "iat is not a number"),
    "iat_future": (_signed(iat=lambda c: c["iat"] + 3600, exp=lambda c: c["iat"] + 7200),
                   "dated in the future"),
    "expired": (_signed(exp=lambda c: c["iat"] - 600), "has expired (exp)"),
    "missing_jti": (_without("jti"), "lacks the jti claim"),
    "empty_jti": (_signed(jti=""), "jti is not a valid identifier"),
}


@pytest.mark.parametrize("variant", sorted(INVALID_TOKENS))
def test_invalid_logout_token_is_refused_and_ends_nothing(app, emulator, adele, variant):
    of = signed_in_claims(app, adele)
    make, reason = INVALID_TOKENS[variant]
    before = stored_sessions(app)
    token = make(emulator, logout_claims(of))

    assert_refused(send(app, token), reason, token)

    assert stored_sessions(app) == before
    assert is_signed_in(adele)
    # Refused tokens leave no trace: the same sid still works with a valid token afterwards.
    assert_ended(send(app, sign(emulator, logout_claims(of))))
    assert not is_signed_in(adele)


def test_a_token_without_kid_follows_the_id_token_rule(make_app, start_emulator, make_browser):
    # As for ID tokens (OpenID RP certification rp-id_token-kid-absent-single-jwks): accepted
    # while the provider publishes exactly one signing key, refused once it publishes several.
    emu = start_emulator()  # its own keys: rotating them must not disturb other tests
    app = make_app(emu, **ON)
    browser = make_browser(app, emu=emu)
    assert len(emu.keys.published) == 1
    no_kid = jwt.encode(logout_claims(signed_in_claims(app, browser)),
                        emu.keys.current.private_key, algorithm="RS256")
    assert "kid" not in jwt.get_unverified_header(no_kid)
    assert_ended(send(app, no_kid))
    assert not is_signed_in(browser)

    emu.keys.rotate()
    app = make_app(emu, **ON)  # a new process: it reads the provider's two keys
    browser = make_browser(app, emu=emu)
    no_kid = jwt.encode(logout_claims(signed_in_claims(app, browser)),
                        emu.keys.current.private_key, algorithm="RS256")
    assert_refused(send(app, no_kid), "does not name its signing key (kid)", no_kid)
    assert is_signed_in(browser)


def test_an_id_token_is_not_a_logout_token(app, emulator, adele):
    # Cross-JWT confusion (§4.1): the provider's own signed ID token for this app and session
    # (the emulator's has no jti), and the same claims with one.
    cache = token_cache_of(app, adele)
    id_token = next(iter(cache["IdToken"].values()))["secret"]
    assert_refused(send(app, id_token), "lacks the jti claim", id_token)
    with_jti = sign(emulator, {**signed_in_claims(app, adele), "jti": "a-jti"})
    assert_refused(send(app, with_jti), "no events object", with_jti)
    assert is_signed_in(adele)


BAD_REQUESTS: dict[str, tuple[dict[str, Any], str]] = {
    "missing_field": ({"data": {"token": "a.b.c"}}, "exactly one logout_token"),
    "empty_field": ({"data": {"logout_token": ""}}, "exactly one logout_token"),
    "two_fields": ({"data": {"logout_token": ["a.b.c", "a.b.c"]}}, "exactly one logout_token"),
    "json_body": ({"json": {"logout_token": "a.b.c"}}, "must be a form"),
    "no_body": ({}, "must be a form"),
    "multipart": ({"data": {"logout_token": "a.b.c"}, "content_type": "multipart/form-data"},
                  "must be a form"),
    "garbage": ({"data": {"logout_token": "not a token"}}, "not a well-formed JWT"),
    "three_garbage_parts": ({"data": {"logout_token": "e30.e30.AA"}}, NOT_ALLOWED),
    "header_not_object": ({"data": {"logout_token": f"{b64url(b'[1]')}.e30.AA"}},
                          "not a well-formed JWT"),
    "not_utf8": ({"data": b"logout_token=%ff%fe%fd.%80.%81",
                  "content_type": "application/x-www-form-urlencoded"}, "not a well-formed JWT"),
    "huge_value": ({"data": {"logout_token": "eyJ" + "A" * 200_000}}, "too large"),
    # Sent in chunks: no Content-Length to refuse it by, so the endpoint must stop reading.
    "huge_without_length": ({"input_stream": b"logout_token=" + b"A" * 2_000_000,
                             "content_type": "application/x-www-form-urlencoded",
                             "environ_overrides": {"wsgi.input_terminated": True,
                                                   "CONTENT_LENGTH": ""}}, "too large"),
}


@pytest.mark.parametrize("variant", sorted(BAD_REQUESTS))
def test_bad_request_is_refused_and_ends_nothing(app, adele, variant):
    post, reason = BAD_REQUESTS[variant]
    if "input_stream" in post:
        post = {**post, "input_stream": io.BytesIO(post["input_stream"])}
    before = stored_sessions(app)
    assert_refused(send(app, **post), reason)
    assert stored_sessions(app) == before
    assert is_signed_in(adele)


def test_the_browser_session_cookie_is_neither_needed_nor_used(app, emulator, adele):
    # Sent with the user's own cookie and no CSRF token, an invalid token still ends nothing.
    token = sign(emulator, logout_claims(signed_in_claims(app, adele), nonce="x"))
    response = adele.client.post(ENDPOINT, data={"logout_token": token})
    assert_refused(response, "must not contain a nonce", token)
    assert is_signed_in(adele)
    assert adele.client.get(ENDPOINT).status_code == 405  # not a page


def test_the_route_follows_the_redirect_uri_folder(make_app):
    # Beside /login and /logout: in the folder of the redirect URI's path.
    app = make_app(REDIRECT_URI="http://localhost:5000/auth/callback", **ON)
    assert send(app, "a.b.c").status_code == 404
    response = app.test_client().post("/auth/backchannel-logout", data={"logout_token": "x"})
    assert_refused(response, "not a well-formed JWT")


# -- failures of the provider or the store: still a 400 in the protocol's shape ---------------

def test_provider_unreachable_is_a_400_not_a_500(make_app, start_emulator, make_browser):
    other = start_emulator()
    app = make_app(other, **ON)
    browser = make_browser(app, emu=other)
    token = other.keys.sign(logout_claims(signed_in_claims(app, browser)),
                            key=other.keys.unpublished_key())  # makes the app refetch its keys
    other.stop()
    assert_refused(send(app, token), "could not be carried out right now")
    assert session_of(app, browser) is not None


def test_a_store_that_does_not_keep_the_index_fails_the_sign_in(app, browser, monkeypatch):
    # A session no logout token could find must not start.
    with backchannel_records_failing(app, monkeypatch):
        response = browser.sign_in()
    page = response.get_data(as_text=True)
    assert response.status_code == 503, page
    assert "session store" in page
    assert not is_signed_in(browser)
    assert not signed_in_sessions(app)
    assert browser.sign_in().status_code == 303  # once the store works again


def test_a_store_that_does_not_keep_records_refuses_the_logout_until_retried(app, emulator,
                                                                            adele, monkeypatch):
    # The store neither finds the session nor records the jti: a 400, so the provider retries,
    # rather than a 200 for a logout that ended nothing.
    token = sign(emulator, logout_claims(signed_in_claims(app, adele)))
    with backchannel_records_failing(app, monkeypatch):
        assert_refused(send(app, token), "could not be carried out right now", token)
    assert is_signed_in(adele)
    assert_ended(send(app, token))  # the retry is no replay
    assert not is_signed_in(adele)


# -- Redis ---------------------------------------------------------------------------------------

def test_redis_store_across_instances(make_app, emulator, make_browser, redis_server):
    first, second = (make_app(SESSION_TYPE="redis", REDIS_URL=redis_server.url, **ON)
                     for _ in range(2))
    adele, megan = make_browser(first), make_browser(first, MEGAN)
    interface = first.session_interface
    stored = interface.key_prefix + adele.cookie().value
    assert interface.client.exists(stored)
    token = sign(emulator, logout_claims(signed_in_claims(first, adele)))
    megans_token = sign(emulator, logout_claims(signed_in_claims(first, megan)))

    assert_ended(send(second, token))

    assert not interface.client.exists(stored)
    assert not is_signed_in(adele)
    assert is_signed_in(megan)
    assert_refused(send(first, token), "already used (jti)", token)  # replay, other instance
    redis_server.stop()
    assert_refused(send(second, megans_token), "could not be carried out right now")
