"""This project's own fixtures. The emulator comes from the entra_emulator pytest plugin, as in
any project that installs it; helpers live in tests/support.py (no test imports a conftest).

- `emulator` (session): the plugin's emulator for the packaged default directory (its
  EmulatorServer), trusted the way an app trusts it: REQUESTS_CA_BUNDLE (and CURL_CA_BUNDLE)
  name its CA bundle for the whole session. Reset after each test that uses it (the plugin's
  reset: consents, SSO sessions, codes, tokens, faults, defects, clock, keys).
- `default_app`: the directory's web application (client_id, client_secret, redirect_uri).
- `browser_sign_in`: the emulator's scripted browser (entra_emulator.testing.browser_sign_in).
- `start_emulator(directory=..., state_dir=...)`: another emulator for a test's own directory.
- `iss_emulator` (module): an emulator that sends RFC 9207's `iss`.
- `short_lived`: an emulator whose access tokens live 60 s, which MSAL renews on every use.
- `redis_server`: a real redis-server on a free loopback port, in the test's temporary folder, no
  persistence; stopped after the test. Fails (never skips) when the binary is missing.

Tests that need Chromium or Redis are marked `browser` / `redis` (the latter automatically, by
the `redis_server` fixture), so `pytest -m "not browser and not redis"` runs without them.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from entra_emulator.server import EmulatorServer
from entra_emulator.testing import browser_sign_in
from tests.support import SHORT_ACCESS_TOKEN, WebApp, default_directory_document


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "redis_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.redis)


# ---------------------------------------------------------------------------------------------
# Emulators
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def emulator(entra_emulators: Any) -> Iterator[EmulatorServer]:
    handle = entra_emulators.get(None)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("REQUESTS_CA_BUNDLE", handle.ca_bundle)
        patch.setenv("CURL_CA_BUNDLE", handle.ca_bundle)
        yield handle.server


@pytest.fixture(autouse=True)
def _reset_emulator_after_test(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "emulator" in request.fixturenames:
        request.getfixturevalue("entra_emulators").get(None).reset()


@pytest.fixture
def start_emulator(tmp_path: Path, emulator: EmulatorServer) -> Iterator[Any]:
    """Factory: start_emulator(directory=dict|path|None, state_dir=None) -> started emulator,
    stopped after the test. A new state folder gets the session emulator's CA and server
    certificate, so the session's REQUESTS_CA_BUNDLE trusts it too."""
    started: list[EmulatorServer] = []

    def start(directory: dict[str, Any] | str | Path | None = None,
              state_dir: str | Path | None = None) -> EmulatorServer:
        if isinstance(directory, dict):
            path = tmp_path / f"directory-{len(started)}.json"
            path.write_text(json.dumps(directory))
            directory = path
        if state_dir is None:
            state_dir = tmp_path / f"state-{len(started)}"
            shutil.copytree(emulator.state_dir / "tls", Path(state_dir) / "tls")
        emu = EmulatorServer(directory=directory, state_dir=state_dir, https_port=0,
                             http_port=0).start()
        started.append(emu)
        return emu

    yield start
    for emu in started:
        emu.stop()


@pytest.fixture
def short_lived(start_emulator):
    directory = default_directory_document()
    directory["applications"][0]["tokenLifetimes"] = SHORT_ACCESS_TOKEN
    return start_emulator(directory=directory)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Any]:
    from tests.scale.scale_support import RedisServer

    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def iss_emulator(emulator, tmp_path_factory) -> Iterator[EmulatorServer]:
    """An emulator that sends RFC 9207's `iss` in every authorization response and advertises
    it; its certificates are the session emulator's, which the tests already trust. Its defects
    are cleared after each test that uses it."""
    state_dir = tmp_path_factory.mktemp("iss-emulator")
    shutil.copytree(emulator.state_dir / "tls", state_dir / "tls")
    with EmulatorServer(state_dir=state_dir, authorization_response_iss=True) as emu:
        yield emu


@pytest.fixture(autouse=True)
def _clear_iss_emulator_defects(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "iss_emulator" in request.fixturenames:
        request.getfixturevalue("iss_emulator").defects.clear()


@pytest.fixture(scope="session")
def default_app(emulator: EmulatorServer) -> WebApp:
    app = emulator.directory.applications[0]
    return WebApp(client_id=app.app_id, client_secret=app.password_credentials[0].secret_text,
                  redirect_uri=app.redirect_uris[0],
                  post_logout_redirect_uri=app.redirect_uris[1])


@pytest.fixture(name="browser_sign_in")
def browser_sign_in_fixture() -> Any:
    return browser_sign_in
