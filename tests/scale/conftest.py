"""Fixtures for the scale-out tests (helpers in scale_support.py).

- `redis_server`: a real redis-server on a free loopback port, in the test's temporary folder, no
  persistence; stopped after the test. Fails (never skips) when the binary is missing.
- `make_instance(emu=None, **settings)`: one app instance (create_app) with the shared test
  settings; instances made with the same settings share sessions through the store.
- `redis_settings`: the settings that put an instance's sessions in `redis_server`.
- `short_lived`: an emulator whose access tokens live 60 s, which MSAL renews on every use.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import default_directory_document
from tests.scale.scale_support import RedisServer, app_config
from webapp import create_app

# MSAL treats an access token with under 5 minutes left as expired: with 60 s tokens every call
# that needs one refreshes, without sleeping in the test.
SHORT_ACCESS_TOKEN = {"accessToken": 60, "refreshToken": 3600}


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def make_instance(emulator, tmp_path: Path) -> Callable[..., Any]:
    def make(emu=None, **settings: Any):
        # Instances of one test share the session folder too, as gunicorn workers of one machine.
        settings.setdefault("SESSION_FILE_DIR", str(tmp_path / "sessions"))
        return create_app(app_config(emu or emulator, **settings))
    return make


@pytest.fixture
def redis_settings(redis_server: RedisServer) -> dict[str, str]:
    return {"SESSION_TYPE": "redis", "REDIS_URL": redis_server.url}


@pytest.fixture
def short_lived(start_emulator):
    directory = default_directory_document()
    directory["applications"][0]["tokenLifetimes"] = SHORT_ACCESS_TOKEN
    return start_emulator(directory=directory)
