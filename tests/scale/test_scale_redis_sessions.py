"""Sessions in a real redis-server, shared by app instances behind a round-robin balancer: a
sign-in started on one instance finishes on another, sessions outlive an app restart, stored
entries expire with the sign-in, and Redis going away gives a 503 page, then recovery."""

from __future__ import annotations

import logging
import time

from flask import request

from tests.scale.scale_support import (
    ADELE,
    Balancer,
    Browser,
    stored_session,
    token_cache,
)
from webapp.sessions import RedisSessions

GREETING = 'Hello, <span class="user-name">Adele Vance</span>'


def signed_in_browser(balancer, emulator, browser_sign_in) -> Browser:
    browser = Browser(balancer, emulator, browser_sign_in)
    callback = browser.sign_in()
    assert callback.status_code == 303, callback.get_data(as_text=True)
    return browser


def assert_store_unavailable_page(response) -> None:
    body = response.get_data(as_text=True)
    assert response.status_code == 503, body
    assert "Temporarily unavailable" in body and "session store" in body
    assert "Traceback" not in body and "redis" not in body.lower()
    assert response.headers["Retry-After"] == "10"
    assert response.headers["Cache-Control"] == "no-store"


def no_stack_traces(caplog) -> bool:
    return not any(record.exc_info for record in caplog.records)


def test_sign_in_started_on_one_instance_finishes_on_another(
        make_instance, redis_settings, redis_server, emulator, browser_sign_in):
    first, second = make_instance(**redis_settings), make_instance(**redis_settings)
    assert isinstance(first.session_interface, RedisSessions)
    balancer = Balancer(first, second)
    browser = Browser(balancer, emulator, browser_sign_in)

    start = browser.start(next_path="/graph")
    assert start.status_code == 302
    pending = redis_server.client().keys("webapp:signin:*")
    assert len(pending) == 1  # the pending sign-in is in Redis, not in the first instance
    callback = browser.deliver(browser.authorize(start.headers["Location"]))
    assert balancer.served == [0, 1]  # begun on the first instance, completed on the second
    assert callback.status_code == 303, callback.get_data(as_text=True)
    assert callback.headers["Location"] == "/graph"
    assert redis_server.client().keys("webapp:signin:*") == []  # single use

    for _ in range(2):  # each instance in turn
        graph = browser.get("/graph")
        assert graph.status_code == 200, graph.get_data(as_text=True)
        assert ADELE in graph.get_data(as_text=True)
    assert balancer.served[-2:] == [0, 1]
    assert redis_server.client().exists(f"session:{browser.session_id()}")


def test_instances_without_a_shared_store_cannot_finish_each_others_sign_ins(
        make_instance, tmp_path, emulator, browser_sign_in):
    """The failure the shared store prevents (the quickstart's "state mismatch" with several
    workers): each instance with its own folder."""
    first = make_instance(SESSION_FILE_DIR=str(tmp_path / "first"))
    second = make_instance(SESSION_FILE_DIR=str(tmp_path / "second"))
    browser = Browser(Balancer(first, second), emulator, browser_sign_in)
    callback = browser.sign_in()
    assert callback.status_code == 400
    assert "No sign-in in progress" in callback.get_data(as_text=True)


def test_session_survives_an_app_restart(make_instance, redis_settings, redis_server, emulator,
                                         browser_sign_in):
    balancer = Balancer(make_instance(**redis_settings))
    browser = signed_in_browser(balancer, emulator, browser_sign_in)
    assert browser.get("/graph").status_code == 200

    balancer.replace(make_instance(**redis_settings))  # a new process, the same settings
    assert GREETING in browser.get("/").get_data(as_text=True)
    graph = browser.get("/graph")
    assert graph.status_code == 200  # the token cache decrypts with the shared SECRET_KEY
    assert ADELE in graph.get_data(as_text=True)

    logout = browser.get("/logout").get_data(as_text=True)
    csrf = logout.split('name="csrf_token" value="')[1].split('"')[0]
    session_id = browser.session_id()
    assert browser.post("/logout", data={"csrf_token": csrf}).status_code == 303
    assert not redis_server.client().exists(f"session:{session_id}")  # token cache gone too


