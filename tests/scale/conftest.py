"""Fixtures for the scale-out tests (helpers in scale_support.py).

- `make_instance(emu=None, **settings)`: one app instance (create_app) with the shared test
  settings; instances made with the same settings share sessions through the store.
- `redis_settings`: the settings that put an instance's sessions in `redis_server`.
(`redis_server` and `short_lived` are in tests/conftest.py.)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.scale.scale_support import RedisServer, app_config
from webapp import create_app


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
