"""The production configuration (gunicorn.conf.py) serving the real app: its access log never
carries the callback's code or state, and X-Forwarded-* are believed only through TRUSTED_PROXY_HOPS
(the app's ProxyFix), never by gunicorn on its own."""

from __future__ import annotations

import time

import pytest
import requests

from tests.scale.scale_support import Gunicorn


def wait_for_log(server: Gunicorn, text: str) -> str:
    deadline = time.monotonic() + 5
    while text not in server.log():
        if time.monotonic() > deadline:
            pytest.fail(f"{text!r} never appeared in the access log: {server.log()[-3000:]}")
        time.sleep(0.05)
    return server.log()


def test_access_log_has_no_query_string_referrer_or_tokens(start_gunicorn):
    server = start_gunicorn(RESPONSE_MODE="query")
    leaked = ("SECRET-CODE-VALUE", "SECRET-STATE-VALUE", "SECRET-REFERRER-STATE", "eyJhbGciOi")
    response = requests.get(
        f"{server.base}/getAToken?code=SECRET-CODE-VALUE&state=SECRET-STATE-VALUE",
        headers={"Referer": "http://localhost:8080/authorize?state=SECRET-REFERRER-STATE",
                 "Authorization": "Bearer eyJhbGciOiJSUzI1NiJ9.e30.sig",
                 "User-Agent": "scale-test-agent"},
        timeout=10, allow_redirects=False)
    assert response.status_code == 400  # no sign-in in progress: the error page
    log = wait_for_log(server, '"GET /getAToken HTTP/1.1" 400')
    line = next(line for line in log.splitlines() if "/getAToken" in line)
    assert "scale-test-agent" in line  # the line is the access log's
    for value in leaked:
        assert value not in log
    assert "code=" not in log and "state=" not in log


def test_gunicorn_does_not_trust_forwarded_proto_by_itself(start_gunicorn):
    server = start_gunicorn()
    response = requests.get(f"{server.base}/", headers={"X-Forwarded-Proto": "https"}, timeout=10)
    assert response.status_code == 200
    # gunicorn's default would believe a loopback peer and make the request https.
    assert "Strict-Transport-Security" not in response.headers


def test_trusted_proxy_hops_make_the_request_https(start_gunicorn):
    server = start_gunicorn(TRUSTED_PROXY_HOPS="1")
    response = requests.get(f"{server.base}/", headers={"X-Forwarded-Proto": "https"}, timeout=10)
    assert response.status_code == 200
    assert response.headers["Strict-Transport-Security"].startswith("max-age=")
