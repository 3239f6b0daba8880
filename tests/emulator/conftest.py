"""Fixtures for the emulator's tests (shared helpers are in tests/support.py)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import redeem_code, sign_in_for_code


@pytest.fixture(scope="module")
def access_token(emulator: Any, default_app: Any) -> str:
    """A Graph access token for the default app's sample user, from a real sign-in."""
    response = redeem_code(emulator, default_app, sign_in_for_code(emulator, default_app))
    assert response.status_code == 200, response.text
    return response.json()["access_token"]
