"""Benchmark of the web app against baselines measured in the same run (`make bench`).

1. Signed-in page throughput: requests/s of the signed-in home page `/` (a real session, signed in
   through the emulator's sign-in pages) as a ratio of a bare Flask "hello" page. Target: ratio
   >= 0.8. Also served: the same page (its templates, the same values) rendered by a bare Flask
   app, which splits the difference into what rendering the page costs any Flask app and what
   being signed in costs it. All three run under gunicorn with the same settings, driven by the
   same keep-alive http.client loop, in interleaved rounds.
2. Cost of a cached access token: `webapp.tokens.get_access_token()`, each call in a new request
   context of a signed-in session (as every page that calls Graph makes it), against a session
   read in the same kind of context. The emulator counts its token-endpoint calls: there must be
   none while the token is valid. Target: <= 0.3 ms per call.

Everything runs on loopback against the real emulator (in this process, over real TLS), bounded
in request count and time, and stops by itself. Exit status 1 when a target is missed, unless
--no-fail. `python bench/bench_webapp.py --help` lists the knobs.

Gunicorn imports this module too (`served_app`), so module-level imports stay light.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import logging
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench_support import (  # bench/, beside this file
    REPO,
    child_pids,
    load_sign_in_driver,
    machine_busy_seconds,
    process_cpu_seconds,
    verdict,
)

PAGE_RATIO_TARGET = 0.8
TOKEN_MS_TARGET = 0.3
USERNAME = "AdeleV@contoso.onmicrosoft.com"
DISPLAY_NAME = b"Adele Vance"
PASSWORD = "Passw0rd!"
SECRET_KEY = "bench-secret-key-0123456789abcdef"
CONFIG_ENV = "BENCH_WEBAPP_CONFIG"
TOKEN_PATH_SUFFIX = "/oauth2/v2.0/token"
SERVER_START_SECONDS = 30
ROUND_TIME_LIMIT_SECONDS = 20
OTHER_LOAD_WARNING_CORES = 0.3
# The query response mode keeps the sign-in driver simple (form_post's binding cookie is Secure,
# which http.cookiejar never sends over http); MSAL warns about it on every sign-in.
MSAL_QUERY_MODE_WARNING = "response_mode='form_post' is recommended"


# ------------------------------------------------------------------------------------------------
# The two apps gunicorn serves
# ------------------------------------------------------------------------------------------------

def served_app(kind: str) -> Any:
    """Gunicorn's app factory: `bench_webapp:served_app('hello')`, `...('same-page')` or
    `...('webapp')`."""
    from flask import Flask

    if kind == "hello":
        app = Flask("hello")
        app.add_url_rule("/", "hello", lambda: "hello")
        return app
    if kind == "same-page":
        return same_page_app()
    from webapp import create_app

    return create_app(json.loads(os.environ[CONFIG_ENV]))


def same_page_app() -> Any:
    """The signed-in home page's own templates rendered by a bare Flask app, with the values the
    web app gives them (the signed-in user's name, the links, a CSRF token), and nothing else: no
    session, no sign-in checks, no security headers. What the page costs any Flask app, so the
    web app's ratio to it is what being signed in costs the page."""
    import secrets

    from flask import Flask, render_template

    from webapp import PageLinks

    app = Flask("same_page", template_folder=str(REPO / "webapp" / "templates"))
    context = {
        "user": {"name": DISPLAY_NAME.decode(), "username": USERNAME},
        "links": PageLinks(home="/", graph="/graph", claims="/claims", sign_in="/login",
                           sign_out="/logout", stylesheet="/static/style.css"),
        "signed_in": True, "csrf_token": secrets.token_urlsafe(32), "signed_out": False,
    }
    app.add_url_rule("/", "home", lambda: render_template("index.html", **context))
    return app


def webapp_config(emu: Any, session_dir: Path) -> dict[str, Any]:
    registration = next(a for a in emu.directory.applications if a.password_credentials)
    return {
        "CLIENT_ID": registration.app_id,
        "CLIENT_SECRET": registration.password_credentials[0].secret_text,
        "AUTHORITY": emu.authority,
        "ENDPOINT": emu.graph_me_url,
        "CA_BUNDLE": str(emu.ca_bundle),
        "SECRET_KEY": SECRET_KEY,
        "SESSION_FILE_DIR": str(session_dir),
        "REDIRECT_URI": registration.redirect_uris[0],
        "RESPONSE_MODE": "query",
    }


# ------------------------------------------------------------------------------------------------
# The emulator, with a count of its token-endpoint calls
# ------------------------------------------------------------------------------------------------

class TokenEndpointCounter:
    """WSGI middleware on the emulator's app: counts every request to a token endpoint."""

    def __init__(self, wsgi_app: Callable[..., Any]) -> None:
        self.wsgi_app = wsgi_app
        self.count = 0
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ.get("PATH_INFO", "").endswith(TOKEN_PATH_SUFFIX):
            with self._lock:
                self.count += 1
        return self.wsgi_app(environ, start_response)


# ------------------------------------------------------------------------------------------------
# 1. Page throughput under gunicorn
# ------------------------------------------------------------------------------------------------

@dataclass
class ServerSettings:
    worker_class: str
    workers: int
    threads: int

    def describe(self) -> str:
        threads = f" x {self.threads} threads" if self.worker_class == "gthread" else ""
        return f"gunicorn {self.worker_class}, {self.workers} worker(s){threads}"


class GunicornServer:
    """One gunicorn on a loopback socket bound here (no port race), stopped by its own pid."""

    def __init__(self, kind: str, settings: ServerSettings, env: dict[str, str],
                 log_path: Path) -> None:
        self.kind = kind
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port = self.listener.getsockname()[1]
        self.log_path = log_path
        fd = self.listener.fileno()
        command = [sys.executable, "-m", "gunicorn", "--bind", f"fd://{fd}",
                   "--worker-class", settings.worker_class, "--workers", str(settings.workers),
                   "--threads", str(settings.threads), "--keep-alive", "30",
                   "--log-level", "warning", "--pythonpath", str(Path(__file__).parent),
                   f"bench_webapp:served_app('{kind}')"]
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(command, pass_fds=(fd,), env=env, cwd=log_path.parent,
                                        stdout=self._log, stderr=subprocess.STDOUT)

    @property
    def host(self) -> str:
        # The web app sends 127.0.0.1 to REDIRECT_URI's host (localhost), so ask for that host.
        return f"localhost:{self.port}"

    def wait_until_ready(self, path: str) -> None:
        deadline = time.monotonic() + SERVER_START_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn ({self.kind}) exited:\n{self.log_tail()}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                status, _ = fetch(self.port, self.host, path)
                if status == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"gunicorn ({self.kind}) did not answer {path} in "
                           f"{SERVER_START_SECONDS} s:\n{self.log_tail()}")

    def cpu_seconds(self) -> float:
        """CPU time used so far by gunicorn's master and workers (Linux /proc)."""
        return sum(process_cpu_seconds(pid) for pid in (self.process.pid,
                                                        *child_pids(self.process.pid)))

    def log_tail(self) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.listener.close()
        self._log.close()


