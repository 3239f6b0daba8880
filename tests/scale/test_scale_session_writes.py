"""Reading pages writes nothing: the stored session is rewritten only when it changes (sign-in,
activity recorded at most once a minute, sign-out), and the token cache beside it only when it
changes (sign-in, a renewal), never by a page that only reads them. Every page view would
otherwise cost store writes, and two tabs would keep overwriting each other's session."""

from __future__ import annotations

import pytest

from tests.scale.scale_support import ADELE, Balancer, Browser, csrf_token_of, stored_session


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
    store = app.extensions["flask_entra"].store  # the token cache's, beside the sessions
    store_set = store.set
    store.set = lambda key, *args: writes.append(key) or store_set(key, *args)
    for path in ("/", "/claims", "/graph", "/logout", "/", "/graph"):
        page = browser.get(path)
        assert page.status_code == 200, (path, page.get_data(as_text=True))
        assert "Set-Cookie" not in page.headers
    assert ADELE in browser.get("/graph").get_data(as_text=True)  # the token is still cached
    assert writes == []


def test_an_ended_session_is_never_written_back(make_instance, store_settings, emulator,
                                                browser_sign_in):
    """A request that still holds a copy of the session (a token renewal in another tab, a page
    that changed its session) saves it after a sign-out: the store refuses it."""
    app = make_instance(**store_settings)
    browser = Browser(Balancer(app), emulator, browser_sign_in)
    assert browser.sign_in().status_code == 303
    session_id = browser.session_id()
    interface = app.session_interface
    stale = stored_session(app, session_id)
    csrf = csrf_token_of(browser.get("/"))
    assert browser.post("/logout", data={"csrf_token": csrf}).status_code == 303
    assert stored_session(app, session_id) is None

    # That request's copy, changed (activity recorded, say), saved as Flask-Session saves it.
    copy = interface.session_class(stale, sid=session_id)
    copy["flask_entra"] = {**copy["flask_entra"], "last_seen": copy["flask_entra"]["last_seen"] + 1}
    assert copy.modified
    with app.test_request_context("/"):
        interface.save_session(app, copy, app.response_class())
    assert stored_session(app, session_id) is None
    stolen = browser.tab()
    stolen.client.set_cookie("session", session_id)
    assert ADELE not in stolen.get("/").get_data(as_text=True)
