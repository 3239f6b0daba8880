"""A scripted browser for the device code flow's pages (device_login.py): what a user does on
another device with the code a console app shows. Works without pytest:

    flow = app.initiate_device_flow(scopes=["User.Read"])          # MSAL
    threading.Thread(target=device_sign_in, args=(flow["verification_uri"], flow["user_code"],
                     "AdeleV@contoso.onmicrosoft.com", "Passw0rd!")).start()
    result = app.acquire_token_by_device_flow(flow)                 # polls until signed in
"""

from __future__ import annotations

from urllib.parse import urljoin

import requests

from entra_emulator.testing import SignInError, _PageParser

__all__ = ["SignInError", "device_sign_in"]


def device_sign_in(verification_uri: str, user_code: str, username: str, password: str, *,
                   confirm: str = "accept", consent: str = "accept",
                   session: requests.Session | None = None, verify: str | bool | None = None,
                   max_steps: int = 8) -> str:
    """Open `verification_uri`, enter `user_code`, answer "Are you trying to sign in to …?"
    (`confirm="accept"` or `"cancel"`), sign in, answer the consent page if one is shown
    (`consent`), and return the text of the last page ("You have signed in to …" or "You
    declined …"). Raises SignInError when the emulator shows an error (a wrong or expired code,
    a wrong password, an error page). Pass `session` to keep the emulator's SSO cookie."""
    browser = session or requests.Session()
    if verify is not None:
        browser.verify = verify
    response = browser.get(verification_uri, allow_redirects=False)
    for _ in range(max_steps):
        if response.is_redirect:
            response = browser.get(urljoin(response.url, response.headers["Location"]),
                                   allow_redirects=False)
            continue
        page = _PageParser()
        page.feed(response.text)
        if response.status_code != 200 or page.errors and any(e.strip() for e in page.errors):
            raise SignInError(f"emulator answered {response.status_code}: "
                              f"{' '.join(page.errors).strip() or response.text[:500]}")
        if not page.forms:
            return _text_of(response.text)
        form = page.forms[0]
        target = urljoin(response.url, form.action)
        if "otc" in form.inputs:
            data = {**form.inputs, "otc": user_code}
        elif "username" in form.inputs and "password" in form.inputs:
            data = {**form.inputs, "username": username, "password": password}
        elif "flow" in form.inputs:
            data = {**form.inputs, "decision": confirm}
        elif ("decision", "accept") in form.buttons:
            data = {**form.inputs, "decision": consent}
        else:
            raise SignInError(f"an unexpected form at {response.url}")
        response = browser.post(target, data=data, allow_redirects=False)
    raise SignInError(f"no last page after {max_steps} pages")


def _text_of(html: str) -> str:
    from html.parser import HTMLParser

    class Text(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.parts: list[str] = []
            self._skip = 0

        def handle_starttag(self, tag: str, attrs: object) -> None:
            self._skip += tag in ("script", "style", "title")

        def handle_endtag(self, tag: str) -> None:
            self._skip -= tag in ("script", "style", "title") and self._skip > 0

        def handle_data(self, data: str) -> None:
            if not self._skip and data.strip():
                self.parts.append(" ".join(data.split()))

    parser = Text()
    parser.feed(html)
    return " ".join(parser.parts)
