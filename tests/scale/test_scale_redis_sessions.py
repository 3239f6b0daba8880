"""Sessions in a real redis-server, shared by app instances behind a round-robin balancer: a
sign-in started on one instance finishes on another, sessions outlive an app restart, stored
entries expire with the sign-in, and Redis going away gives a 503 page, then recovery."""

from __future__ import annotations

import logging
import time

from flask import request

from tests.scale.scale_support import (
    ADELE,
    SESSION_COOKIE,
    Balancer,
    Browser,
    change_entry_in_store,
    csrf_token_of,
    token_cache,
)

GREETING = 'Hello, <span class="user-name">Adele Vance</span>'
PENDING_COOKIE_PREFIX = "entra-signin-"


def signed_in_browser(balancer, emulator, browser_sign_in) -> Browser:
    browser = Browser(balancer, emulator, browser_sign_in)
    callback = browser.sign_in()
    assert callback.status_code == 303, callback.get_data(as_text=True)
    return browser


def pending_cookies(browser: Browser) -> dict[str, str]:
    return {name: cookie.value for (_, _, name), cookie in browser.client._cookies.items()
            if name.startswith(PENDING_COOKIE_PREFIX)}


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
    assert first.config["SESSION_TYPE"] == "redis"
    balancer = Balancer(first, second)
    browser = Browser(balancer, emulator, browser_sign_in)
    redis = redis_server.client()

    start = browser.start(next_path="/graph")
    assert start.status_code == 302
    # The pending sign-in travels sealed in this browser's cookie: nothing in Redis, nothing in
    # the first instance.
    assert redis.dbsize() == 0
    sealed = pending_cookies(browser)
    assert len(sealed) == 1
    response = browser.authorize(start.headers["Location"])
    callback = browser.deliver(response)
    assert balancer.served == [0, 1]  # begun on the first instance, completed on the second
    assert callback.status_code == 303, callback.get_data(as_text=True)
    assert callback.headers["Location"] == "/graph"
    assert pending_cookies(browser) == {}  # deleted at the callback

    for _ in range(2):  # each instance in turn
        graph = browser.get("/graph")
        assert graph.status_code == 200, graph.get_data(as_text=True)
        assert ADELE in graph.get_data(as_text=True)
    assert balancer.served[-2:] == [0, 1]
    session_id = browser.session_id()
    assert redis.exists(f"session:{session_id}")
    assert redis.exists(f"flask_entra:tokens:{session_id}")

    # Single use across instances: the same response with its cookie again (a replay by whoever
    # copied both) reaches the other instance, which refuses it.
    replay = Browser(balancer, emulator, browser_sign_in)
    for name, value in sealed.items():
        replay.client.set_cookie(name, value)
    refused = replay.deliver(response)
    assert refused.status_code == 400
    assert "already used" in refused.get_data(as_text=True)
    assert replay.session_id() is None


def test_instances_finish_each_others_sign_ins_only_with_the_same_secret_key(
        make_instance, tmp_path, emulator, browser_sign_in):
    """The quickstart's "state mismatch" with several workers is gone: the pending sign-in is in
    the browser, sealed with SECRET_KEY, so instances that share the key finish each other's
    sign-ins even without a shared store; a cookie sealed with another key does not open."""
    first = make_instance(SESSION_FILE_DIR=str(tmp_path / "first"))
    second = make_instance(SESSION_FILE_DIR=str(tmp_path / "second"))
    balancer = Balancer(first, second)
    callback = Browser(balancer, emulator, browser_sign_in).sign_in()
    assert callback.status_code == 303, callback.get_data(as_text=True)
    assert balancer.served == [0, 1]

    other_key = make_instance(SESSION_FILE_DIR=str(tmp_path / "second"),
                              SECRET_KEY="another-secret-key-0123456789abcdef")
    callback = Browser(Balancer(first, other_key), emulator, browser_sign_in).sign_in()
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

    csrf = csrf_token_of(browser.get("/logout"))
    session_id = browser.session_id()
    redis = redis_server.client()
    assert browser.post("/logout", data={"csrf_token": csrf}).status_code == 303
    assert not redis.exists(f"session:{session_id}")
    assert not redis.exists(f"flask_entra:tokens:{session_id}")  # token cache gone too
    assert redis.exists(f"flask_entra:ended:{session_id}")  # never written back


