"""Fixtures for the scale-out tests (helpers in scale_support.py).

- `make_instance(emu=None, **settings)`: one app instance (create_app) with the shared test
  settings; instances made with the same settings share sessions through the store.
- `redis_settings`: the settings that put an instance's sessions in `redis_server`.
- `start_gunicorn(**settings)`: a real `gunicorn -c gunicorn.conf.py wsgi:app` (1 worker, 2 threads)
  on a free loopback port, the app configured for the emulator plus `settings` (environment
  variables, GUNICORN_* included); returns a `Gunicorn` once /healthz answers 200; stopped after
  the test.
(`redis_server` and `short_lived` are in tests/conftest.py.)
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.scale.scale_support import (
    GUNICORN,
    GUNICORN_STARTUP_SECONDS,
    ROOT,
    Gunicorn,
    RedisServer,
    app_config,
    free_port,
)
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


@pytest.fixture
def start_gunicorn(tmp_path: Path, emulator) -> Iterator[Callable[..., Gunicorn]]:
    started: list[Gunicorn] = []

    def start(**settings: str) -> Gunicorn:
        port = free_port()
        env = {**os.environ, "GUNICORN_WORKERS": "1", "GUNICORN_THREADS": "2",
               **app_config(emulator, **settings), "GUNICORN_BIND": f"127.0.0.1:{port}",
               "SESSION_FILE_DIR": str(tmp_path / "sessions")}
        log_path = tmp_path / f"gunicorn-{port}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen([str(GUNICORN), "-c", "gunicorn.conf.py", "wsgi:app"],
                                       cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        server = Gunicorn(log_path, port, process)
        started.append(server)
        deadline = time.monotonic() + GUNICORN_STARTUP_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(f"gunicorn exited with {process.returncode}: {server.log()[-3000:]}")
            try:
                if requests.get(f"{server.base}/healthz", timeout=2).status_code == 200:
                    return server
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"gunicorn did not answer within {GUNICORN_STARTUP_SECONDS} s: "
                            f"{server.log()[-3000:]}")
            time.sleep(0.05)

    yield start
    for server in started:
        server.process.terminate()
        try:
            server.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()
