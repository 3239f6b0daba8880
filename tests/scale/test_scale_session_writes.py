"""Reading pages writes nothing: the stored session is rewritten only when it changes (sign-in, a
token renewal, sign-out), never by a page that only reads it. Every page view would otherwise
cost a store write, and two tabs would keep overwriting each other's session."""

from __future__ import annotations

import pytest

from tests.scale.scale_support import ADELE, Balancer, Browser


@pytest.fixture(params=["redis", "filesystem"])
def store_settings(request) -> dict[str, str]:
    if request.param == "redis":
        return request.getfixturevalue("redis_settings")
    return {}


def test_signed_in_pages_do_not_rewrite_the_stored_session(make_instance, store_settings,
                                                            emulator, browser_sign_in):
    app = make_instance(**store_settings)
    browser = Browser(Balancer(app), emulator, browser_sign_in)
    assert browser.sign_in().status_code == 303

    interface = app.session_interface
    writes: list[str] = []
    upsert = interface._upsert_session

    def counted_upsert(lifetime, session, store_id):
        writes.append(store_id)
        return upsert(lifetime, session, store_id)

    interface._upsert_session = counted_upsert  # the one way a session reaches the store
    for path in ("/", "/claims", "/graph", "/logout", "/", "/graph"):
        page = browser.get(path)
        assert page.status_code == 200, (path, page.get_data(as_text=True))
        assert "Set-Cookie" not in page.headers
    assert ADELE in browser.get("/graph").get_data(as_text=True)  # the token is still cached
    assert writes == []
