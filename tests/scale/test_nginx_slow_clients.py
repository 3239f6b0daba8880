"""The production setup that holds: deploy/nginx.conf in front of the real gunicorn
(gunicorn.conf.py, 1 worker, gthread, 2 threads). Clients that send part of a request's head and
never finish it take gunicorn's threads for as long as they stay connected (gthread has no
header-read timeout); behind nginx they wait on nginx, which cuts them off after
client_header_timeout, and gunicorn goes on answering. The control half sends the same clients to
gunicorn directly and sees it stop answering.

nginx is Debian's (`make test` installs it); missing, it is installed here when running as root,
else the test fails with the reason. It runs from a temporary prefix folder, with a copy of
deploy/nginx.conf whose `listen` and upstream `server` lines name free loopback ports.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import requests

from tests.scale.scale_support import ROOT, Gunicorn, free_port

NGINX_CONF = ROOT / "deploy" / "nginx.conf"
# The two lines of deploy/nginx.conf that a deployment (and this test) adapts.
LISTEN_LINE = "listen 80;"
UPSTREAM_LINE = "server 127.0.0.1:5000;"
# deploy/nginx.conf's client_header_timeout, in seconds.
CLIENT_HEADER_TIMEOUT = int(re.search(r"^\s*client_header_timeout (\d+)s;", NGINX_CONF.read_text(),
                                      re.MULTILINE).group(1))
NGINX_STARTUP_SECONDS = 10
INSTALL_SECONDS = 100

SLOW_CLIENTS = 30
ANSWER_WITHIN = 3.0      # seconds gunicorn alone gets to answer /healthz (the control)
# Through nginx a /healthz answers in milliseconds; the bound is generous so that a busy machine
# (the whole suite on 2 cores) does not fail it, and still far from "no answer at all".
NGINX_ANSWER_WITHIN = 6.0
WATCH_SECONDS = 5.0      # how long /healthz is watched through nginx
MAX_PROBES = 40          # at most this many /healthz requests in WATCH_SECONDS
RECOVER_WITHIN = 10.0    # seconds gunicorn may take to answer again once the slow clients leave


# -- nginx ---------------------------------------------------------------------------------------

def find_nginx() -> str | None:
    return shutil.which("nginx") or next(
        (path for path in ("/usr/sbin/nginx",) if os.access(path, os.X_OK)), None)


@pytest.fixture(scope="module")
def nginx_binary() -> str:
    """nginx's path; installed from Debian's packages when missing and running as root."""
    found = find_nginx()
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.fail("nginx is not installed, and this test needs a real one in front of gunicorn. "
                    "`make test` installs it (Debian: apt-get install nginx); installing it here "
                    "needs root and apt-get.", pytrace=False)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    deadline = time.monotonic() + INSTALL_SECONDS
    outputs = []
    # The package lists may be missing or stale on a fresh machine: update once if needed.
    for command in (["apt-get", "install", "-y", "-qq", "nginx"], ["apt-get", "update", "-qq"],
                    ["apt-get", "install", "-y", "-qq", "nginx"]):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            done = subprocess.run(command, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                                  text=True, timeout=left)
        except subprocess.TimeoutExpired:
            outputs.append(f"{' '.join(command)}: no answer within {INSTALL_SECONDS} s")
            break
        outputs.append(f"{' '.join(command)} -> {done.returncode}: {done.stderr[-1000:]}")
        if command[1] == "install" and done.returncode == 0:
            break
    found = find_nginx()
    if found is None:
        pytest.fail("nginx is not installed and installing it failed:\n" + "\n".join(outputs),
                    pytrace=False)
    return found


def render_config(listen_port: int, upstream_port: int) -> str:
    """deploy/nginx.conf with its two adaptable lines (directives, not comments) naming loopback
    ports."""
    text = NGINX_CONF.read_text()
    for line, replacement in ((LISTEN_LINE, f"listen 127.0.0.1:{listen_port};"),
                              (UPSTREAM_LINE, f"server 127.0.0.1:{upstream_port};")):
        text, found = re.subn(rf"^(\s*){re.escape(line)}", rf"\g<1>{replacement}", text,
                              flags=re.MULTILINE)
        assert found == 1, f"deploy/nginx.conf must hold the line {line!r} exactly once"
    return text


class Nginx:
    """nginx running deploy/nginx.conf in the foreground from a temporary prefix folder."""

    def __init__(self, binary: str, upstream_port: int) -> None:
        self.binary = binary
        self.port = free_port()
        config = render_config(self.port, upstream_port)
        # World-readable: started as root, nginx's workers run as www-data (the `user` line).
        self.prefix = Path(tempfile.mkdtemp(prefix="nginx-test-"))
        self.prefix.chmod(0o755)
        self.conf = self.prefix / "nginx.conf"
        self.conf.write_text(config)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self, *extra: str) -> list[str]:
        return [self.binary, "-p", f"{self.prefix}/", "-c", str(self.conf),
                "-e", str(self.prefix / "error.log"), *extra]

    def logs(self) -> str:
        parts = []
        for name in ("error.log", "stderr.log"):
            path = self.prefix / name
            if path.exists():
                parts.append(f"{name}: {path.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)

    def access_log(self) -> str:
        path = self.prefix / "access.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> Nginx:
        check = subprocess.run(self.command("-t"), capture_output=True, text=True, timeout=30,
                               stdin=subprocess.DEVNULL)
        if check.returncode != 0:
            pytest.fail(f"nginx -t refused deploy/nginx.conf: {check.stderr}", pytrace=False)
        with (self.prefix / "stderr.log").open("wb") as stderr:
            self.process = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                            stdout=stderr, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        deadline = time.monotonic() + NGINX_STARTUP_SECONDS
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"nginx exited with {self.process.returncode}: {self.logs()}",
                            pytrace=False)
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.base}/healthz", timeout=2).status_code == 200:
                    return self
            if time.monotonic() > deadline:
                pytest.fail(f"nginx did not pass /healthz on within {NGINX_STARTUP_SECONDS} s: "
                            f"{self.logs()}", pytrace=False)
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: fast shutdown, the workers with it
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)  # its own group: its workers
                self.process.wait(timeout=10)
        self.process = None
        shutil.rmtree(self.prefix, ignore_errors=True)


@pytest.fixture
def start_nginx(nginx_binary: str):
    started: list[Nginx] = []

    def start(upstream: Gunicorn) -> Nginx:
        server = Nginx(nginx_binary, upstream.port)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


# -- slow clients --------------------------------------------------------------------------------

class SlowClients:
    """`count` connections that each send a request line and part of the headers, then only one
    more header line at each `trickle()` (a slowloris): the head is never finished."""

    HEAD = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nUser-Agent: slow-client\r\n"

    def __init__(self, port: int, count: int) -> None:
        self.opened_at = time.monotonic()
        self.sockets: list[socket.socket] = []
        self.closed: set[int] = set()   # indexes of the connections the server ended
        try:
            for _ in range(count):
                sock = socket.create_connection(("127.0.0.1", port), timeout=2)
                self.sockets.append(sock)
                sock.sendall(self.HEAD)
                sock.setblocking(False)
        except BaseException:
            self.close()
            raise

    def trickle(self) -> None:
        for index, sock in enumerate(self.sockets):
            if index in self.closed:
                continue
            try:
                sock.sendall(b"X-Slow: 1\r\n")
            except OSError:
                self.closed.add(index)

    def open_count(self) -> int:
        """How many the server has not ended yet (what it sent before ending one is ignored)."""
        for index, sock in enumerate(self.sockets):
            if index in self.closed:
                continue
            # poll, not select: a long test run may hold descriptors past select()'s 1024.
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            if poller.poll(0):
                try:
                    while sock.recv(65536):   # e.g. a 408 page, then the end
                        pass
                    self.closed.add(index)
                except BlockingIOError:     # sent something, not ended yet
                    pass
                except OSError:                 # reset (nginx: reset_timedout_connection)
                    self.closed.add(index)
        return len(self.sockets) - len(self.closed)

    def close(self) -> None:
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.close()


def healthz_time(base: str, timeout: float) -> tuple[float, int | str]:
    """(seconds taken, status code, or the error's name when there was no answer in time)."""
    began = time.monotonic()
    try:
        status: int | str = requests.get(f"{base}/healthz", timeout=timeout).status_code
    except requests.RequestException as error:
        status = type(error).__name__
    return time.monotonic() - began, status


# -- tests ---------------------------------------------------------------------------------------

@pytest.mark.timeout(120)
def test_nginx_keeps_gunicorn_answering_while_slow_clients_hold_connections(
        start_gunicorn, start_nginx):
    server = start_gunicorn(TRUSTED_PROXY_HOPS="1", GUNICORN_GRACEFUL_TIMEOUT="5")
    direct = f"http://127.0.0.1:{server.port}"
    nginx = start_nginx(server)

    # Behind nginx: the slow clients wait on nginx, /healthz keeps answering at once.
    slow = SlowClients(nginx.port, SLOW_CLIENTS)
    try:
        probes: list[tuple[float, int | str]] = []
        watch_until = time.monotonic() + WATCH_SECONDS
        while time.monotonic() < watch_until and len(probes) < MAX_PROBES:
            slow.trickle()
            probes.append(healthz_time(nginx.base, NGINX_ANSWER_WITHIN))
            time.sleep(0.2)
        still_open = slow.open_count()
        slowest = max(seconds for seconds, _ in probes)
        print(f"\nthrough nginx, {SLOW_CLIENTS} slow clients: {len(probes)} /healthz, slowest "
              f"{slowest * 1000:.0f} ms, statuses {sorted({str(s) for _, s in probes})}")
        assert all(status == 200 for _, status in probes), (probes, nginx.logs())
        assert slowest < NGINX_ANSWER_WITHIN, probes
        # The slow clients were really there all along: nginx had not ended them yet.
        assert still_open == SLOW_CLIENTS, f"only {still_open} slow clients were still connected"

        # ...and nginx ends them after client_header_timeout, though they keep sending a line
        # a second: the timeout bounds the whole head, not each read.
        end_by = slow.opened_at + CLIENT_HEADER_TIMEOUT + 5
        while slow.open_count() and time.monotonic() < end_by:
            slow.trickle()
            time.sleep(0.5)
        ended_after = time.monotonic() - slow.opened_at
        print(f"nginx ended the slow clients {ended_after:.1f} s after they connected")
        assert slow.open_count() == 0, (
            f"{slow.open_count()} slow clients still connected to nginx after {ended_after:.0f} s")
    finally:
        slow.close()

    # Control: the same slow clients sent to gunicorn directly take both of its threads, and
    # /healthz (queued behind them) gets no answer.
    assert healthz_time(direct, ANSWER_WITHIN)[1] == 200
    slow = SlowClients(server.port, SLOW_CLIENTS)
    try:
        slow.trickle()
        seconds, status = healthz_time(direct, ANSWER_WITHIN)
        print(f"directly, {SLOW_CLIENTS} slow clients: /healthz gave {status} after "
              f"{seconds:.1f} s")
        assert status == "ReadTimeout", (
            f"gunicorn answered /healthz ({status}) in {seconds:.1f} s despite the slow clients: "
            "the control no longer shows what nginx is for")
    finally:
        slow.close()

    # Once they leave, gunicorn answers again.
    recovered_by = time.monotonic() + RECOVER_WITHIN
    while True:
        seconds, status = healthz_time(direct, ANSWER_WITHIN)
        if status == 200:
            break
        assert time.monotonic() < recovered_by, f"gunicorn still not answering: {server.log()}"
        time.sleep(0.2)


@pytest.mark.timeout(120)
def test_nginx_sets_forwarded_headers_and_logs_no_query_string(start_gunicorn, start_nginx):
    server = start_gunicorn(TRUSTED_PROXY_HOPS="1")
    nginx = start_nginx(server)

    # A client's own X-Forwarded-* never reach the app as the last entry: nginx sets each one.
    # Believed, these would make the request https (HSTS) on host 127.0.0.1 (a redirect to
    # REDIRECT_URI's host, localhost); without nginx they are believed (test_scale_gunicorn.py).
    response = requests.get(
        f"http://localhost:{nginx.port}/", allow_redirects=False, timeout=10,
        headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "127.0.0.1",
                 "X-Forwarded-Port": "1"})
    assert response.status_code == 200, response.headers
    assert "Strict-Transport-Security" not in response.headers

    # Too large a body is refused by nginx, before gunicorn.
    response = requests.post(f"http://localhost:{nginx.port}/backchannel-logout",
                             data={"logout_token": "x" * (65 * 1024)}, timeout=10)
    assert response.status_code == 413

    # nginx's access log has the path, not the query string that carries a callback's code.
    requests.get(f"{nginx.base}/healthz?code=SECRET-CODE-VALUE&state=SECRET-STATE-VALUE",
                 headers={"User-Agent": "query-string-check"}, timeout=10)
    deadline = time.monotonic() + 5
    while "query-string-check" not in nginx.access_log() and time.monotonic() < deadline:
        time.sleep(0.05)
    line = next((line for line in nginx.access_log().splitlines()
                 if "query-string-check" in line), "")
    assert '"GET /healthz HTTP/1.1" 200' in line, nginx.access_log()
    assert "SECRET" not in nginx.access_log() and "code=" not in nginx.access_log()
