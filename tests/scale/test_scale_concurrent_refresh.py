"""Concurrent token renewals of one user (several tabs, several instances): the emulator rotates
refresh tokens and revokes the whole family when a spent one comes back, so every renewal must
use the newest refresh token, and the stored cache must end with the newest tokens."""

from __future__ import annotations

import threading
import time

import pytest

from flask_entra.store import FileStore, RedisStore, StoreBusy
from tests.scale.scale_support import (
    ADELE,
    Balancer,
    Browser,
    only_refresh_token,
    token_cache,
)

TABS = 4
PAGES_PER_TAB = 3


class TokenCalls:
    """The token endpoint's answers to the apps' refresh requests (a hook on each app's one
    outbound session)."""

    def __init__(self, *apps) -> None:
        self.statuses: list[int] = []
        self._lock = threading.Lock()
        for app in apps:
            app.extensions["flask_entra"].http.hooks["response"].append(self._record)

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

    cache = token_cache(first, browser.session_id())
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

    store = app.extensions["flask_entra"].store
    monkeypatch.setattr(type(store), "lock", no_lock)
    assert browser.get("/graph").status_code == 200


@pytest.fixture(name="store")
def store_fixture(make_instance, store_settings):
    """The store the renewal lock lives in (beside the sessions)."""
    return make_instance(**store_settings).extensions["flask_entra"].store


def test_the_session_lock_excludes_others_until_released(store, store_settings):
    assert isinstance(store, RedisStore if store_settings else FileStore)
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with store.lock("session-a", 10):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert held.wait(10)
        began = time.monotonic()
        with pytest.raises(StoreBusy), store.lock("session-a", 0.3):
            pass
        assert time.monotonic() - began >= 0.25  # waited for it
        with store.lock("session-b", 0.3):  # other sessions are not held up
            pass
    finally:
        release.set()
        thread.join(10)
    with store.lock("session-a", 0.3):
        pass


def test_a_lock_whose_holder_died_is_taken_over_after_its_lease(store):
    lock = store.lock("session-a", 0.3)
    lock.__enter__()  # and never released, like a process killed while renewing
    time.sleep(0.4)
    with store.lock("session-a", 0.3):  # the same lease as every request; no StoreBusy
        pass
