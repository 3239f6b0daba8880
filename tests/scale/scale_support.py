"""Helpers for the scale-out tests: a real redis-server in a temporary folder, several app instances
behind a round-robin balancer, a browser whose one cookie jar reaches all of them, and the handle of
a real gunicorn serving the production configuration (the `start_gunicorn` fixture, conftest.py).

The apps run in-process (werkzeug's test client over the balancer); the emulator's pages are driven
over real HTTP by the shared `browser_sign_in` helper (entra_emulator.testing), as in
tests/quickstart.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
import requests
from werkzeug.test import Client

from tests.quickstart.webapp_support import app_settings

PASSWORD = "Passw0rd!"
ADELE = "AdeleV@contoso.onmicrosoft.com"
MEGAN = "MeganB@contoso.onmicrosoft.com"
SESSION_COOKIE = "session"
SECRET_KEY = "scale-tests-secret-key-0123456789"
REDIS_STARTUP_SECONDS = 10
ROOT = Path(__file__).resolve().parents[2]
GUNICORN = Path(sys.executable).with_name("gunicorn")
GUNICORN_STARTUP_SECONDS = 30


# -- redis-server ------------------------------------------------------------------------------

def redis_binary() -> str:
    binary = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None)
    if binary is None:
        pytest.fail("redis-server is not installed, and these tests need a real one. "
                    "`make test` installs it (Debian: apt-get install redis-server).",
                    pytrace=False)
    return binary


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RedisServer:
    """A redis-server on a loopback port, data only in memory, in its own folder. `stop()` and
    `start()` again bring it back on the same port (empty: nothing is persisted); `pause()` and
    `resume()` freeze it (connections stay open, nothing answers) and let it go on."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.binary = redis_binary()
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log(self) -> Path:
        return self.directory / "redis.log"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5)

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
             str(self.directory), "--save", "", "--appendonly", "no", "--daemonize", "no",
             "--logfile", str(self.log)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + REDIS_STARTUP_SECONDS
        probe = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1,
                            socket_connect_timeout=1)
        while True:
            if self.process.poll() is not None:
                errors = self.process.stderr.read().decode() if self.process.stderr else ""
                log = self.log.read_text() if self.log.exists() else ""
                pytest.fail(f"redis-server exited with {self.process.returncode} on port "
                            f"{self.port}: {errors} {log[-2000:]}", pytrace=False)
            try:
                probe.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(f"redis-server did not answer on port {self.port} within "
                                f"{REDIS_STARTUP_SECONDS} s", pytrace=False)
                time.sleep(0.02)
        probe.close()
        return self

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a paused server cannot act on SIGTERM
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self.process.stderr:
            self.process.stderr.close()
        self.process = None

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


# -- gunicorn ------------------------------------------------------------------------------------

class Gunicorn:
    """A gunicorn started by the `start_gunicorn` fixture: `gunicorn -c gunicorn.conf.py wsgi:app`
    from the repository root, on 127.0.0.1:`port`, its output in `log_path`."""

    def __init__(self, log_path: Path, port: int, process: subprocess.Popen[bytes]) -> None:
        self.log_path = log_path
        self.port = port
        self.base = f"http://localhost:{port}"  # the host of REDIRECT_URI
        self.process = process

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


# -- app instances -----------------------------------------------------------------------------

def app_config(emu, **overrides: Any) -> dict[str, Any]:
    """Settings for one instance; instances built from the same settings share sessions.
    Not TESTING: errors must be handled as in production, not raised into the test."""
    return app_settings(emu, **{"SECRET_KEY": SECRET_KEY, **overrides})


class Balancer:
    """A round-robin load balancer in front of app instances (WSGI): each request goes to the
    next instance in turn. `served` records which instance answered each request."""

    def __init__(self, *apps: Any) -> None:
        self.apps = list(apps)
        self.served: list[int] = []
        self._turn = 0
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]):
        with self._lock:
            index = self._turn % len(self.apps)
            self._turn += 1
            self.served.append(index)
        return self.apps[index](environ, start_response)

    def replace(self, *apps: Any) -> None:
        """New instances behind the balancer (a restart or a deployment)."""
        with self._lock:
            self.apps = list(apps)
            self._turn = 0


