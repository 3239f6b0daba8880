"""The quickstart app calling its own protected web API (todo_api, served on a real port), with
incremental consent; the Admin page for the Admin app role; the groups past the overage on the
claims page. All against the emulator's default directory (Todo API, Adele with the Admin role,
Megan without, Alex in 212 groups)."""

from __future__ import annotations

import io
import re
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from werkzeug.serving import make_server

from tests.quickstart.webapp_support import ADELE, MEGAN, Browser
from todo_api import create_app as create_todo_api

ALEX = "AlexW@contoso.onmicrosoft.com"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def todo_registration(emu: Any) -> Any:
    return next(a for a in emu.directory.applications if a.display_name == "Todo API")


@pytest.fixture
def todo_api(emulator, tmp_path) -> Iterator[str]:
    """The To-do API on a free loopback port, as `make run` serves it."""
    registration = todo_registration(emulator)
    app = create_todo_api({
        "TODO_API_CLIENT_ID": registration.app_id,
        "TODO_API_CLIENT_SECRET": registration.password_credentials[0].secret_text,
        "AUTHORITY": emulator.authority, "ENDPOINT": emulator.graph_me_url,
        "CA_BUNDLE": str(emulator.ca_bundle), "SECRET_KEY": "todo-api-tests-secret-0123456789",
        "TODO_DB": str(tmp_path / "todo" / "todos.db")})
    server = make_server("localhost", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=5)


@pytest.fixture
def todo_app(make_app, emulator, todo_api):
    scope = f"api://{todo_registration(emulator).app_id}/ToDoList.ReadWrite"
    return make_app(TODO_API_URL=todo_api, TODO_API_SCOPE=scope)


def consent_round(browser: Browser, response: Any, username: str = ADELE) -> Any:
    """The app sent the browser to sign in for a new scope: through the provider and back."""
    assert response.status_code == 302, response.get_data(as_text=True)
    login = browser.client.get(response.headers["Location"])
    authorize_url = login.headers["Location"]
    return authorize_url, browser.deliver(browser.authorize(authorize_url, username))


def test_the_todo_page_asks_for_the_apis_scope_only_when_first_opened(todo_app, emulator,
                                                                     browser_sign_in_fn):
    browser = Browser(todo_app, emulator, browser_sign_in_fn)
    first = browser.start()
    signed_in_scopes = parse_qs(urlsplit(first.headers["Location"]).query)["scope"][0].split()
    assert not any(s.startswith("api://") for s in signed_in_scopes)  # not at sign-in
    browser.deliver(browser.authorize(first.headers["Location"]))

    authorize_url, back = consent_round(browser, browser.client.get("/todo"))
    scope = parse_qs(urlsplit(authorize_url).query)["scope"][0]
    assert f"api://{todo_registration(emulator).app_id}/ToDoList.ReadWrite" in scope.split()
    assert back.headers["Location"] == "/todo"
    page = browser.client.get("/todo")
    body = page.get_data(as_text=True)
    assert page.status_code == 200, body
    assert "Nothing to do." in body
    # The API called Graph on Adele's behalf (on-behalf-of) and says who she is.
    assert '<strong class="api-me">Adele Vance</strong>' in body

    added = browser.client.post("/todo", data={"text": "Water the plants",
                                               "csrf_token": CSRF.search(body).group(1)})
    assert added.status_code == 303
    assert "<li>Water the plants</li>" in browser.client.get("/todo").get_data(as_text=True)
    forged = browser.client.post("/todo", data={"text": "x", "csrf_token": "forged"})
    assert forged.status_code == 400


def test_each_user_sees_only_their_own_items(todo_app, emulator, browser_sign_in_fn):
    for username, item in ((ADELE, "Item of Adele"), (MEGAN, "Item of Megan")):
        browser = Browser(todo_app, emulator, browser_sign_in_fn)
        browser.sign_in(username=username)
        consent_round(browser, browser.client.get("/todo"), username)
        page = browser.client.get("/todo").get_data(as_text=True)
        browser.client.post("/todo", data={"text": item, "csrf_token": CSRF.search(page)[1]})
        listed = browser.client.get("/todo").get_data(as_text=True)
        assert f"<li>{item}</li>" in listed
        assert listed.count("<li>") == 1


def test_the_admin_page_is_for_the_admin_role(app, emulator, browser_sign_in_fn):
    adele = Browser(app, emulator, browser_sign_in_fn)
    adele.sign_in(username=ADELE)
    assert adele.client.get("/admin").status_code == 200
    megan = Browser(app, emulator, browser_sign_in_fn)
    megan.sign_in(username=MEGAN)
    refused = megan.client.get("/admin")
    assert refused.status_code == 403
    assert "app role Admin" in refused.get_data(as_text=True)


def test_groups_past_the_overage_are_read_from_graph(app, emulator, browser_sign_in_fn):
    asked: list[str] = []
    inner = emulator.app.wsgi_app

    def counting(environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO", "").endswith("/getMemberGroups"):
            asked.append(environ["PATH_INFO"])
        return inner(environ, start_response)

    emulator.app.wsgi_app = counting
    try:
        alex = Browser(app, emulator, browser_sign_in_fn)
        alex.sign_in(username=ALEX)
        page = alex.client.get("/claims").get_data(as_text=True)
        assert "read from Microsoft Graph" in page
        shown = re.findall(r'<li><code>([0-9a-f-]{36})</code></li>', page)
        user = emulator.directory.user_by_username(ALEX)
        expected = {g.id for g in emulator.directory.transitive_groups(user.id)}
        assert len(shown) > 200 and set(shown) == expected
        # Kept with the session: the next page does not ask Graph again.
        again = alex.client.get("/claims").get_data(as_text=True)
        assert set(re.findall(r'<li><code>([0-9a-f-]{36})</code></li>', again)) == expected
    finally:
        emulator.app.wsgi_app = inner
    assert len(asked) == 1


def test_the_api_keeps_its_on_behalf_of_token_per_caller(todo_app, emulator,
                                                         browser_sign_in_fn):
    """The API's /api/me exchanges the caller's token once, then serves Graph calls from its
    kept on-behalf-of token until shortly before it expires."""
    exchanges: list[str] = []
    inner = emulator.app.wsgi_app

    def counting(environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO", "").endswith("/oauth2/v2.0/token"):
            body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            if b"on_behalf_of" in body:
                exchanges.append("obo")
            environ["wsgi.input"] = io.BytesIO(body)
        return inner(environ, start_response)

    emulator.app.wsgi_app = counting
    try:
        browser = Browser(todo_app, emulator, browser_sign_in_fn)
        browser.sign_in()
        consent_round(browser, browser.client.get("/todo"))
        for _ in range(3):
            assert "Adele Vance" in browser.client.get("/todo").get_data(as_text=True)
    finally:
        emulator.app.wsgi_app = inner
    assert exchanges == ["obo"]
