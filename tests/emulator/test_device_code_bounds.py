"""What an anonymous caller of /devicecode can make the emulator keep is bounded: each request's
size (AADSTS90015, as /authorize) and how many device codes are held at once."""

from __future__ import annotations

import requests

from entra_emulator import device_code
from tests.support import assert_entra_error

CONSOLE = "9c1e7a3b-5d2f-4e8a-b6c4-1f0d3e5a7b9c"  # python-console, the default public client


def devicecode(emulator, **data: str) -> requests.Response:
    return requests.post(f"{emulator.https_base}/{emulator.tenant_id}/oauth2/v2.0/devicecode",
                         data={"client_id": CONSOLE, "scope": "User.Read", **data},
                         verify=emulator.ca_bundle, timeout=10)


def held(emulator) -> int:
    return emulator.state.db.one("SELECT COUNT(*) FROM device_codes")[0]


def test_an_oversized_request_is_refused_and_stores_nothing(emulator):
    assert devicecode(emulator).status_code == 200   # (and its table exists)
    before = held(emulator)
    refused = devicecode(emulator, scope="User.Read " * 1000)
    assert_entra_error(refused, 400, "invalid_request", 90015)
    assert held(emulator) == before


def test_only_the_newest_device_codes_are_kept(emulator, monkeypatch):
    monkeypatch.setattr(device_code, "MAX_DEVICE_CODES", 3)
    codes = [devicecode(emulator).json()["user_code"] for _ in range(5)]
    assert held(emulator) == 3
    with emulator.app.app_context():
        store = device_code.device_codes()
        assert [store.by_user_code(c) is not None for c in codes] == [False, False, True,
                                                                      True, True]


def test_a_reset_forgets_device_codes(emulator):
    """Like every sign-in in progress, a device authorization does not outlive a test."""
    assert devicecode(emulator).status_code == 200
    assert held(emulator) > 0
    emulator.state.reset_to(emulator.state.snapshot())
    assert held(emulator) == 0
