"""Start-up cost: `python -m entra_emulator serve` does not import the testing helpers' HTTP
client (requests), and the parent of `serve --workers N` not even Flask and the app; the package
imports them lazily, and its public API is unchanged."""

from __future__ import annotations

import subprocess
import sys

import entra_emulator


def test_the_server_and_command_line_do_not_import_requests():
    result = subprocess.run(
        [sys.executable, "-c", "import entra_emulator.server, entra_emulator.__main__; "
                               "import sys; print('requests' in sys.modules)"],
        capture_output=True, text=True, check=True, timeout=60)
    assert result.stdout.strip() == "False", result.stderr


def test_the_command_line_and_the_workers_parent_do_not_import_flask():
    result = subprocess.run(
        [sys.executable, "-c", "import entra_emulator.__main__, entra_emulator.serving, "
                               "entra_emulator.workers; import sys; print('flask' in "
                               "sys.modules, 'entra_emulator.app' in sys.modules)"],
        capture_output=True, text=True, check=True, timeout=60)
    assert result.stdout.split() == ["False", "False"], result.stderr


def test_the_testing_names_are_still_importable_from_the_package():
    # In a fresh interpreter: here the pytest plugin has already imported entra_emulator.testing.
    result = subprocess.run(
        [sys.executable, "-c", "from entra_emulator import EntraEmulator, sign_in, "
                               "browser_sign_in; import entra_emulator, sys; "
                               "print('requests' in sys.modules, EntraEmulator.__module__, "
                               "entra_emulator.testing.sign_in is sign_in)"],
        capture_output=True, text=True, check=True, timeout=60)
    assert result.stdout.split() == ["True", "entra_emulator.testing", "True"], result.stderr

    from entra_emulator import EntraEmulator, browser_sign_in, sign_in, testing

    assert EntraEmulator is testing.EntraEmulator
    assert sign_in is testing.sign_in
    assert browser_sign_in is testing.browser_sign_in
    assert entra_emulator.SignInError is testing.SignInError
    assert entra_emulator.SignInResult is testing.SignInResult
    from entra_emulator import EmulatorServer, server

    assert EmulatorServer is server.EmulatorServer


def test_the_public_names_are_unchanged():
    assert sorted(entra_emulator.__all__) == [
        "DirectoryError", "EmulatorServer", "EntraEmulator", "SignInError", "SignInResult",
        "browser_sign_in", "env_settings", "load_directory", "sign_in"]
    assert all(hasattr(entra_emulator, name) for name in entra_emulator.__all__)
    assert set(entra_emulator.__all__) <= set(dir(entra_emulator))
