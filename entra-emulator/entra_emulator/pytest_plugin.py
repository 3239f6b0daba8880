"""pytest plugin (registered through the `pytest11` entry point: installing entra-emulator is
enough; `-p no:entra_emulator` turns it off).

Fixtures:

- `entra_emulator`: a running emulator (EntraEmulator) over real TLS on free ports, its CA in a
  temporary folder, its directory from `entra_directory`; reset after each test (consents, SSO
  sessions, codes, tokens, faults, defects, clock, directory, signing keys).
- `entra_directory`: override it (in a conftest.py or a test module) to return a dict in the
  directory file's Graph shapes, or a path; the packaged default (Contoso) otherwise. One
  emulator runs per distinct directory, so every folder gets its own.
- `entra_trust`: points REQUESTS_CA_BUNDLE and CURL_CA_BUNDLE at the emulator's bundle for the
  test, whatever the shell had set, for code that offers no other way to trust a CA.
- `entra_emulators`: the session's factory, `entra_emulators.get(directory)`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from entra_emulator.testing import EntraEmulator, copy_tls


class EmulatorFactory:
    """One emulator per distinct directory for the whole test session; all share one CA, so a
    single CA bundle trusts each of them."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self._tmp = tmp_path_factory
        self._running: dict[str, EntraEmulator] = {}

    def get(self, directory: dict[str, Any] | str | Path | None = None) -> EntraEmulator:
        key = _directory_key(directory)
        if key not in self._running:
            state_dir = self._tmp.mktemp("entra-emulator")
            if self._running:
                copy_tls(next(iter(self._running.values())).server.state_dir, state_dir)
            self._running[key] = EntraEmulator.start(directory, state_dir)
        return self._running[key]

    def stop_all(self) -> None:
        for emulator in self._running.values():
            emulator.stop()
        self._running.clear()


def _directory_key(directory: dict[str, Any] | str | Path | None) -> str:
    if directory is None:
        return "default"
    if isinstance(directory, dict):
        text = json.dumps(directory, sort_keys=True)
        return "dict:" + hashlib.sha256(text.encode()).hexdigest()
    return "file:" + str(Path(directory).resolve())


@pytest.fixture(scope="session")
def entra_emulators(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorFactory]:
    factory = EmulatorFactory(tmp_path_factory)
    yield factory
    factory.stop_all()


@pytest.fixture
def entra_directory() -> dict[str, Any] | str | Path | None:
    """The directory the `entra_emulator` fixture serves: None for the packaged default."""
    return None


@pytest.fixture
def entra_emulator(entra_emulators: EmulatorFactory,
                   entra_directory: dict[str, Any] | str | Path | None
                   ) -> Iterator[EntraEmulator]:
    emulator = entra_emulators.get(entra_directory)
    yield emulator
    emulator.reset()


@pytest.fixture
def entra_trust(entra_emulator: EntraEmulator, monkeypatch: pytest.MonkeyPatch) -> EntraEmulator:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", entra_emulator.ca_bundle)
    monkeypatch.setenv("CURL_CA_BUNDLE", entra_emulator.ca_bundle)
    return entra_emulator