def test_stored_session_and_token_cache_expire_with_the_sign_in(
        make_instance, redis_settings, redis_server, short_lived, browser_sign_in):
    lifetime = 120
    app = make_instance(short_lived, SESSION_LIFETIME=str(lifetime), **redis_settings)
    browser = Browser(Balancer(app), short_lived, browser_sign_in)
    redis = redis_server.client()
    start = browser.start()
    assert redis.dbsize() == 0  # pending: a cookie that expires with the sign-in it waits for
    set_cookie = next(c for c in start.headers.getlist("Set-Cookie")
                      if c.startswith(PENDING_COOKIE_PREFIX))
    assert "Max-Age=600" in set_cookie
    assert browser.deliver(browser.authorize(start.headers["Location"])).status_code == 303
    session_id = browser.session_id()
    key, tokens = f"session:{session_id}", f"flask_entra:tokens:{session_id}"
    assert 0 < redis.ttl(key) <= lifetime
    assert 0 < redis.ttl(tokens) <= lifetime

    # 100 s later (the sign-in time moved back), a token renewal rewrites the token cache: for
    # what is left of the sign-in, not a new full lifetime.
    change_entry_in_store(app, session_id, ttl=lifetime, signed_in_at=int(time.time()) - 100)
    before = token_cache(app, session_id)
    assert browser.get("/graph").status_code == 200  # 60 s access tokens: renewed
    assert token_cache(app, session_id) != before
    assert 0 < redis.ttl(tokens) <= 21

    # Past the lifetime: signed out, and the stored session and its tokens deleted.
    change_entry_in_store(app, session_id, ttl=lifetime,
                          signed_in_at=int(time.time()) - lifetime - 1)
    assert browser.get("/graph").status_code == 302
    assert not redis.exists(key)
    assert not redis.exists(tokens)


def test_redis_down_mid_session_gives_503_then_recovers(
        make_instance, redis_settings, redis_server, emulator, browser_sign_in, caplog):
    caplog.set_level(logging.WARNING)
    balancer = Balancer(make_instance(**redis_settings), make_instance(**redis_settings))
    browser = signed_in_browser(balancer, emulator, browser_sign_in)
    assert browser.get("/graph").status_code == 200
    csrf = csrf_token_of(browser.get("/logout"))

    redis_server.stop()
    for response in (browser.get("/"), browser.get("/graph"), browser.get("/claims"),
                     browser.post("/logout", data={"csrf_token": csrf})):
        assert_store_unavailable_page(response)
    # No session yet: a sign-in starts (it stores nothing), and its end, which must record the
    # response as used and store the session, is the 503 page.
    fresh = Browser(balancer, emulator, browser_sign_in)
    assert fresh.get("/").status_code == 200
    assert_store_unavailable_page(fresh.sign_in())
    assert fresh.session_id() is None
    # The process itself is fine (a health check sends no session cookie), and static files
    # need no session, even for a browser that has one (the 503 page's stylesheet).
    assert Browser(balancer, emulator, browser_sign_in).get("/healthz").status_code == 200
    assert browser.get("/static/style.css").status_code == 200
    assert no_stack_traces(caplog)
    assert any("Session store unavailable" in r.getMessage() for r in caplog.records)

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
    assert browser.client.get_cookie(SESSION_COOKIE) is None
    assert no_stack_traces(caplog)
    assert any("Session store unreachable" in r.getMessage() for r in caplog.records)

    redis_server.start()
    assert 'href="/login"' in browser.get("/").get_data(as_text=True)
