"""Open redirect through `next` (security checklist D1, D3): only a relative path on this site."""

from __future__ import annotations

import pytest

from webapp.auth import safe_next_path

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
def test_unsafe_next_values_fall_back_to_home(value):
    assert safe_next_path(value) == "/"


@pytest.mark.parametrize("value", ALLOWED)
def test_relative_paths_are_kept(value):
    assert safe_next_path(value) == value


@pytest.mark.parametrize("value", ATTACKS)
def test_sign_in_never_redirects_off_site(browser, value):
    response = browser.sign_in(next_path=value)
    assert response.status_code == 303
    assert response.headers["Location"] == "/"


def test_next_is_kept_server_side_not_in_state(browser):
    from urllib.parse import parse_qs, urlsplit

    start = browser.start(next_path="/claims")
    query = parse_qs(urlsplit(start.headers["Location"]).query)
    assert "/claims" not in query["state"][0]