def test_stored_session_and_token_cache_expire_with_the_sign_in(
        make_instance, redis_settings, redis_server, short_lived, browser_sign_in):
    lifetime = 120
    app = make_instance(short_lived, SESSION_LIFETIME=str(lifetime), **redis_settings)
    browser = Browser(Balancer(app), short_lived, browser_sign_in)
    start = browser.start()
    pending_ttl = redis_server.client().ttl(redis_server.client().keys("webapp:signin:*")[0])
    assert 0 < pending_ttl <= 600
    assert browser.deliver(browser.authorize(start.headers["Location"])).status_code == 303
    key = f"session:{browser.session_id()}"
    assert 0 < redis_server.client().ttl(key) <= lifetime

    # 100 s later (the sign-in time moved back), a token renewal rewrites the session: what is
    # left of the sign-in, not a new full lifetime.
    stored = stored_session(app, browser.session_id())
    stored["signed_in_at"] = int(time.time()) - 100
    redis_server.client().set(key, app.session_interface.serializer.encode(stored), ex=lifetime)
    before = token_cache(app, stored)
    assert browser.get("/graph").status_code == 200  # 60 s access tokens: renewed
    assert token_cache(app, stored_session(app, browser.session_id())) != before
    assert 0 < redis_server.client().ttl(key) <= 21

    # Past the lifetime: signed out, and the stored session (with its tokens) deleted.
    stored = stored_session(app, browser.session_id())
    stored["signed_in_at"] = int(time.time()) - lifetime - 1
    redis_server.client().set(key, app.session_interface.serializer.encode(stored), ex=lifetime)
    assert browser.get("/graph").status_code == 302
    assert not redis_server.client().exists(key)


def test_redis_down_mid_session_gives_503_then_recovers(
        make_instance, redis_settings, redis_server, emulator, browser_sign_in, caplog):
    caplog.set_level(logging.WARNING)
    balancer = Balancer(make_instance(**redis_settings), make_instance(**redis_settings))
    browser = signed_in_browser(balancer, emulator, browser_sign_in)
    assert browser.get("/graph").status_code == 200
    csrf = browser.get("/logout").get_data(as_text=True).split(
        'name="csrf_token" value="')[1].split('"')[0]

    redis_server.stop()
    for response in (browser.get("/"), browser.get("/graph"), browser.get("/claims"),
                     browser.post("/logout", data={"csrf_token": csrf})):
        assert_store_unavailable_page(response)
    fresh = Browser(balancer, emulator, browser_sign_in)  # no session yet: fails at /login
    assert fresh.get("/").status_code == 200
    assert_store_unavailable_page(fresh.start())
    assert browser.get("/healthz").status_code == 200  # the process itself is fine
    assert browser.get("/static/style.css").status_code == 200
    assert no_stack_traces(caplog)
    assert any("Session store unreachable" in r.getMessage() for r in caplog.records)

    redis_server.start()  # the same port; memory only, so the old sessions are gone
    home = browser.get("/")
    assert home.status_code == 200
    assert 'href="/login"' in home.get_data(as_text=True)  # signed out, not an error
    assert browser.sign_in().status_code == 303
    graph = browser.get("/graph")
    assert graph.status_code == 200 and ADELE in graph.get_data(as_text=True)
    assert no_stack_traces(caplog)


def test_redis_hanging_times_out_to_503_and_the_session_outlives_it(
        make_instance, redis_server, emulator, browser_sign_in):
    settings = {"SESSION_TYPE": "redis",
                "REDIS_URL": f"{redis_server.url}?socket_timeout=0.5&socket_connect_timeout=0.5"}
    balancer = Balancer(make_instance(**settings), make_instance(**settings))
    browser = signed_in_browser(balancer, emulator, browser_sign_in)

    redis_server.pause()
    try:
        began = time.monotonic()
        assert_store_unavailable_page(browser.get("/"))
        assert_store_unavailable_page(browser.get("/graph"))
        assert time.monotonic() - began < 5  # REDIS_URL's timeouts, not a hung worker
    finally:
        redis_server.resume()
    assert GREETING in browser.get("/").get_data(as_text=True)  # the same session, intact
    assert browser.get("/graph").status_code == 200


def test_redis_lost_while_saving_a_sign_in_answers_503(
        make_instance, redis_settings, redis_server, emulator, browser_sign_in, caplog):
    app = make_instance(**redis_settings)

    @app.after_request
    def redis_goes_away(response):  # after the callback's work, before its session is saved
        if request.path == "/getAToken":
            redis_server.stop()
        return response

    browser = Browser(Balancer(app), emulator, browser_sign_in)
    callback = browser.sign_in()
    assert_store_unavailable_page(callback)
    assert "Location" not in callback.headers  # not sent on as if signed in
    assert browser.session_id() is None
    assert no_stack_traces(caplog)

    redis_server.start()
    assert 'href="/login"' in browser.get("/").get_data(as_text=True)
