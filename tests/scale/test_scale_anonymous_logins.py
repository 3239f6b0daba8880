"""Anonymous visitors cannot fill the session store (issue 10, checklist J1): /login keeps the
pending sign-in in the browser, sealed in a cookie, so 20,000 anonymous GET /login leave the store
exactly as it was, for the file store (every file and folder under SESSION_FILE_DIR and
`<SESSION_FILE_DIR>-flask-entra/`, with its modification time) and for Redis (DBSIZE, every key
and value). A signed-in user's session is untouched and still works, before and after.

The requests go through the Flask test client, in-process, for speed: each costs about 1.5 ms of
CPU (MSAL's auth-code flow, sealing the cookie), so each store's 20,000 take 30 s or so."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from werkzeug.test import EnvironBuilder

from tests.scale.scale_support import ADELE, Balancer, Browser, RedisServer

ANONYMOUS_LOGINS = 20_000
# About 30 s per store on an idle machine; the suite's 120 s limit (meant for hangs) would fail
# them on a busy one.
pytestmark = pytest.mark.timeout(300)
PENDING_COOKIE_PREFIX = "entra-signin-"


def files_under(*folders: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder below `folders`: (modification time in ns, size) by path."""
    found = {}
    for folder in folders:
        for root, dirs, files in os.walk(folder):
            for name in [*dirs, *files]:
                status = os.stat(os.path.join(root, name))
                found[os.path.join(root, name)] = (status.st_mtime_ns, status.st_size)
    return found


def redis_contents(server: RedisServer) -> tuple[int, dict[bytes, bytes | None]]:
    client = server.client()
    return client.dbsize(), {key: client.get(key) for key in client.keys("*")}


def anonymous_logins(app, count: int) -> None:
    """`count` GET /login from browsers without cookies, each a WSGI call into the app (the
    test client's request building would cost more than the app's own work)."""
    base = EnvironBuilder(path="/login", base_url="http://localhost:5000/").get_environ()
    answer: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info=None) -> None:
        answer[:] = [status, headers]

    for number in range(count):
        environ = {**base, "QUERY_STRING": urlencode({"next": f"/graph?visit={number}"}),
                   "wsgi.input": io.BytesIO()}
        body = b"".join(app(environ, start_response))
        status, headers = answer
        assert status.startswith("302 "), body[:2000]
        # The pending sign-in went to the browser, and nowhere else.
        cookies = [value for name, value in headers if name.lower() == "set-cookie"]
        assert len(cookies) == 1 and cookies[0].startswith(PENDING_COOKIE_PREFIX), cookies


def signed_in(app, emulator, browser_sign_in) -> Browser:
    browser = Browser(Balancer(app), emulator, browser_sign_in)
    assert browser.sign_in().status_code == 303
    graph = browser.get("/graph")
    assert graph.status_code == 200 and ADELE in graph.get_data(as_text=True)
    return browser


def assert_still_signed_in(browser: Browser) -> None:
    graph = browser.get("/graph")
    assert graph.status_code == 200, graph.get_data(as_text=True)
    assert ADELE in graph.get_data(as_text=True)


def test_anonymous_logins_leave_the_file_store_as_it_was(make_instance, tmp_path, emulator,
                                                         browser_sign_in):
    app = make_instance()
    browser = signed_in(app, emulator, browser_sign_in)
    sessions = tmp_path / "sessions"
    records = tmp_path / "sessions-flask-entra"
    before = files_under(sessions, records)
    assert any(path.startswith(str(sessions)) for path in before)  # the signed-in session
    assert any(path.startswith(str(records / "records")) for path in before)  # its tokens

    anonymous_logins(app, ANONYMOUS_LOGINS)
    assert files_under(sessions, records) == before
    assert_still_signed_in(browser)


def test_anonymous_logins_leave_redis_as_it_was(make_instance, redis_settings, redis_server,
                                                emulator, browser_sign_in):
    app = make_instance(**redis_settings)
    browser = signed_in(app, emulator, browser_sign_in)
    before = redis_contents(redis_server)
    assert before[0] >= 2  # the signed-in session and its token cache
    assert {f"session:{browser.session_id()}".encode(),
            f"flask_entra:tokens:{browser.session_id()}".encode()} <= set(before[1])

    anonymous_logins(app, ANONYMOUS_LOGINS)
    assert redis_contents(redis_server) == before
    assert_still_signed_in(browser)
