"""The pending sign-in's sealed cookie (issue 10; security checklist A4, A5, A6, J1, J2, J5): only
the `__Host-` name is read under https, a response is used once even with its cookie copied
back, a cookie answers its own sign-in only, at most 3 are pending at once, an oversized body is
refused before it is read, and the cookie is deleted whatever the callback's outcome."""

from __future__ import annotations

import io
from typing import Any

import pytest
from werkzeug.test import EnvironBuilder, run_wsgi_app

from tests.quickstart.webapp_support import (
    Browser,
    CallRecorder,
    entry_of,
    pending_cookie_name,
    pending_cookies,
    registered_app,
    state_of,
    stored_records,
    stored_sessions,
)

HTTPS = "https://localhost:5000"
TOKEN_PATH = "/oauth2/v2.0/token"
ONE_MIB = 1024 * 1024
READ_LIMIT = 64 * 1024  # the most an oversized body may cost the app to read


def deletes(response, name: str) -> bool:
    """Whether the response tells the browser to delete cookie `name`."""
    return any(c.startswith(f"{name}=;") and "Max-Age=0" in c and "Path=/" in c
               for c in response.headers.getlist("Set-Cookie"))


def sets_session(response) -> bool:
    return any(c.startswith(("session=", "__Host-session=")) and not c.split("=", 1)[1]
               .startswith(";") for c in response.headers.getlist("Set-Cookie"))


# -- planted cookies (login CSRF, J5) -----------------------------------------------------------

def test_a_planted_cookie_without_the_host_prefix_is_ignored_under_https(make_app):
    """A sibling subdomain or an http man-in-the-middle can set `entra-signin-…` but never
    `__Host-entra-signin-…`: under https the app reads the latter only."""
    app = make_app(REDIRECT_URI=f"{HTTPS}/getAToken")
    attacker = app.test_client()
    start = attacker.get("/login", base_url=HTTPS)
    assert start.status_code == 302, start.get_data(as_text=True)
    state = state_of(start.headers["Location"])
    host_name = pending_cookie_name(state, https=True)
    sealed = pending_cookies(attacker)[host_name]  # the attacker's own, genuine sign-in
    assert set(pending_cookies(attacker)) == {host_name}

    victim = app.test_client()
    victim.set_cookie(pending_cookie_name(state), sealed)  # planted without the prefix
    calls = CallRecorder(app)
    response = victim.post("/getAToken", base_url=HTTPS,
                           data={"code": "the-attackers-code", "state": state})
    body = response.get_data(as_text=True)
    assert response.status_code == 400, body
    assert "No sign-in in progress" in body
    assert calls.count("POST", TOKEN_PATH) == 0
    assert not sets_session(response) and stored_sessions(app) == {}

    # The control: the very same value under the __Host- name is read, and the code goes to the
    # provider (which refuses this made-up one).
    victim.set_cookie(host_name, sealed, secure=True)
    control = victim.post("/getAToken", base_url=HTTPS,
                          data={"code": "the-attackers-code", "state": state})
    assert "No sign-in in progress" not in control.get_data(as_text=True)
    assert calls.count("POST", TOKEN_PATH) == 1
    assert control.status_code == 400 and stored_sessions(app) == {}


# -- single use, one sign-in per cookie (A4, A5) ---------------------------------------------

def test_a_replayed_cookie_and_response_make_no_second_token_request(app, browser, emulator,
                                                                    browser_sign_in_fn):
    start = browser.start()
    name = pending_cookie_name(state_of(start.headers["Location"]))
    sealed = pending_cookies(browser.client)[name]
    result = browser.authorize(start.headers["Location"])
    calls = CallRecorder(app)
    assert browser.deliver(result).status_code == 303
    assert calls.count("POST", TOKEN_PATH) == 1
    assert name not in pending_cookies(browser.client)  # the first delivery deleted it
    sessions, records = stored_sessions(app), stored_records(app)

    browser.client.set_cookie(name, sealed)  # put back, as an attacker who copied it would
    replay = browser.deliver(result)
    body = replay.get_data(as_text=True)
    assert replay.status_code == 400, body
    assert "already used" in body
    assert calls.count("POST", TOKEN_PATH) == 1
    assert not sets_session(replay)
    assert deletes(replay, name)

    # The same from another browser holding the copied cookie.
    other = Browser(app, emulator, browser_sign_in_fn)
    other.client.set_cookie(name, sealed)
    elsewhere = other.deliver(result)
    assert elsewhere.status_code == 400 and "already used" in elsewhere.get_data(as_text=True)
    assert calls.count("POST", TOKEN_PATH) == 1
    assert stored_sessions(app) == sessions and stored_records(app) == records
    assert other.cookie() is None
    assert "Adele Vance" in browser.client.get("/").get_data(as_text=True)  # still signed in


