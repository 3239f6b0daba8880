"""Fixtures for the web app's tests (helpers in webapp_support.py)."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import pytest

from tests.quickstart.webapp_support import (
    Browser,
    webapp_config,
)
from webapp import create_app


@pytest.fixture(name="make_app")
def make_app_fixture(emulator, tmp_path) -> Callable[..., Any]:
    def make(emu=None, **overrides: Any):
        return create_app(webapp_config(emu or emulator, tmp_path, **overrides))
    return make


@pytest.fixture(name="app")
def app_fixture(make_app):
    return make_app()


@pytest.fixture(name="browser")
def browser_fixture(app, emulator, browser_sign_in_fn):
    return Browser(app, emulator, browser_sign_in_fn)


@pytest.fixture(name="browser_sign_in_fn")
def browser_sign_in_fn_fixture(browser_sign_in) -> Callable[..., Any]:
    """The emulator's scripted browser for its pages (entra_emulator.testing)."""
    return browser_sign_in


@pytest.fixture(name="closed_port")
def closed_port_fixture() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


@pytest.fixture
def short_app(make_app, short_lived):
    """The app on the short_lived emulator: every use of its access token renews it."""
    return make_app(short_lived)


@pytest.fixture
def short_browser(short_app, short_lived, browser_sign_in_fn):
    """A browser signed in to short_app."""
    browser = Browser(short_app, short_lived, browser_sign_in_fn)
    assert browser.sign_in().status_code == 303
    return browser
