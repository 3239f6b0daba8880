"""Authorization in a real browser: sign in, open To-do (the provider asks consent for the To-do
API's scope, in the API's own words, then the list), the Admin page allowed for Adele (who has the
Admin app role) and refused with a 403 page for Megan, and Alex's groups (past the overage, read
from Graph) on the claims page. The web app, the To-do API and the emulator each on their own
loopback port, as `make run` serves them."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server

from entra_emulator.server import EmulatorServer
from tests.e2e.browser_support import free_port, snap
from tests.support import default_directory_document
from todo_api import create_app as create_todo_api
from webapp import create_app

pytestmark = pytest.mark.browser  # a real Chromium (Debian's /usr/bin/chromium)

PASSWORD = "Passw0rd!"


def serve(app: Any, port: int) -> Any:
    server = make_server("localhost", port, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def stack(emulator: EmulatorServer, tmp_path: Path) -> Iterator[tuple[str, EmulatorServer]]:
    port, api_port = free_port(), free_port()
    base = f"http://localhost:{port}"
    directory = default_directory_document()
    webapp_registration = next(a for a in directory["applications"]
                               if a["displayName"] == "python-webapp")
    webapp_registration["web"]["redirectUris"] = [f"{base}/getAToken", f"{base}/"]
    (tmp_path / "directory.json").write_text(json.dumps(directory))
    shutil.copytree(emulator.state_dir / "tls", tmp_path / "state" / "tls")
    emu = EmulatorServer(directory=tmp_path / "directory.json",
                         state_dir=tmp_path / "state").start()
    api = next(a for a in emu.directory.applications if a.display_name == "Todo API")
    web = next(a for a in emu.directory.applications if a.display_name == "python-webapp")
    servers = [
        serve(create_todo_api({
            "TODO_API_CLIENT_ID": api.app_id,
            "TODO_API_CLIENT_SECRET": api.password_credentials[0].secret_text,
            "AUTHORITY": emu.authority, "ENDPOINT": emu.graph_me_url,
            "CA_BUNDLE": str(emu.ca_bundle), "SECRET_KEY": "e2e-todo-secret-0123456789abcdef",
            "TODO_DB": str(tmp_path / "todo" / "todos.db")}), api_port),
        serve(create_app({
            "CLIENT_ID": web.app_id,
            "CLIENT_SECRET": web.password_credentials[0].secret_text,
            "AUTHORITY": emu.authority, "ENDPOINT": emu.graph_me_url,
            "CA_BUNDLE": str(emu.ca_bundle), "REDIRECT_URI": f"{base}/getAToken",
            "SECRET_KEY": "e2e-secret-key-0123456789abcdef",
            "SESSION_FILE_DIR": str(tmp_path / "sessions"),
            "TODO_API_URL": f"http://localhost:{api_port}",
            "TODO_API_SCOPE": f"api://{api.app_id}/ToDoList.ReadWrite"}), port)]
    try:
        yield base, emu
    finally:
        for server in servers:
            server.shutdown()
        emu.stop()


def sign_in(page: Any, base: str, emu: EmulatorServer, username: str) -> None:
    from playwright.sync_api import expect

    page.goto(base + "/")
    page.get_by_role("link", name="Sign in").first.click()
    page.wait_for_url(f"{emu.http_base}/**")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.locator("button[type=submit]").first.click()
    accept = page.locator("button[name=decision][value=accept]")
    if accept.count():  # the first sign-in of this user asks for the app's permissions
        accept.click()
    page.wait_for_url(f"{base}/**")
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()


def sign_out(page: Any, base: str) -> None:
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(f"{base}/")


def test_todo_with_incremental_consent_admin_by_role_and_groups_past_the_overage(stack, page):
    from playwright.sync_api import expect

    base, emu = stack
    sign_in(page, base, emu, "AdeleV@contoso.onmicrosoft.com")

    page.get_by_role("link", name="To-do").click()
    page.wait_for_url(f"{emu.http_base}/**")  # the API's scope was not asked for at sign-in
    expect(page.locator("body")).to_contain_text("Read and change your todo lists")
    snap(page, "authz-01-consent-for-the-todo-api")
    page.locator("button[name=decision][value=accept]").click()
    page.wait_for_url(f"{base}/todo")
    expect(page.locator(".api-me")).to_have_text("Adele Vance")  # via on-behalf-of
    expect(page.locator(".todos")).to_contain_text("Nothing to do.")
    page.fill("input[name=text]", "Water the plants")
    page.get_by_role("button", name="Add").click()
    expect(page.locator(".todos")).to_contain_text("Water the plants")
    snap(page, "authz-02-todo-list")

    page.get_by_role("link", name="Admin").click()
    expect(page.locator("h1")).to_have_text("Admin")
    snap(page, "authz-03-admin-allowed")
    sign_out(page, base)

    sign_in(page, base, emu, "MeganB@contoso.onmicrosoft.com")
    response = page.goto(base + "/admin")
    assert response is not None and response.status == 403
    expect(page.locator("main")).to_contain_text("app role Admin")
    snap(page, "authz-04-admin-refused")
    sign_out(page, base)

    sign_in(page, base, emu, "AlexW@contoso.onmicrosoft.com")
    page.get_by_role("link", name="Claims").first.click()
    expect(page.locator("main")).to_contain_text("read from Microsoft Graph")
    assert page.locator(".groups li").count() > 200
    snap(page, "authz-05-groups-past-the-overage")