class Browser:
    """One user's browser in front of the balancer: one cookie jar for the app (whichever
    instance answers) and one requests.Session for the emulator's pages (its SSO cookie)."""

    def __init__(self, balancer: Balancer, emu, sign_in_fn: Callable[..., Any]) -> None:
        self.balancer = balancer
        self.emu = emu
        self.client = Client(balancer)
        self.idp = requests.Session()
        self.idp.verify = str(emu.ca_bundle)
        self._sign_in_fn = sign_in_fn

    def get(self, path: str, **kwargs: Any):
        return self.client.get(path, **kwargs)

    def post(self, path: str, **kwargs: Any):
        return self.client.post(path, **kwargs)

    def start(self, next_path: str | None = None):
        return self.get("/login", query_string={"next": next_path} if next_path else None)

    def authorize(self, authorize_url: str, username: str = ADELE):
        return self._sign_in_fn(authorize_url, username, PASSWORD, session=self.idp)

    def deliver(self, result):
        """The provider's answer. A form_post arrives cross-site: no Lax session cookie on it."""
        parts = urlsplit(result.url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        if result.method.upper() == "GET":
            return self.get(target)
        saved = self.session_id()
        if saved is not None:
            self.client.delete_cookie(SESSION_COOKIE)
        response = self.post(target, data=result.data)
        deleted = any(c.startswith(f"{SESSION_COOKIE}=;")
                      for c in response.headers.getlist("Set-Cookie"))
        if saved is not None and self.session_id() is None and not deleted:
            self.client.set_cookie(SESSION_COOKIE, saved)
        return response

    def sign_in(self, username: str = ADELE, next_path: str | None = None):
        start = self.start(next_path)
        assert start.status_code == 302, start.get_data(as_text=True)
        return self.deliver(self.authorize(start.headers["Location"], username))

    def session_id(self) -> str | None:
        cookie = self.client.get_cookie(SESSION_COOKIE)
        return cookie.value if cookie is not None else None

    def tab(self) -> Browser:
        """Another tab of this browser: its own connection, the same session cookie."""
        other = Browser(self.balancer, self.emu, self._sign_in_fn)
        other.client.set_cookie(SESSION_COOKIE, self.session_id() or "")
        return other


def stored_session(app, session_id: str) -> dict[str, Any] | None:
    """The session as the store holds it right now (through the app's own session interface)."""
    interface = app.session_interface
    return interface._retrieve_session_data(interface._get_store_id(session_id))


def entry_in_store(app, session_id: str) -> dict[str, Any] | None:
    """flask_entra's entry (claims, account, csrf, times) in the stored session."""
    stored = stored_session(app, session_id)
    return None if stored is None else stored.get("flask_entra")


def change_entry_in_store(app, session_id: str, ttl: int = 3600, **changes: Any) -> None:
    """Change flask_entra's entry in the stored session, as another process would (a raw write:
    no check of an ended session, the given time to live)."""
    interface = app.session_interface
    stored = stored_session(app, session_id)
    stored["flask_entra"] = {**stored["flask_entra"], **changes}
    interface._upsert_session(timedelta(seconds=ttl),
                              interface.session_class(stored, sid=session_id),
                              interface._get_store_id(session_id))


def token_cache(app, session_id: str) -> dict[str, Any] | None:
    """The session's MSAL token cache, opened (None when there is none)."""
    cache = app.extensions["flask_entra"].tokens.load_cache(session_id)
    return None if cache is None else json.loads(cache.serialize())


def only_refresh_token(cache: dict[str, Any]) -> str:
    tokens = [entry["secret"] for entry in cache["RefreshToken"].values()]
    assert len(tokens) == 1, tokens
    return tokens[0]


def csrf_token_of(page) -> str:
    """The sign-out button's CSRF token on a signed-in page."""
    return page.get_data(as_text=True).split('name="csrf_token" value="')[1].split('"')[0]