def test_a_cookie_from_another_sign_in_makes_no_token_request(app, browser):
    first = browser.start().headers["Location"]
    second = browser.start().headers["Location"]
    first_name = pending_cookie_name(state_of(first))
    second_name = pending_cookie_name(state_of(second))
    first_sealed = pending_cookies(browser.client)[first_name]
    result = browser.authorize(second)
    # The second sign-in's cookie now holds the first one's (genuine, sealed) sign-in.
    browser.client.set_cookie(second_name, first_sealed)
    calls = CallRecorder(app)

    response = browser.deliver(result)

    body = response.get_data(as_text=True)
    assert response.status_code == 400, body
    assert "No sign-in in progress" in body and "answers another sign-in" in body
    assert calls.count("POST", TOKEN_PATH) == 0
    assert stored_sessions(app) == {} and browser.cookie() is None
    # The refusal was about that pairing only: the first sign-in still completes.
    assert browser.deliver(browser.authorize(first)).status_code == 303
    assert calls.count("POST", TOKEN_PATH) == 1


def test_an_altered_cookie_makes_no_token_request(app, browser):
    start = browser.start()
    name = pending_cookie_name(state_of(start.headers["Location"]))
    sealed = pending_cookies(browser.client)[name]
    result = browser.authorize(start.headers["Location"])
    flipped = sealed[:40] + ("A" if sealed[40] != "A" else "B") + sealed[41:]
    browser.client.set_cookie(name, flipped)
    calls = CallRecorder(app)

    response = browser.deliver(result)

    body = response.get_data(as_text=True)
    assert response.status_code == 400, body
    assert "cookie was altered" in body
    assert calls.count("POST", TOKEN_PATH) == 0
    assert stored_sessions(app) == {}


# -- at most 3 pending (A6 with a bound) ---------------------------------------------------------

def test_only_the_newest_three_sign_ins_stay_pending(app, browser):
    assert browser.sign_in().status_code == 303  # a session cookie besides them, too
    starts = [browser.start() for _ in range(6)]
    assert all(start.status_code == 302 for start in starts)
    names = [pending_cookie_name(state_of(start.headers["Location"])) for start in starts]
    assert len(set(names)) == 6

    assert set(pending_cookies(browser.client)) == set(names[3:])
    for index, start in enumerate(starts):
        dropped = {c.split("=", 1)[0] for c in start.headers.getlist("Set-Cookie")
                   if "Max-Age=0" in c}
        # The 4th /login drops the 1st, the 5th the 2nd, the 6th the 3rd: the oldest first.
        assert dropped == ({names[index - 3]} if index >= 3 else set()), (index, dropped)

    sent = browser.client.get("/").request.headers.get("Cookie", "")
    assert all(f"{name}=" in sent for name in names[3:])
    assert not any(f"{name}=" in sent for name in names[:3])
    assert len(sent.encode()) < 8 * 1024

    calls = CallRecorder(app)
    oldest = browser.deliver(browser.authorize(starts[0].headers["Location"]))
    assert oldest.status_code == 400
    assert "No sign-in in progress" in oldest.get_data(as_text=True)
    assert calls.count("POST", TOKEN_PATH) == 0
    newest = browser.deliver(browser.authorize(starts[5].headers["Location"]))
    assert newest.status_code == 303, newest.get_data(as_text=True)
    assert calls.count("POST", TOKEN_PATH) == 1


# -- oversized bodies (J2) ---------------------------------------------------------------------

class CountingStream(io.BytesIO):
    """A request body that counts how much of it the app reads."""

    read_bytes = 0

    def _count(self, data: Any) -> Any:
        self.read_bytes += data if isinstance(data, int) else len(data)
        return data

    def read(self, size: int | None = -1) -> bytes:
        return self._count(super().read(size))

    def read1(self, size: int | None = -1) -> bytes:
        return self._count(super().read1(size))

    def readline(self, size: int | None = -1) -> bytes:
        return self._count(super().readline(size))

    def readinto(self, buffer: Any) -> int:
        return self._count(super().readinto(buffer))


def huge_form(**fields: str) -> bytes:
    prefix = "&".join(f"{key}={value}" for key, value in fields.items())
    return f"{prefix}&padding=".encode() + b"A" * ONE_MIB


