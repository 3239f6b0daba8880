"""Open redirect through `next` (security checklist D1, D3): only a relative path on this site."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from tests.quickstart.webapp_support import pending_cookie_name, pending_cookies, state_of

ATTACKS = [
    "https://evil.example/",
    "//evil.example",
    "/\\evil.example",
    "\\\\evil.example",
    "https:evil.example",
    "/%2F%2Fevil.example",
    "%2F%2Fevil.example",
    "/%09/evil.example",
    "\t//evil.example",
    "/%5Cevil.example",
    "/%252F%252Fevil.example",
    "javascript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "http://localhost:5000/claims",  # our own host, but absolute
    "https://localhost:5000/claims",  # ... other scheme
    "http://localhost:5001/claims",  # ... other port
    "/\r\nLocation: https://evil.example",
    "",
]
ALLOWED = ["/", "/claims", "/graph?x=1", "/a/b#c"]


@pytest.mark.parametrize("value", ATTACKS)
def test_sign_in_never_redirects_off_site(browser, value):
    response = browser.sign_in(next_path=value)
    assert response.status_code == 303
    assert response.headers["Location"] == "/"


@pytest.mark.parametrize("value", ALLOWED)
def test_relative_paths_are_kept(browser, value):
    response = browser.sign_in(next_path=value)
    assert response.status_code == 303
    assert response.headers["Location"] == value


def test_next_is_sealed_in_the_pending_cookie_not_in_state(browser):
    """Where to return travels sealed (encrypted, authenticated) with the pending sign-in: not
    in the state the provider sees, not readable in the cookie, not changeable by the browser."""
    start = browser.start(next_path="/claims")
    query = parse_qs(urlsplit(start.headers["Location"]).query)
    assert "/claims" not in query["state"][0] and "claims" not in start.headers["Location"]
    name = pending_cookie_name(state_of(start.headers["Location"]))
    sealed = pending_cookies(browser.client)[name]
    assert "claims" not in sealed
    result = browser.authorize(start.headers["Location"])
    # An altered cookie (say, to change where it returns) is refused, not followed.
    browser.client.set_cookie(name, sealed[:-8] + ("A" * 8 if sealed[-8:] != "A" * 8 else "B" * 8))
    refused = browser.deliver(result)
    assert refused.status_code == 400 and "Location" not in refused.headers
