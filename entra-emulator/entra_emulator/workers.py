"""`entra-emulator serve --workers N`: N worker processes on the same two ports, sharing one
state folder.

The parent prepares what every worker needs before any starts (the TLS files, the state
database with its signing key, the directory checked), then starts N copies of
`python -m entra_emulator worker ...`. Each worker is the in-process server (server.py:
cheroot threads over the Flask app) with SO_REUSEPORT on both ports, so the kernel spreads
new connections over the workers; everything a request needs from an earlier one is in the
state database (db.py), so any request may land on any worker. The parent then only watches:
a worker that dies is started again; SIGTERM or Ctrl-C stops them all.

Why processes: a refresh grant costs about 3 ms of CPU (two RSA signatures among it) in one
interpreter behind the GIL; N processes use N cores (bench/README.md).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from entra_emulator.db import StateDB
from entra_emulator.directory import Directory, load_directory
from entra_emulator.http_server import bind_address
from entra_emulator.keys import KeyStore, ensure_private_dir
from entra_emulator.serving import Addresses
from entra_emulator.tls import ensure_tls_files

READY_LINE = "entra-emulator worker ready"
WORKER_START_SECONDS = 30
STOP_SECONDS = 10
# A worker that keeps dying is not restarted forever: the emulator stops instead.
MAX_RESTARTS_PER_MINUTE = 5


@dataclass
class Endpoints(Addresses):
    """The worker pool's addresses, known before any worker starts."""

    directory: Directory
    https_base: str
    http_base: str
    ca_bundle: str


class WorkerPool:
    """N worker processes on fixed ports (0s are resolved to free ports first)."""

    def __init__(self, workers: int, directory: str | Path | None, state_dir: str | Path,
                 host: str, https_port: int, http_port: int,
                 authorization_response_iss: bool = False) -> None:
        if workers < 1:
            raise ValueError("--workers must be 1 or more")
        self.count = workers
        self.directory_file = directory
        self.state_dir = Path(state_dir)
        self.host = host
        self.authorization_response_iss = authorization_response_iss
        self._placeholders: list[socket.socket] = []
        self.https_port = self._reserve(https_port)
        self.http_port = self._reserve(http_port)
        self.processes: list[subprocess.Popen[str] | None] = [None] * workers
        self._restarts: list[float] = []

    def prepare(self) -> Endpoints:
        """Everything the workers share, made once, before any starts (so no two workers
        race to create the CA or the first signing key)."""
        directory = load_directory(self.directory_file)   # DirectoryError: named by the CLI
        ensure_private_dir(self.state_dir)
        tls = ensure_tls_files(self.state_dir, hosts=(self.host,))
        KeyStore(db=StateDB.open(self.state_dir))
        host = f"[{self.host}]" if ":" in self.host else self.host
        return Endpoints(directory=directory, https_base=f"https://{host}:{self.https_port}",
                         http_base=f"http://{host}:{self.http_port}",
                         ca_bundle=str(tls.ca_bundle))

    def start(self) -> None:
        try:
            for index in range(self.count):
                self.processes[index] = self._spawn(index)
            for index in range(self.count):
                self._wait_ready(index)
        except BaseException:
            self.stop()
            raise
        finally:
            for placeholder in self._placeholders:   # the workers listen now
                placeholder.close()
            self._placeholders = []

    def watch(self, stop: threading.Event) -> None:
        """Until `stop` is set: start again any worker that died."""
        while not stop.wait(0.5):
            for index, process in enumerate(self.processes):
                if process is not None and process.poll() is not None:
                    self._restart(index, process.returncode)

    def stop(self) -> None:
        running = [p for p in self.processes if p is not None and p.poll() is None]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        for process in running:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for process in self.processes:
            if process is not None and process.stdout is not None:
                process.stdout.close()

    # -- one worker ----------------------------------------------------------------------------

    def _spawn(self, index: int) -> subprocess.Popen[str]:
        command = [sys.executable, "-m", "entra_emulator", "worker", "--index", str(index),
                   "--state", str(self.state_dir), "--host", self.host,
                   "--https-port", str(self.https_port), "--http-port", str(self.http_port)]
        if self.directory_file is not None:
            command += ["--directory", str(self.directory_file)]
        if self.authorization_response_iss:
            command.append("--authorization-response-iss")
        # stdout says when the worker listens; its log goes to our stderr.
        return subprocess.Popen(command, stdout=subprocess.PIPE, text=True,  # noqa: S603
                                stdin=subprocess.DEVNULL)

    def _wait_ready(self, index: int) -> None:
        process = self.processes[index]
        assert process is not None and process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            deadline = time.monotonic() + WORKER_START_SECONDS
            while (left := deadline - time.monotonic()) > 0:
                if selector.select(timeout=left):
                    line = process.stdout.readline()
                    if line.startswith(READY_LINE):
                        return
                    if not line:   # the worker exited; it said why on stderr
                        break
        raise RuntimeError(f"worker {index} did not start (exit status {process.poll()}); "
                           "see its messages above")

    def _restart(self, index: int, status: int | None) -> None:
        now = time.monotonic()
        self._restarts = [t for t in self._restarts if now - t < 60] + [now]
        if len(self._restarts) > MAX_RESTARTS_PER_MINUTE:
            raise RuntimeError(f"workers keep exiting (worker {index}: status {status}); "
                               "stopping")
        print(f"worker {index} exited (status {status}); starting it again", file=sys.stderr,
              flush=True)
        old = self.processes[index]
        if old is not None and old.stdout is not None:
            old.stdout.close()
        self.processes[index] = self._spawn(index)
        self._wait_ready(index)

    def _reserve(self, port: int) -> int:
        """A free port for 0, held (bound, not listening, SO_REUSEPORT) until the workers
        listen on it, so nothing else takes it meanwhile."""
        if port != 0:
            return port
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        placeholder = socket.socket(family, socket.SOCK_STREAM)
        placeholder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        placeholder.bind((bind_address(self.host), 0))
        self._placeholders.append(placeholder)
        return placeholder.getsockname()[1]


def run_worker(index: int, directory: str | None, state_dir: str, host: str, https_port: int,
               http_port: int, authorization_response_iss: bool) -> None:
    """One worker: the in-process server on the shared ports until SIGTERM."""
    from entra_emulator.server import EmulatorServer

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())   # Ctrl-C reaches the whole group
    emulator = EmulatorServer(directory=directory, state_dir=state_dir, host=host,
                              https_port=https_port, http_port=http_port,
                              authorization_response_iss=authorization_response_iss,
                              reuse_port=True, access_log=True, worker=str(index)).start()
    parent = os.getppid()
    try:
        print(f"{READY_LINE} {index} pid {os.getpid()}", flush=True)
        # A parent killed outright (SIGKILL) stops no worker: each leaves once it is orphaned,
        # rather than holding the ports.
        while not stop.wait(0.5) and os.getppid() == parent:
            pass
    finally:
        emulator.stop()