def post_with_length(client, path: str, body: bytes) -> tuple[Any, CountingStream]:
    stream = CountingStream(body)
    response = client.post(path, input_stream=stream,
                           content_type="application/x-www-form-urlencoded")
    assert response.request.content_length == len(body)  # a declared 1 MiB
    return response, stream


def post_chunked(app, path: str, body: bytes, cookie: str = "") -> tuple[str, CountingStream]:
    """A body without Content-Length (Transfer-Encoding: chunked, as a WSGI server passes it)."""
    stream = CountingStream(body)
    environ = EnvironBuilder(path=path, method="POST", input_stream=stream,
                             content_type="application/x-www-form-urlencoded").get_environ()
    del environ["CONTENT_LENGTH"]
    environ.update({"wsgi.input_terminated": True, "HTTP_TRANSFER_ENCODING": "chunked"})
    if cookie:
        environ["HTTP_COOKIE"] = cookie
    body_iter, status, _headers = run_wsgi_app(app, environ, buffered=True)
    b"".join(body_iter)
    return status, stream


def test_a_one_mib_callback_body_is_refused_unread(app, browser):
    start = browser.start()
    state = state_of(start.headers["Location"])
    calls = CallRecorder(app)

    response, stream = post_with_length(browser.client, "/getAToken",
                                        huge_form(state=state, code="x"))

    assert response.status_code == 413, response.get_data(as_text=True)
    assert stream.read_bytes <= READ_LIMIT
    assert calls.count("POST", TOKEN_PATH) == 0
    assert stored_sessions(app) == {}

    # Without a Content-Length (chunked): read up to the limit only, then refused, not parsed
    # as if what was read were the whole body.
    status, chunked = post_chunked(app, "/getAToken", huge_form(state=state, code="x"))
    assert status.startswith("413"), status
    assert chunked.read_bytes <= READ_LIMIT
    assert calls.count("POST", TOKEN_PATH) == 0
    assert stored_sessions(app) == {}
    # A small chunked body is read as usual (here: no sign-in of this browser has that state).
    small, _ = post_chunked(app, "/getAToken", b"state=made-up&code=x")
    assert small.startswith("400"), small


def test_a_one_mib_sign_out_body_is_refused_unread(app, browser):
    assert browser.sign_in().status_code == 303
    csrf = entry_of(app, browser)["csrf"]
    before = stored_sessions(app)

    response, stream = post_with_length(browser.client, "/logout", huge_form(csrf_token=csrf))

    assert response.status_code == 413, response.get_data(as_text=True)
    assert stream.read_bytes <= READ_LIMIT
    assert stored_sessions(app) == before  # not signed out by a body it never read

    status, chunked = post_chunked(app, "/logout", huge_form(csrf_token=csrf),
                                   cookie=f"session={browser.cookie().value}")
    assert status.startswith("413"), status  # the csrf_token in its first bytes is not enough
    assert chunked.read_bytes <= READ_LIMIT
    assert stored_sessions(app) == before
    assert "Adele Vance" in browser.client.get("/").get_data(as_text=True)


# -- deleted whatever the outcome -------------------------------------------------------------

@pytest.mark.parametrize("outcome", ["signed_in", "provider_error", "id_token_refused"])
def test_the_pending_cookie_is_deleted_at_the_callback(app, browser, emulator, outcome):
    username = "LeeG@contoso.onmicrosoft.com" if outcome == "provider_error" else (
        "AdeleV@contoso.onmicrosoft.com")
    if outcome == "id_token_refused":
        emulator.defects.add(registered_app(emulator).app_id, "wrong_nonce")
    start = browser.start()
    name = pending_cookie_name(state_of(start.headers["Location"]))
    assert name in pending_cookies(browser.client)
    result = browser.authorize(start.headers["Location"], username=username,
                               consent="cancel" if outcome == "provider_error" else "accept")

    response = browser.deliver(result)

    body = response.get_data(as_text=True)
    if outcome == "signed_in":
        assert response.status_code == 303, body
    else:
        assert response.status_code == 400, body
        assert ("access_denied" in body or "AADSTS65004" in body) if (
            outcome == "provider_error") else "ID token failed validation" in body
        assert stored_sessions(app) == {}
    assert deletes(response, name)
    assert "SameSite=None" in next(c for c in response.headers.getlist("Set-Cookie")
                                   if c.startswith(f"{name}="))
    assert pending_cookies(browser.client) == {}
