"""Run the emulator: two servers (http_server.py: cheroot) in threads, https (everything MSAL
and Graph clients call) and plain http on loopback (only the browser-facing pages, so a browser
shows no certificate warning). The command line's `serve` (serving.py) runs one in its process,
or N worker processes each running one (workers.py).
"""

from __future__ import annotations

import re
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

from flask import Flask

from entra_emulator.app import EmulatorConfig, create_app
from entra_emulator.context import EXTENSION_KEY
from entra_emulator.directory import Directory, load_directory
from entra_emulator.http_server import HTTPServer, listen
from entra_emulator.http_server import PortInUseError as PortInUseError  # callers import it here
from entra_emulator.keys import ensure_private_dir
from entra_emulator.serving import Addresses
from entra_emulator.state import EmulatorState
from entra_emulator.tls import TlsFiles, ensure_tls_files

# What the http port serves: the pages a browser is sent to, and their static files.
BROWSER_PATHS = re.compile(
    r"^/(static/.+"
    r"|[^/]+/oauth2/v2\.0/(authorize|logout)"
    r"|[^/]+/oauth2/logout"
    r"|[^/]+/(login|consent)"
    r"|devicelogin(/complete)?)$")
STARTUP_TIMEOUT_SECONDS = 10


class BrowserOnly:
    """WSGI middleware for the http port: browser-facing routes only, everything else 404."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[
            bytes]:
        if BROWSER_PATHS.match(environ.get("PATH_INFO", "")):
            return self.app(environ, start_response)
        body = b"Not found. This plain-http port serves the sign-in pages only; use https.\n"
        start_response("404 NOT FOUND", [("Content-Type", "text/plain; charset=utf-8"),
                                         ("Content-Length", str(len(body)))])
        return [body]


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class EmulatorServer(Addresses):
    """The emulator in-process; a context manager. Ports 0 pick free ports."""

    def __init__(self, directory: str | Path | Directory | None = None,
                 state_dir: str | Path = ".emulator", host: str = "localhost",
                 https_port: int = 0, http_port: int = 0,
                 authorization_response_iss: bool = False, reuse_port: bool = False,
                 access_log: bool = False, worker: str | None = None) -> None:
        self._directory_source = directory
        # reuse_port: other processes listen on the same ports (workers.py); access_log: a line
        # per request on stderr (the command line's).
        self._reuse_port = reuse_port
        self._access_log = access_log
        self.worker = worker   # which worker this is (workers.py): X-Emulator-Worker
        self.authorization_response_iss = authorization_response_iss   # RFC 9207, app.py
        self.state_dir = Path(state_dir)
        self.host = host
        self._requested_ports = (https_port, http_port)
        self._servers: list[HTTPServer] = []
        self._threads: list[threading.Thread] = []
        self.app: Flask | None = None
        self.tls: TlsFiles | None = None
        self.https_base = ""
        self.http_base = ""

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> EmulatorServer:
        """Returns once both ports accept connections."""
        if self._servers:
            return self
        directory = self._directory_source if isinstance(self._directory_source, Directory) \
            else load_directory(self._directory_source)
        ensure_private_dir(self.state_dir)   # keys, CA key, consents: owner-only
        self.tls = ensure_tls_files(self.state_dir, hosts=(self.host,))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.tls.server_cert, self.tls.server_key)
        https_port, http_port = self._requested_ports
        secure = self._listen(https_port, context)
        try:
            plain = self._listen(http_port, None)
        except BaseException:
            secure.server_close()
            raise
        self._servers = [secure, plain]
        self.https_base = f"https://{_url_host(self.host)}:{secure.port}"
        self.http_base = f"http://{_url_host(self.host)}:{plain.port}"
        try:
            self.app = create_app(EmulatorConfig(directory=directory, state_dir=self.state_dir,
                                                 https_base=self.https_base,
                                                 http_base=self.http_base,
                                                 authorization_response_iss=(
                                                     self.authorization_response_iss)))
        except BaseException:
            self._close_servers()
            raise
        app: Any = AccessLog(self.app, self.worker) if self._access_log else self.app
        secure.app = app
        plain.app = BrowserOnly(app)
        for server in self._servers:
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                      name=f"entra-emulator:{server.port}", daemon=True)
            thread.start()
            self._threads.append(thread)
        self._wait_until_listening()
        return self

    def _listen(self, port: int, context: ssl.SSLContext | None) -> HTTPServer:
        return listen(self.host, port, _not_ready, context, reuse_port=self._reuse_port)

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()   # kept-alive connections are closed too
        for thread in self._threads:
            thread.join(timeout=5)
        self._close_servers()
        self._threads = []
        database = getattr(self.app.extensions.get(EXTENSION_KEY), "db", None) if self.app \
            else None
        if database is not None:
            database.close_all()

    def _close_servers(self) -> None:
        for server in self._servers:
            server.server_close()
        self._servers = []

    def _wait_until_listening(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        for server in self._servers:
            address = server.server_address[:2]
            while True:
                try:
                    with socket.create_connection(address, timeout=1):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"emulator did not start listening on {address}") \
                            from None
                    time.sleep(0.01)

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    # -- what clients need ---------------------------------------------------------------------

    @property
    def state(self) -> EmulatorState:
        if self.app is None:
            raise RuntimeError("the emulator is not started")
        return self.app.extensions[EXTENSION_KEY]

    @property
    def directory(self) -> Directory:
        return self.state.directory

    @property
    def ca_bundle(self) -> str:
        return str(self._tls().ca_bundle)

    @property
    def ca_cert(self) -> str:
        return str(self._tls().ca_cert)

    @property
    def faults(self) -> Any:
        return self.state.faults

    @property
    def defects(self) -> Any:
        return self.state.defects

    @property
    def keys(self) -> Any:
        return self.state.keys

    @property
    def clock(self) -> Any:
        return self.state.clock

    def _tls(self) -> TlsFiles:
        if self.tls is None:
            raise RuntimeError("the emulator is not started")
        return self.tls


class AccessLog:
    """WSGI middleware: `"METHOD /path" status` on stderr per request, never the query string
    (it can carry id_token_hint, codes and state); with `worker`, an X-Emulator-Worker header
    naming the worker that answered."""

    def __init__(self, app: Flask, worker: str | None = None) -> None:
        self.app = app
        self.worker = worker

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[
            bytes]:
        def logging_start_response(status: str, headers: Any, *args: Any) -> Any:
            print(f'{environ.get("REMOTE_ADDR", "-")} "{environ.get("REQUEST_METHOD")} '
                  f'{environ.get("PATH_INFO", "")}" {status.split(" ", 1)[0]}',
                  file=sys.stderr, flush=True)
            if self.worker is not None:
                headers = [*headers, ("X-Emulator-Worker", self.worker)]
            return start_response(status, headers, *args)
        return self.app(environ, logging_start_response)


def _not_ready(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    start_response("503 SERVICE UNAVAILABLE", [("Content-Type", "text/plain")])
    return [b"starting\n"]