def fetch(port: int, host: str, path: str, cookie: str = "") -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {"Host": host, **({"Cookie": cookie} if cookie else {})}
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def sign_in_over_http(server: GunicornServer, browser_sign_in: Callable[..., Any]) -> str:
    """Sign in to the served web app as a browser does; returns its Cookie header."""
    import requests

    origin = f"http://{server.host}"
    browser = requests.Session()
    response = browser.get(f"{origin}/login", allow_redirects=False, timeout=10)
    if response.status_code != 302:
        raise RuntimeError(f"/login answered {response.status_code}: {response.text[:300]}")
    result = browser_sign_in(response.headers["Location"], USERNAME, PASSWORD,
                             session=requests.Session())
    # The provider sends the browser to REDIRECT_URI (port 5000); this server listens elsewhere.
    callback = urlsplit(result.url)
    response = browser.get(f"{origin}{callback.path}?{callback.query}", allow_redirects=False,
                           timeout=10)
    if response.status_code != 303:
        raise RuntimeError(f"the callback answered {response.status_code}: "
                           f"{response.text[:300]}")
    session_id = browser.cookies.get("session")
    if not session_id:
        raise RuntimeError("the callback set no session cookie")
    return f"session={session_id}"


@dataclass
class Round:
    requests: int
    seconds: float
    server_cpu_seconds: float = 0.0
    # What the rest of the machine used meanwhile (not the server, not this process), in cores:
    # another process's load shows here rather than as an unexplained slow round.
    others_cores: float = 0.0

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_us_per_request(self) -> float:
        return self.server_cpu_seconds / self.requests * 1e6


