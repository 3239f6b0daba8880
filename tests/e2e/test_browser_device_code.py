"""The device code flow with the code entered in a real browser: an unmodified MSAL console
app (the default directory's public client python-console) polls while a user, in Chromium,
opens the emulator's device-login page on its http port, types the code, confirms the app,
signs in and consents to a permission not granted yet, and sees the emulator say they are
signed in on their device; MSAL's poll then returns the tokens."""

from __future__ import annotations

import threading
from typing import Any

import msal
import pytest

from entra_emulator.server import EmulatorServer
from tests.e2e.browser_support import snap
from tests.support import ADELE, DEFAULT_PASSWORD, get_me

pytestmark = pytest.mark.browser  # a real Chromium (Debian's /usr/bin/chromium)

CONSOLE = "9c1e7a3b-5d2f-4e8a-b6c4-1f0d3e5a7b9c"


def test_the_device_code_is_entered_on_the_emulators_page(emulator: EmulatorServer, page: Any):
    app = msal.PublicClientApplication(CONSOLE, authority=emulator.authority,
                                       instance_discovery=False)
    # Calendars.Read is not granted to python-console: the user consents to it on the way.
    flow = app.initiate_device_flow(scopes=["User.Read", "Calendars.Read"])
    assert flow["verification_uri"].startswith("http://")   # the browser port: no TLS warning
    results: list[dict[str, Any]] = []
    poller = threading.Thread(target=lambda: results.append(
        app.acquire_token_by_device_flow(flow)), daemon=True)
    poller.start()

    page.goto(flow["verification_uri"])
    assert page.locator("h1").inner_text() == "Enter code"
    page.fill("#otc", "WRONGCODE")
    page.click("button[type=submit]")
    assert "That code didn't work" in page.locator(".error").inner_text()
    page.fill("#otc", flow["user_code"].lower())   # typed in any case
    snap(page, "device-code-entry")
    page.click("button[type=submit]")
    assert page.locator("h1").inner_text() == "Are you trying to sign in to python-console?"
    page.click("button[value=accept]")
    page.fill("#username", ADELE)
    page.fill("#password", DEFAULT_PASSWORD)
    page.click("button[type=submit]")
    assert page.locator("h1").inner_text() == "Permissions requested"
    assert "Read your calendars" in page.locator("ul.permissions").inner_text()
    page.click("button[value=accept]")
    done = page.locator("p.done").inner_text()
    snap(page, "device-code-signed-in")
    assert "You have signed in to the python-console application on your device" in done

    poller.join(timeout=20)
    [result] = results
    assert "access_token" in result, result
    assert "Calendars.Read" in result["scope"]
    assert result["id_token_claims"]["preferred_username"] == ADELE
    assert get_me(emulator, result["access_token"]).json()["userPrincipalName"] == ADELE
