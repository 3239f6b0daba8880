"""Concurrent token renewals of one user (several tabs, several instances): the emulator rotates
refresh tokens and revokes the whole family when a spent one comes back, so every renewal must
use the newest refresh token, and the stored cache must end with the newest tokens."""

from __future__ import annotations

import threading
import time

import pytest

from tests.scale.scale_support import (
    ADELE,
    Balancer,
    Browser,
    only_refresh_token,
    stored_session,
    token_cache,
)
from webapp.sessions import FileSessions, RedisSessions, SessionBusy

TABS = 4
PAGES_PER_TAB = 3


class TokenCalls:
    """The token endpoint's answers to the apps' refresh requests (a hook on each app's one
    outbound session)."""

    def __init__(self, *apps) -> None:
        self.statuses: list[int] = []
        self._lock = threading.Lock()
        for app in apps:
            app.extensions["webapp"].http.hooks["response"].append(self._record)

    def _record(self, response, *args, **kwargs):
        if response.request.url.endswith("/oauth2/v2.0/token"):
            with self._lock:
                self.statuses.append(response.status_code)


@pytest.fixture(params=["redis", "filesystem"])
def store_settings(request) -> dict[str, str]:
    if request.param == "redis":
        return request.getfixturevalue("redis_settings")
    return {}


def test_concurrent_renewals_lose_no_refresh_token(make_instance, store_settings, short_lived,
                                                   browser_sign_in):
    first = make_instance(short_lived, **store_settings)
    second = make_instance(short_lived, **store_settings)
    balancer = Balancer(first, second)
    browser = Browser(balancer, short_lived, browser_sign_in)
    assert browser.sign_in().status_code == 303
    calls = TokenCalls(first, second)

    tabs = [browser.tab() for _ in range(TABS)]
    start = threading.Barrier(TABS)
    answers: list[tuple[int, str]] = []

    def use(tab: Browser) -> None:
        start.wait()
        for _ in range(PAGES_PER_TAB):
            page = tab.get("/graph")
            answers.append((page.status_code, page.get_data(as_text=True)))

    threads = [threading.Thread(target=use, args=(tab,)) for tab in tabs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert len(answers) == TABS * PAGES_PER_TAB
    for status, body in answers:
        assert status == 200, body
        assert ADELE in body
    # 60 s access tokens: every page renewed, one after the other, none refused as a reuse.
    assert calls.statuses == [200] * TABS * PAGES_PER_TAB

    cache = token_cache(first, stored_session(first, browser.session_id()))
    refresh_token = only_refresh_token(cache)
    grant = short_lived.state.refresh_tokens.find(refresh_token)
    assert grant is not None and not grant.used  # the newest: every older one was spent
    assert not short_lived.state.refresh_tokens.is_revoked(grant.family)
    assert browser.get("/graph").status_code == 200  # and it still works


def test_a_valid_access_token_takes_no_lock(make_instance, store_settings, emulator,
                                            browser_sign_in, monkeypatch):
    app = make_instance(**store_settings)
    browser = Browser(Balancer(app), emulator, browser_sign_in)
    assert browser.sign_in().status_code == 303

    def no_lock(*args, **kwargs):
        raise AssertionError("a cached, valid access token must not need the session's lock")

    monkeypatch.setattr(type(app.session_interface), "lock", no_lock)
    assert browser.get("/graph").status_code == 200


@pytest.fixture
def interface(make_instance, store_settings):
    return make_instance(**store_settings).session_interface


def test_the_session_lock_excludes_others_until_released(interface):
    assert isinstance(interface, RedisSessions | FileSessions)
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with interface.lock("session-a", 10):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert held.wait(10)
        began = time.monotonic()
        with pytest.raises(SessionBusy), interface.lock("session-a", 0.3):
            pass
        assert time.monotonic() - began >= 0.25  # waited for it
        with interface.lock("session-b", 0.3):  # other sessions are not held up
            pass
    finally:
        release.set()
        thread.join(10)
    with interface.lock("session-a", 0.3):
        pass


def test_a_lock_whose_holder_died_is_taken_over_after_its_lease(interface):
    lock = interface.lock("session-a", 0.3)
    lock.__enter__()  # and never released, like a process killed while renewing
    time.sleep(0.4)
    with interface.lock("session-a", 0.3):  # the same lease as every request; no SessionBusy
        pass