def drive(port: int, host: str, path: str, cookie: str, marker: bytes, total: int,
          clients: int) -> Round:
    """`total` GETs over `clients` keep-alive connections, each answer checked (200 + marker).
    Stops after ROUND_TIME_LIMIT_SECONDS whatever the count."""
    remaining = [total]
    lock = threading.Lock()
    failures: list[str] = []
    done = [0] * clients
    start = threading.Barrier(clients + 1)
    deadline = [0.0]
    headers = {"Host": host, **({"Cookie": cookie} if cookie else {})}

    def take() -> bool:
        with lock:
            if remaining[0] <= 0:
                return False
            remaining[0] -= 1
            return True

    def client(index: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        start.wait()
        try:
            while take() and time.monotonic() < deadline[0]:
                connection.request("GET", path, headers=headers)
                response = connection.getresponse()
                body = response.read()
                if response.status != 200 or marker not in body:
                    failures.append(f"{response.status} {body[:200]!r}")
                    return
                done[index] += 1
        except (OSError, http.client.HTTPException) as exc:
            failures.append(repr(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    deadline[0] = time.monotonic() + ROUND_TIME_LIMIT_SECONDS
    began = time.perf_counter()
    start.wait()
    for thread in threads:
        thread.join(ROUND_TIME_LIMIT_SECONDS + 15)
    elapsed = time.perf_counter() - began
    if failures:
        raise RuntimeError(f"GET {path} failed: {failures[0]}")
    return Round(sum(done), elapsed)


@dataclass
class PageResult:
    hello: list[Round]
    same_page: list[Round]
    webapp: list[Round]
    token_calls: int

    @staticmethod
    def median_rate(rounds: list[Round]) -> float:
        return statistics.median(r.rate for r in rounds)

    @staticmethod
    def median_others(rounds: list[Round]) -> float:
        return statistics.median(r.others_cores for r in rounds)

    @staticmethod
    def median_cpu(rounds: list[Round]) -> float:
        return statistics.median(r.cpu_us_per_request for r in rounds)

    @property
    def ratio(self) -> float:
        return self.median_rate(self.webapp) / self.median_rate(self.hello)

    @property
    def ratio_to_same_page(self) -> float:
        return self.median_rate(self.webapp) / self.median_rate(self.same_page)

    @property
    def same_page_ratio(self) -> float:
        return self.median_rate(self.same_page) / self.median_rate(self.hello)


def bench_pages(emu: Any, counter: TokenEndpointCounter, browser_sign_in: Callable[..., Any],
                args: argparse.Namespace, workdir: Path) -> PageResult:
    settings = ServerSettings(args.worker_class, args.workers, args.threads)
    env = {**os.environ, CONFIG_ENV: json.dumps(webapp_config(emu, workdir / "sessions-gunicorn")),
           "PYTHONWARNINGS": f"ignore:{MSAL_QUERY_MODE_WARNING}:UserWarning"}
    servers: dict[str, GunicornServer] = {}
    try:
        for kind in ("hello", "same-page", "webapp"):
            servers[kind] = GunicornServer(kind, settings, env, workdir / f"gunicorn-{kind}.log")
        for kind, server in servers.items():
            server.wait_until_ready("/healthz" if kind == "webapp" else "/")
        cookie = sign_in_over_http(servers["webapp"], browser_sign_in)
        check_same_page(servers["webapp"], servers["same-page"], cookie)

        targets = {"hello": b"hello", "same-page": DISPLAY_NAME, "webapp": DISPLAY_NAME}
        for kind, marker in targets.items():  # warm-up: imports, caches, pools
            server = servers[kind]
            drive(server.port, server.host, "/", cookie, marker, args.warmup, args.clients)
        calls_before = counter.count
        rounds: dict[str, list[Round]] = {kind: [] for kind in targets}
        for _ in range(args.rounds):  # interleaved, so drift in the machine hits all alike
            for kind, marker in targets.items():
                server = servers[kind]
                cpu_before, machine_before = server.cpu_seconds(), machine_busy_seconds()
                own_before = time.process_time()
                result = drive(server.port, server.host, "/", cookie, marker, args.requests,
                               args.clients)
                result.server_cpu_seconds = server.cpu_seconds() - cpu_before
                others = (machine_busy_seconds() - machine_before - result.server_cpu_seconds
                          - (time.process_time() - own_before))
                result.others_cores = max(0.0, others / result.seconds)
                rounds[kind].append(result)
        return PageResult(rounds["hello"], rounds["same-page"], rounds["webapp"],
                          counter.count - calls_before)
    finally:
        for server in servers.values():
            server.stop()


def check_same_page(webapp: GunicornServer, same_page: GunicornServer, cookie: str) -> None:
    """The bare app must serve the very page the web app serves (but for the CSRF token)."""
    pages = []
    for server in (webapp, same_page):
        status, body = fetch(server.port, server.host, "/", cookie)
        if status != 200 or DISPLAY_NAME not in body:
            raise RuntimeError(f"{server.kind}: the signed-in home page does not greet the user "
                               f"({status})")
        pages.append(re.sub(rb'name="csrf_token" value="[^"]*"', b"", body))
    if pages[0] != pages[1]:
        raise RuntimeError("the bare Flask app's page differs from the web app's: "
                           "same_page_app() no longer renders what the web app renders")


# ------------------------------------------------------------------------------------------------
# 2. Cached access token, in process
# ------------------------------------------------------------------------------------------------

@dataclass
class TokenResult:
    session_read_ms: float
    token_ms: float
    sign_in_token_calls: int
    token_calls_while_valid: int
    seconds_left: float

    @property
    def net_ms(self) -> float:
        return self.token_ms - self.session_read_ms


def sign_in_test_client(app: Any, browser_sign_in: Callable[..., Any]) -> str:
    import requests

    client = app.test_client()
    response = client.get("/login")
    if response.status_code != 302:
        raise RuntimeError(f"/login answered {response.status_code}")
    result = browser_sign_in(response.headers["Location"], USERNAME, PASSWORD,
                             session=requests.Session())
    callback = urlsplit(result.url)
    response = client.get(f"{callback.path}?{callback.query}")
    if response.status_code != 303:
        raise RuntimeError(f"the callback answered {response.status_code}: "
                           f"{response.get_data(as_text=True)[:300]}")
    cookie = client.get_cookie("session")
    if cookie is None:
        raise RuntimeError("the callback set no session cookie")
    return f"session={cookie.value}"


def ms_per_request(app: Any, headers: dict[str, str], work: Callable[[], Any], calls: int,
                   repeats: int) -> float:
    """Median over `repeats` of the mean time of `work()` plus the end of its request (teardown
    handlers run there), each call in a new request context of the session. Loading the stored
    session happens when the context is pushed, outside the timed part: every request pays it,
    whatever the page."""
    samples = []
    for _ in range(repeats):
        elapsed = 0.0
        for _ in range(calls):
            context = app.test_request_context("/", headers=headers)
            context.push()
            began = time.perf_counter()
            try:
                work()
            finally:
                context.pop()
            elapsed += time.perf_counter() - began
        samples.append(elapsed / calls * 1000)
    return statistics.median(samples)


def bench_token(emu: Any, counter: TokenEndpointCounter, browser_sign_in: Callable[..., Any],
                args: argparse.Namespace, workdir: Path) -> TokenResult:
    import jwt
    from flask import session

    from webapp import auth, create_app, tokens

    app = create_app(webapp_config(emu, workdir / "sessions-in-process"))
    before_sign_in = counter.count
    headers = {"Cookie": sign_in_test_client(app, browser_sign_in)}
    sign_in_calls = counter.count - before_sign_in
    if sign_in_calls < 1:
        raise RuntimeError("the emulator counted no token call for the sign-in: the counter "
                           "does not see the token endpoint")

    calls_before = counter.count
    with app.test_request_context("/", headers=headers):
        if auth.current_user() is None:
            raise RuntimeError("the request context has no signed-in session")
        token = tokens.get_access_token()
    # The emulator's access tokens are JWTs; only their lifetime is read here.
    seconds_left = jwt.decode(token, options={"verify_signature": False})["exp"] - time.time()
    token_ms = ms_per_request(app, headers, tokens.get_access_token, args.calls, args.repeats)
    session_read_ms = ms_per_request(app, headers, lambda: session.get(auth.USER), args.calls,
                                     args.repeats)
    with app.test_request_context("/", headers=headers):
        if tokens.get_access_token() != token:
            raise RuntimeError("get_access_token() returned another token: it was not cached")
    return TokenResult(session_read_ms, token_ms, sign_in_calls, counter.count - calls_before,
                       seconds_left)


# ------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------

def report(pages: PageResult, token: TokenResult, args: argparse.Namespace) -> list[str]:
    """Print the tables; return the targets missed."""
    missed = []
    settings = ServerSettings(args.worker_class, args.workers, args.threads)
    print(f"\n1. Page throughput: {settings.describe()}; {args.clients} keep-alive "
          f"http.client connection(s); {args.requests} requests x {args.rounds} rounds "
          f"after {args.warmup} warm-up")
    print(f"   {'page':<28}{'req/s (median)':>15}{'server CPU us/req':>19}"
          f"{'others (cores)':>16}   req/s by round")
    rows = [("bare Flask 'hello' /", pages.hello),
            ("bare Flask, same page /", pages.same_page),
            ("webapp signed-in home /", pages.webapp)]
    for label, rounds in rows:
        detail = " ".join(f"{r.rate:.0f}" for r in rounds)
        print(f"   {label:<28}{PageResult.median_rate(rounds):>15.0f}"
              f"{PageResult.median_cpu(rounds):>19.0f}{PageResult.median_others(rounds):>16.2f}"
              f"   {detail}")
    ratio_ok = pages.ratio >= PAGE_RATIO_TARGET
    print(f"   ratio webapp/hello: {pages.ratio:.2f}  (target >= {PAGE_RATIO_TARGET})  "
          f"{verdict(ratio_ok)}")
    print(f"   ratio webapp/same page in bare Flask: {pages.ratio_to_same_page:.2f}  (what being "
          "signed in costs the page: session, checks, security headers)")
    print(f"   ratio same page in bare Flask/hello: {pages.same_page_ratio:.2f}  (what rendering "
          "the page's Jinja templates costs any Flask app)")
    measured = pages.hello + pages.same_page + pages.webapp
    if max(r.others_cores for r in measured) > OTHER_LOAD_WARNING_CORES:
        print("   note: other processes used a sizeable share of the 2 cores in some rounds; "
              "the req/s figures are then low and noisy (CPU us/req less so)")
    short = [r.requests for r in measured if r.requests < args.requests]
    if short:
        print(f"   note: {len(short)} round(s) stopped at the {ROUND_TIME_LIMIT_SECONDS} s limit")
    print(f"   token-endpoint calls while serving pages: {pages.token_calls}")
    if not ratio_ok:
        missed.append(f"signed-in page ratio {pages.ratio:.2f} < {PAGE_RATIO_TARGET}")

    print(f"\n2. Cached access token, in process: each call in a new request context of the "
          f"signed-in session ({args.calls} calls x {args.repeats} repeats, median)")
    print(f"   {'call (+ the end of its request)':<46}{'ms/call':>10}")
    print(f"   {'baseline: session read':<46}{token.session_read_ms:>10.4f}")
    print(f"   {'webapp.tokens.get_access_token()':<46}{token.token_ms:>10.4f}")
    print(f"   {'difference':<46}{token.net_ms:>10.4f}")
    token_ok = token.token_ms <= TOKEN_MS_TARGET
    print(f"   get_access_token(): {token.token_ms:.3f} ms  (target <= {TOKEN_MS_TARGET} ms)  "
          f"{verdict(token_ok)}")
    zero_ok = token.token_calls_while_valid == 0
    print(f"   token-endpoint calls while the token was valid ({token.seconds_left / 60:.0f} min "
          f"left): {token.token_calls_while_valid} (the sign-in made "
          f"{token.sign_in_token_calls})  {verdict(zero_ok)}")
    if not token_ok:
        missed.append(f"cached token {token.token_ms:.3f} ms > {TOKEN_MS_TARGET} ms")
    if not zero_ok:
        missed.append(f"{token.token_calls_while_valid} token-endpoint calls while the token "
                      "was valid")
    return missed


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-fail", action="store_true",
                        help="report only; exit 0 even when a target is missed")
    parser.add_argument("--requests", type=int, default=3000, help="requests per page per round")
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds per page")
    parser.add_argument("--warmup", type=int, default=300, help="warm-up requests per page")
    parser.add_argument("--clients", type=int, default=2, help="keep-alive client connections")
    parser.add_argument("--worker-class", choices=("gthread", "sync"), default="gthread",
                        help="gunicorn worker class (sync closes every connection)")
    parser.add_argument("--workers", type=int, default=1, help="gunicorn workers per app")
    parser.add_argument("--threads", type=int, default=2, help="gunicorn threads per worker")
    parser.add_argument("--calls", type=int, default=1000, help="token calls per repeat")
    parser.add_argument("--repeats", type=int, default=5, help="token timing repeats")
    return parser.parse_args(argv)


@contextlib.contextmanager
def counted_emulator(workdir: Path) -> Iterator[tuple[Any, TokenEndpointCounter]]:
    from entra_emulator.server import EmulatorServer

    with EmulatorServer(directory=None, state_dir=workdir / "emulator", host="localhost",
                        https_port=0, http_port=0) as emu:
        assert emu.app is not None
        counter = TokenEndpointCounter(emu.app.wsgi_app)
        emu.app.wsgi_app = counter  # type: ignore[method-assign]
        yield emu, counter


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the emulator's request log
    warnings.filterwarnings("ignore", message=MSAL_QUERY_MODE_WARNING, category=UserWarning)
    browser_sign_in = load_sign_in_driver()
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-webapp-") as tmp, \
            counted_emulator(Path(tmp)) as (emu, counter):
        workdir = Path(tmp)
        try:
            token = bench_token(emu, counter, browser_sign_in, args, workdir)
            pages = bench_pages(emu, counter, browser_sign_in, args, workdir)
        except RuntimeError as problem:
            print(f"The benchmark could not run: {problem}", file=sys.stderr)
            return 2
        missed = report(pages, token, args)
    print(f"\nTotal {time.monotonic() - began:.0f} s.")
    if missed:
        print("Missed: " + "; ".join(missed))
        return 0 if args.no_fail else 1
    print("All targets met.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
