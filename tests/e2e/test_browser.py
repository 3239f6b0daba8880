"""A person's first five minutes, in a real browser: open the app, sign in through the emulator's
pages, see the greeting, call Graph, read the claims, sign out.

Chromium is Debian's (/usr/bin/chromium, installed by `make test`); Playwright drives it. Each step
leaves a screenshot in screenshots/ (git-ignored) for a person to look at.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from werkzeug.serving import make_server

from entra_emulator.server import EmulatorServer
from tests.e2e.browser_support import free_port, snap
from tests.support import default_directory_document
from webapp import create_app

pytestmark = pytest.mark.browser  # a real Chromium (Debian's /usr/bin/chromium)

USERNAME = "AdeleV@contoso.onmicrosoft.com"

# "localhost": app and provider on the same site, as with `make run`. "127.0.0.1": another site
# for the browser, as real Entra is, so the provider's form_post arrives as a cross-site POST that
# carries no SameSite=Lax cookie.
@pytest.fixture(params=["localhost", "127.0.0.1"], ids=["same-site", "cross-site"])
def live_stack(request: pytest.FixtureRequest, emulator: EmulatorServer,
               tmp_path: Path) -> Iterator[tuple[str, EmulatorServer]]:
    """The emulator and the web app, each on its own loopback port, as `make run` runs them."""
    port = free_port()
    base = f"http://localhost:{port}"
    directory = default_directory_document()
    directory["applications"][0]["web"]["redirectUris"] = [f"{base}/getAToken", f"{base}/"]
    (tmp_path / "directory.json").write_text(json.dumps(directory))
    # The session emulator's CA and server certificate (localhost and 127.0.0.1), already trusted.
    shutil.copytree(emulator.state_dir / "tls", tmp_path / "state" / "tls")
    emu = EmulatorServer(directory=tmp_path / "directory.json", state_dir=tmp_path / "state",
                         host=request.param).start()
    request.addfinalizer(emu.stop)
    app_registration = emu.directory.applications[0]
    app = create_app({
        "CLIENT_ID": app_registration.app_id,
        "CLIENT_SECRET": app_registration.password_credentials[0].secret_text,
        "AUTHORITY": emu.authority,
        "ENDPOINT": emu.graph_me_url,
        "CA_BUNDLE": str(emu.ca_bundle),
        "REDIRECT_URI": f"{base}/getAToken",
        "SECRET_KEY": "e2e-secret-key-0123456789abcdef",
        "SESSION_FILE_DIR": str(tmp_path / "sessions"),
    })
    server = make_server("localhost", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield base, emu
    finally:
        server.shutdown()
        thread.join(timeout=5)


def test_sign_in_call_graph_read_claims_and_sign_out(live_stack, page) -> None:
    from playwright.sync_api import expect

    base, emu = live_stack

    page.goto(base + "/")
    expect(page.get_by_role("link", name="Sign in").first).to_be_visible()
    snap(page, "01-signed-out-home")

    page.get_by_role("link", name="Sign in").first.click()
    page.wait_for_url(f"{emu.http_base}/**")
    page.fill("input[name=username]", USERNAME)
    page.fill("input[name=password]", "Passw0rd!")
    snap(page, "02-emulator-sign-in")
    page.locator("button[type=submit]").first.click()

    accept = page.locator("button[name=decision][value=accept]")
    expect(accept).to_be_visible()
    expect(page.locator("body")).to_contain_text("Sign you in and read your profile")
    snap(page, "03-emulator-consent")
    with page.expect_request(f"{base}/getAToken") as callback:
        accept.click()
    # The provider's answer is a form_post: cross-site when the provider is on another site
    # (127.0.0.1), which only SameSite=None cookies (the pending sign-in's) ride along with.
    assert callback.value.method == "POST"
    cross_site = urlsplit(emu.http_base).hostname != "localhost"
    fetch_site = callback.value.all_headers().get("sec-fetch-site")
    assert fetch_site == ("cross-site" if cross_site else "same-site"), fetch_site
    assert "entra-signin-" in callback.value.all_headers().get("cookie", "")

    page.wait_for_url(f"{base}/**")
    expect(page.locator("h1")).to_contain_text("Adele Vance")
    assert "code=" not in page.url and "state=" not in page.url
    snap(page, "04-signed-in-home")

    page.get_by_role("link", name="Call Microsoft Graph").click()
    expect(page.locator("main")).to_contain_text("Retail Manager")
    expect(page.locator("main")).to_contain_text(USERNAME)
    snap(page, "05-graph-profile")

    page.get_by_role("link", name="Claims").first.click()
    expect(page.locator("main")).to_contain_text("preferred_username")
    expect(page.locator("main")).to_contain_text(emu.tenant_id)
    snap(page, "06-id-token-claims")

    # No token ever reaches the browser: not in the page, not in a cookie.
    html = page.content()
    assert "eyJ" not in html
    assert all("eyJ" not in cookie["value"] for cookie in page.context.cookies())

    # The Sign out button POSTs (with its CSRF token) to /logout, which sends the browser to the
    # provider's end_session_endpoint; the provider sends it back to / with the sealed state,
    # which the app takes and answers with the same page without it (a clean address).
    with page.expect_request(lambda r: r.method == "POST" and r.url == f"{base}/logout"):
        page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(f"{base}/")
    expect(page.get_by_role("link", name="Sign in").first).to_be_visible()
    expect(page.get_by_role("status")).to_have_text("You have signed out.")  # its state came back
    assert urlsplit(page.url).query == "" and "state=" not in page.url
    assert page.url == f"{base}/"
    assert not [c for c in page.context.cookies() if c["name"] == "session"]
    snap(page, "07-signed-out-again")
    page.reload()  # said once: the sign-out's own return, not every visit
    expect(page.get_by_role("status")).to_have_count(0)

    # Signed out for real: the next sign-in asks for a password again.
    page.get_by_role("link", name="Sign in").first.click()
    page.wait_for_url(f"{emu.http_base}/**")
    expect(page.locator("input[name=password]")).to_be_visible()
