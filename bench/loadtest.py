"""Load test of the scaled-out web app (`make loadtest`): no user may ever see another's data.

What runs, all on loopback, all stopped at the end:
- a redis-server (memory only) holding every session, token cache and single-use record (a
  pending sign-in is a sealed cookie in the browser: nothing is stored for it);
- the emulator (`python -m entra_emulator serve`) with a directory of one account per simulated
  user, whose app registers the public origin's redirect URIs;
- two app instances under gunicorn (gunicorn.conf.py, 2 workers each, SESSION_TYPE=redis), and
  two bare Flask "hello" instances served the same way, for the throughput baseline. Every
  setting is given here: the instances run in a clean environment from an empty working
  directory, so neither the shell's settings nor the repository's .env change what is measured.

The load balancer is the client side: every request of every simulated browser goes to the next
instance in turn (round robin, no stickiness) with the public origin in its Host header, exactly
what the instances would see behind an L4 balancer. So sign-ins start on one instance and finish
on the other, and every page is served by whichever instance is next.

Phase 1, for --duration seconds: --users browsers (threads), each signed in as its own account,
loop: sign in through the emulator's pages (form_post), call Graph (GET /graph) --graph-calls
times, sign out (POST /logout with the CSRF token, then the provider's logout and the app's own
return page, which must say "You have signed out"). Every /graph page must name its own user
and no other (a cross-user leak otherwise).
Phase 2: signed-in home page (`/`, session in Redis) requests/s as a ratio of the same app's
signed-out `/` and of the bare page, over keep-alive connections, interleaved rounds.

No code, state, token or secret is printed (URLs are shown without their query).

Exit status 1 on any error or leak. `python bench/loadtest.py --help` lists the knobs.
Gunicorn imports this module too (`bare_app`), so module-level imports stay light.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import http.cookiejar
import json
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from bench_support import (  # bench/, beside this file
    REPO,
    RedisServer,
    child_pids,
    clean_env,
    load_sign_in_driver,
    machine_busy_seconds,
    process_cpu_seconds,
)
from dotenv import dotenv_values

BENCH = Path(__file__).resolve().parent
PASSWORD = "Passw0rd!"
DOMAIN = "contoso.onmicrosoft.com"
USER_UPN = re.compile(rf"loaduser\d+@{re.escape(DOMAIN)}", re.IGNORECASE)
USER_NAME = re.compile(r"Load User \d+")
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')
SIGNED_OUT_NOTICE = "You have signed out"
STARTUP_SECONDS = 60
REQUEST_TIMEOUT = 30
WORKERS_PER_INSTANCE = 2
# The emulator's worker processes (serve --workers): one per core, as the app instances use
# them too; any request may land on either (they share the state folder).
EMULATOR_WORKERS = 2
INSTANCES = 2


# ------------------------------------------------------------------------------------------------
# The processes
# ------------------------------------------------------------------------------------------------

def bare_app() -> Any:
    """The baseline gunicorn serves (`loadtest:bare_app()`): a bare Flask page."""
    from flask import Flask

    app = Flask("bare")
    app.add_url_rule("/", "hello", lambda: "hello")
    return app


class Process:
    """A child process with its output in a log file; stopped by its own pid."""

    def __init__(self, name: str, command: list[str], log_path: Path, *, env: dict[str, str],
                 pass_fds: tuple[int, ...] = ()) -> None:
        self.name = name
        self.log_path = log_path
        self._log = log_path.open("wb")
        # An empty working directory of its own: no .env or gunicorn.conf.py found by accident.
        rundir = log_path.parent / f"run-{name}"
        rundir.mkdir(exist_ok=True)
        self.process = subprocess.Popen(command, cwd=rundir, env=env, pass_fds=pass_fds,
                                        stdin=subprocess.DEVNULL, stdout=self._log,
                                        stderr=subprocess.STDOUT)

    def check_running(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n"
                               f"{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(ready: Callable[[], bool], process: Process, what: str) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        process.check_running()
        with contextlib.suppress(OSError, http.client.HTTPException, requests.RequestException):
            if ready():
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready after {STARTUP_SECONDS} s:\n"
                               f"{process.log_tail()}")
        time.sleep(0.1)


def load_user(number: int) -> dict[str, Any]:
    name = f"loaduser{number:02d}"
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"loadtest:{name}")),
        "displayName": f"Load User {number:02d}",
        "givenName": "Load",
        "surname": f"User {number:02d}",
        "userPrincipalName": f"{name}@{DOMAIN}",
        "mail": f"{name}@{DOMAIN}",
        "mailNickname": name,
        "jobTitle": "Load tester",
        "accountEnabled": True,
        "userType": "Member",
        "passwordProfile": {"password": PASSWORD},
    }


def write_directory(workdir: Path, users: int, public_origin: str) -> Path:
    """The packaged directory, with one account per simulated user and the app's redirect URIs
    on the public origin."""
    from entra_emulator.directory import DEFAULT_DIRECTORY

    document = json.loads(DEFAULT_DIRECTORY.read_text())
    for user in document["users"]:
        if "photo" in user:
            user["photo"] = str(DEFAULT_DIRECTORY.parent / user["photo"])
    document["users"] += [load_user(n) for n in range(1, users + 1)]
    app = document["applications"][0]
    app["web"]["redirectUris"] = [f"{public_origin}/getAToken", f"{public_origin}/"]
    path = workdir / "directory.json"
    path.write_text(json.dumps(document, indent=1))
    return path


def start_emulator(workdir: Path, directory: Path) -> tuple[Process, dict[str, str]]:
    env_file = workdir / "emulator.env"
    process = Process("emulator", [sys.executable, "-m", "entra_emulator", "serve",
                                   "--directory", str(directory), "--state",
                                   str(workdir / "emulator"), "--https-port", "0",
                                   "--http-port", "0", "--env-file", str(env_file),
                                   "--workers", str(EMULATOR_WORKERS)],
                      workdir / "emulator.log", env=clean_env())
    wait_until(env_file.exists, process, "the emulator")
    settings = {k: v for k, v in dotenv_values(env_file).items() if v is not None}
    return process, settings


class Instance:
    """One gunicorn with the repository's gunicorn.conf.py on a socket bound here (fd://, so no
    port race); every GUNICORN_* setting that file reads is given."""

    def __init__(self, name: str, app: str, env: dict[str, str], workdir: Path,
                 pythonpath: Path) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=256)
        self.port = self.listener.getsockname()[1]
        fd = self.listener.fileno()
        env = {**env, "GUNICORN_BIND": f"fd://{fd}",
               "GUNICORN_WORKERS": str(WORKERS_PER_INSTANCE), "GUNICORN_THREADS": "4",
               "GUNICORN_TIMEOUT": "60", "GUNICORN_GRACEFUL_TIMEOUT": "30",
               "GUNICORN_KEEPALIVE": "5", "GUNICORN_LOG_LEVEL": "info",
               "GUNICORN_ACCESS_LOG": str(workdir / f"{name}-access.log"),
               "GUNICORN_ERROR_LOG": "-"}
        self.process = Process(name, [sys.executable, "-m", "gunicorn", "-c",
                                      str(REPO / "gunicorn.conf.py"), "--pythonpath",
                                      str(pythonpath), app],
                               workdir / f"{name}.log", env=env, pass_fds=(fd,))

    def wait_until_ready(self, host: str, path: str) -> None:
        def answers() -> bool:
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            try:
                connection.request("GET", path, headers={"Host": host})
                return connection.getresponse().status == 200
            finally:
                connection.close()

        wait_until(answers, self.process, self.process.name)

    def cpu_seconds(self) -> float:
        """CPU time used so far by this gunicorn's master and workers."""
        master = self.process.process.pid
        return sum(process_cpu_seconds(pid) for pid in (master, *child_pids(master)))

    def stop(self) -> None:
        self.process.stop()
        self.listener.close()


# ------------------------------------------------------------------------------------------------
# A simulated browser
# ------------------------------------------------------------------------------------------------

@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    finished: list[float] = field(default_factory=list)  # when each app request ended
    errors: list[str] = field(default_factory=list)
    leaks: list[str] = field(default_factory=list)
    sign_ins: int = 0
    sign_outs: int = 0
    graph_pages: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, kind: str, seconds: float, app: bool = True) -> None:
        with self.lock:
            self.latencies[kind].append(seconds)
            if app:
                self.finished.append(time.monotonic())

    def error(self, message: str) -> None:
        with self.lock:
            self.errors.append(message)

    def leak(self, message: str) -> None:
        with self.lock:
            self.leaks.append(message)

    def count(self, name: str) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + 1)


class Unexpected(Exception):
    """An answer a browser should not get: counted as an error."""


class SimulatedBrowser:
    verify: str | bool = True  # the emulator's CA bundle, for its https pages

    def __init__(self, number: int, public_host: str, ports: list[int], stats: Stats,
                 sign_in_driver: Callable[..., Any]) -> None:
        self.upn = f"loaduser{number:02d}@{DOMAIN}"
        self.name = f"Load User {number:02d}"
        self.public_host = public_host
        self.ports = ports
        self.turn = number  # spread first requests over the instances
        self.stats = stats
        self.sign_in_driver = sign_in_driver
        self.http = self.new_session()

    @classmethod
    def new_session(cls) -> requests.Session:
        session = requests.Session()
        session.trust_env = False  # no proxy or CA bundle from the shell
        session.verify = cls.verify
        return session

    def app(self, kind: str, method: str, path: str, **kwargs: Any) -> requests.Response:
        """One request to the app, through the balancer: the next instance in turn."""
        port = self.ports[self.turn % len(self.ports)]
        self.turn += 1
        began = time.perf_counter()
        response = self.http.request(method, f"http://127.0.0.1:{port}{path}",
                                     headers={"Host": self.public_host}, allow_redirects=False,
                                     timeout=REQUEST_TIMEOUT, **kwargs)
        self.stats.record(kind, time.perf_counter() - began)
        # Browsers treat http://localhost as a secure context and send it Secure cookies (the
        # form_post pending sign-in cookie is SameSite=None, hence Secure); http.cookiejar
        # does not.
        for cookie in self.http.cookies:
            cookie.secure = False
        return response

    def expect(self, response: requests.Response, status: int, what: str) -> None:
        if response.status_code != status:
            raise Unexpected(f"{what}: {response.status_code} instead of {status}: "
                             f"{_page_text(response.text)[:200]}")

    def run(self, deadline: float, graph_calls: int) -> None:
        while time.monotonic() < deadline:
            try:
                self.journey(deadline, graph_calls)
            except (Unexpected, requests.RequestException, AssertionError) as problem:
                self.stats.error(f"{self.upn}: {type(problem).__name__}: {problem}")
                self.http = self.new_session()  # start over as a fresh browser
                time.sleep(0.5)

    def journey(self, deadline: float, graph_calls: int) -> None:
        start = self.app("login", "GET", "/login?next=/graph")
        self.expect(start, 302, "GET /login")
        began = time.perf_counter()
        result = self.sign_in_driver(start.headers["Location"], self.upn, PASSWORD,
                                     session=self.http)
        self.stats.record("emulator sign-in pages", time.perf_counter() - began, app=False)
        callback = urlsplit(result.url)
        if callback.netloc != self.public_host or result.method != "POST":
            # Without the query: it would hold the code and state.
            raise Unexpected(f"the provider answered {result.method} {callback.scheme}://"
                             f"{callback.netloc}{callback.path}")
        # A form_post is a cross-site POST: the browser sends no SameSite=Lax session cookie,
        # only the pending sign-in's SameSite=None one, whichever instance set it.
        drop_cookie(self.http.cookies, "session")
        answer = self.app("callback", "POST", callback.path, data=result.data)
        self.expect(answer, 303, "the callback")
        if answer.headers.get("Location") != "/graph":
            raise Unexpected(f"the callback sent the browser to {answer.headers.get('Location')}")
        self.stats.count("sign_ins")
        for _ in range(graph_calls):
            self.call_graph()
            if time.monotonic() >= deadline:
                break
        self.sign_out()

    def call_graph(self) -> None:
        page = self.app("graph", "GET", "/graph")
        self.expect(page, 200, "GET /graph")
        self.stats.count("graph_pages")
        upns = {u.lower() for u in USER_UPN.findall(page.text)}
        names = set(USER_NAME.findall(page.text))
        if upns != {self.upn.lower()} or names != {self.name}:
            self.stats.leak(f"{self.upn}'s /graph page shows {sorted(upns | names)}")

    def sign_out(self) -> None:
        confirm = self.app("logout", "GET", "/logout")
        self.expect(confirm, 200, "GET /logout")
        token = CSRF_FIELD.search(confirm.text)
        if token is None:
            raise Unexpected("the sign-out page has no CSRF token")
        out = self.app("logout", "POST", "/logout", data={"csrf_token": token.group(1)})
        self.expect(out, 303, "POST /logout")
        provider = self.http.get(out.headers["Location"], allow_redirects=False,
                                 timeout=REQUEST_TIMEOUT)
        self.expect(provider, 302, "the provider's logout")
        back = urlsplit(provider.headers["Location"])
        if back.netloc != self.public_host:
            raise Unexpected(f"the provider's logout went to {back.scheme}://{back.netloc}"
                             f"{back.path}")
        # The provider's return (`/?state=...`) is sent on to the clean `/`, which says so once.
        returned = self.app("home", "GET", back.path + (f"?{back.query}" if back.query else ""))
        self.expect(returned, 303, "the return from the provider's logout")
        if returned.headers.get("Location") != "/":
            raise Unexpected("the return from the provider's logout went to "
                             f"{urlsplit(returned.headers.get('Location', '')).path}")
        home = self.app("home", "GET", "/")
        self.expect(home, 200, "the home page after sign-out")
        if SIGNED_OUT_NOTICE not in home.text:
            raise Unexpected("the home page after sign-out does not say so")
        if USER_UPN.search(home.text) or USER_NAME.search(home.text):
            self.stats.leak(f"{self.upn}: the signed-out home page names a user")
        self.stats.count("sign_outs")


def drop_cookie(jar: http.cookiejar.CookieJar, name: str) -> None:
    for cookie in [c for c in jar if c.name == name]:
        jar.clear(cookie.domain, cookie.path, cookie.name)


def _page_text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).strip()


# ------------------------------------------------------------------------------------------------
# Phase 2: signed-in page vs the signed-out one and a bare page, over keep-alive connections
# ------------------------------------------------------------------------------------------------

def hammer(targets: list[tuple[int, str, str]], host: str, seconds: float, stats: Stats,
           kind: str) -> int:
    """GET / on each (port, cookie, expected text) target over its own keep-alive connection
    for `seconds`; every answer must be 200 with that text, and a signed-in page must name only
    its own user, a signed-out one none. Returns the count."""
    done = [0] * len(targets)
    deadline = time.monotonic() + seconds

    def client(index: int, port: int, cookie: str, name: str) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
        headers = {"Host": host, **({"Cookie": cookie} if cookie else {})}
        try:
            while time.monotonic() < deadline:
                connection.request("GET", "/", headers=headers)
                response = connection.getresponse()
                body = response.read().decode(errors="replace")
                if response.status != 200 or name not in body:
                    stats.error(f"{kind} GET /: {response.status} {_page_text(body)[:200]}")
                    return
                if cookie and set(USER_NAME.findall(body)) != {name}:
                    stats.leak(f"the home page of {name} shows {set(USER_NAME.findall(body))}")
                if not cookie and USER_NAME.search(body):
                    stats.leak(f"a signed-out page shows {set(USER_NAME.findall(body))}")
                done[index] += 1
        except (OSError, http.client.HTTPException) as problem:
            stats.error(f"{kind} GET /: {problem!r}")
        finally:
            connection.close()

    threads = [threading.Thread(target=client, args=(i, *target), daemon=True)
               for i, target in enumerate(targets)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + REQUEST_TIMEOUT + 5)
    return sum(done)


def signed_in_cookie(browser: SimulatedBrowser) -> str:
    start = browser.app("login", "GET", "/login")
    browser.expect(start, 302, "GET /login")
    result = browser.sign_in_driver(start.headers["Location"], browser.upn, PASSWORD,
                                    session=browser.http)
    drop_cookie(browser.http.cookies, "session")  # a cross-site POST, as in phase 1
    answer = browser.app("callback", "POST", urlsplit(result.url).path, data=result.data)
    browser.expect(answer, 303, "the callback")
    return f"session={browser.http.cookies['session']}"


@dataclass
class Side:
    """One side of phase 2: its requests, and the CPU its instances (and everything else on the
    machine) used meanwhile."""

    requests: int = 0
    instance_cpu_seconds: float = 0.0
    machine_cpu_seconds: float = 0.0

    @property
    def instance_cpu_us(self) -> float:
        return self.instance_cpu_seconds / self.requests * 1e6 if self.requests else 0.0

    @property
    def machine_cpu_us(self) -> float:
        return self.machine_cpu_seconds / self.requests * 1e6 if self.requests else 0.0


@dataclass
class Throughput:
    sides: dict[str, Side]  # "bare", "signed-out", "signed-in"
    clients: int
    seconds: float

    def ratio(self, side: str, baseline: str) -> float:
        if not self.sides[baseline].requests:
            return 0.0
        return self.sides[side].requests / self.sides[baseline].requests


def measure_throughput(app_instances: list[Instance], bare_instances: list[Instance],
                       public_host: str, browsers: list[SimulatedBrowser],
                       args: argparse.Namespace, stats: Stats) -> Throughput:
    clients = browsers[:args.clients]
    for browser in clients:
        browser.stats = Stats()  # their sign-ins here are not phase 1's traffic
    signed = [(app_instances[i % len(app_instances)].port, signed_in_cookie(b), b.name)
              for i, b in enumerate(clients)]
    bare = [(bare_instances[i % len(bare_instances)].port, "", "hello")
            for i in range(len(clients))]
    signed_out = [(app_instances[i % len(app_instances)].port, "", "Welcome")
                  for i in range(len(clients))]
    sides = {"bare": (bare, bare_instances, Side()),
             "signed-out": (signed_out, app_instances, Side()),
             "signed-in": (signed, app_instances, Side())}
    for kind, (targets, _, _) in sides.items():  # warm-up
        hammer(targets, public_host, 1, stats, kind)
    rounds = 4
    for _ in range(rounds):  # interleaved, so drift in the machine hits every side alike
        for kind, (targets, instances, side) in sides.items():
            cpu_before = sum(i.cpu_seconds() for i in instances)
            machine_before = machine_busy_seconds()
            side.requests += hammer(targets, public_host, args.ratio_seconds / rounds, stats,
                                    kind)
            side.instance_cpu_seconds += sum(i.cpu_seconds() for i in instances) - cpu_before
            side.machine_cpu_seconds += machine_busy_seconds() - machine_before
    return Throughput({kind: side for kind, (_, _, side) in sides.items()}, len(clients),
                      args.ratio_seconds)


# ------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------

def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def timeline(finished: list[float], began: float, elapsed: float, windows: int = 6) -> str:
    """App requests/s in consecutive windows of phase 1: a store or a process that degrades
    over time shows here."""
    width = elapsed / windows
    counts = [0] * windows
    for moment in finished:
        if moment - began <= elapsed:
            counts[min(windows - 1, int((moment - began) / width))] += 1
    return " ".join(f"{count / width:.0f}" for count in counts)


def report(stats: Stats, began: float, elapsed: float, throughput: Throughput | None,
           args: argparse.Namespace) -> None:
    app_kinds = [k for k in stats.latencies if k != "emulator sign-in pages"]
    app_latencies = [s for k in app_kinds for s in stats.latencies[k]]
    print(f"\nPhase 1: {args.users} browsers for {elapsed:.0f} s against {INSTANCES} instances x "
          f"{WORKERS_PER_INSTANCE} gunicorn workers, sessions in Redis, round-robin, no "
          f"stickiness")
    print(f"  sign-ins {stats.sign_ins}, /graph pages {stats.graph_pages}, "
          f"sign-outs {stats.sign_outs}")
    if app_latencies:
        print(f"  app requests {len(app_latencies)}: {len(app_latencies) / elapsed:.1f} req/s, "
              f"p50 {percentile(app_latencies, 0.5) * 1000:.0f} ms, "
              f"p95 {percentile(app_latencies, 0.95) * 1000:.0f} ms")
        print(f"  req/s in successive {elapsed / 6:.0f} s windows: "
              f"{timeline(stats.finished, began, elapsed)}")
    print(f"  {'request':<26}{'count':>8}{'p50 ms':>10}{'p95 ms':>10}{'mean ms':>10}")
    for kind, values in sorted(stats.latencies.items()):
        print(f"  {kind:<26}{len(values):>8}{percentile(values, 0.5) * 1000:>10.0f}"
              f"{percentile(values, 0.95) * 1000:>10.0f}{statistics.mean(values) * 1000:>10.0f}")
    if throughput:
        print(f"\nPhase 2: GET / over {throughput.clients} keep-alive connections, "
              f"{throughput.seconds:.0f} s each side, interleaved")
        seconds = throughput.seconds
        print(f"  {'page':<26}{'req/s':>9}{'instances CPU us/req':>22}"
              f"{'machine CPU us/req':>20}")
        for label, kind in (("bare Flask page", "bare"), ("signed-out / (Redis)", "signed-out"),
                            ("signed-in / (Redis)", "signed-in")):
            side = throughput.sides[kind]
            print(f"  {label:<26}{side.requests / seconds:>9.1f}{side.instance_cpu_us:>22.0f}"
                  f"{side.machine_cpu_us:>20.0f}")
        for baseline in ("signed-out", "bare"):
            print(f"  ratio signed-in / {baseline:<12}"
                  f"{throughput.ratio('signed-in', baseline):6.2f}")
        print("  (machine: every process on the 2 cores, these clients and Redis included)")
    print(f"\nErrors: {len(stats.errors)}")
    for message in stats.errors[:10]:
        print(f"  {message}")
    print(f"Cross-user leaks: {len(stats.leaks)}")
    for message in stats.leaks[:10]:
        print(f"  {message}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=120, help="seconds of phase 1")
    parser.add_argument("--users", type=int, default=50, help="simulated browsers (accounts)")
    parser.add_argument("--graph-calls", type=int, default=5, help="GET /graph per sign-in")
    parser.add_argument("--ratio-seconds", type=float, default=10,
                        help="seconds of phase 2 per page")
    parser.add_argument("--clients", type=int, default=8, help="connections in phase 2")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    args = parser.parse_args(argv)
    if not 1 <= args.users <= 99 or args.duration <= 0 or args.graph_calls < 1:
        parser.error("--users must be 1..99, --duration > 0, --graph-calls >= 1")
    args.clients = max(1, min(args.clients, args.users))
    return args


def app_settings(emulator: dict[str, str], redis_url: str, public_host: str) -> dict[str, str]:
    """Every setting the web app reads (webapp/config.py), given explicitly."""
    return {
        "CLIENT_ID": emulator["CLIENT_ID"],
        "CLIENT_SECRET": emulator["CLIENT_SECRET"],
        "AUTHORITY": emulator["AUTHORITY"],
        "ENDPOINT": emulator["ENDPOINT"],
        "CA_BUNDLE": emulator["REQUESTS_CA_BUNDLE"],
        "SCOPE": "User.Read",
        "SECRET_KEY": secrets.token_hex(32),
        "SESSION_TYPE": "redis",
        "REDIS_URL": redis_url,
        "REDIRECT_URI": f"http://{public_host}/getAToken",
        "RESPONSE_MODE": "form_post",
        "TRUSTED_PROXY_HOPS": "0",
        "SESSION_LIFETIME": "28800",
        "SESSION_IDLE_TIMEOUT": "1800",
        "HTTP_TIMEOUT": "10",
        "GRAPH_RETRY_MAX_WAIT": "5",
        "BACKCHANNEL_LOGOUT": "false",
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="loadtest-"))
    public_port = free_port()  # the balancer's address; the instances listen elsewhere
    public_host = f"localhost:{public_port}"
    processes: list[Process] = []
    instances: list[Instance] = []
    redis: RedisServer | None = None
    stats = Stats()
    try:
        redis = RedisServer(workdir / "redis")
        redis_url = redis.url
        emulator, emulator_settings = start_emulator(
            workdir, write_directory(workdir, args.users, f"http://{public_host}"))
        processes.append(emulator)
        SimulatedBrowser.verify = emulator_settings["REQUESTS_CA_BUNDLE"]
        env = clean_env(**app_settings(emulator_settings, redis_url, public_host))
        for number in range(INSTANCES):
            instances.append(Instance(f"app-{number}", "wsgi:app", env, workdir, REPO))
            instances.append(Instance(f"bare-{number}", "loadtest:bare_app()", env, workdir,
                                      BENCH))
        app_instances = [i for i in instances if i.process.name.startswith("app")]
        bare_instances = [i for i in instances if i.process.name.startswith("bare")]
        for instance in app_instances:
            instance.wait_until_ready(public_host, "/healthz")
        for instance in bare_instances:
            instance.wait_until_ready(public_host, "/")
        app_ports = [i.port for i in app_instances]
        print(f"Ready: redis {redis_url}, emulator {emulator_settings['AUTHORITY']}, app "
              f"instances on ports {app_ports} behind http://{public_host}; work folder "
              f"{workdir}", flush=True)

        driver = load_sign_in_driver()
        browsers = [SimulatedBrowser(n, public_host, app_ports, stats, driver)
                    for n in range(1, args.users + 1)]
        began = time.monotonic()
        deadline = began + args.duration
        threads = [threading.Thread(target=b.run, args=(deadline, args.graph_calls),
                                    daemon=True) for b in browsers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(max(0.0, deadline + 10 * REQUEST_TIMEOUT - time.monotonic()))
        elapsed = time.monotonic() - began
        if any(thread.is_alive() for thread in threads):
            stats.error("a simulated browser did not finish in time")

        try:
            throughput = measure_throughput(app_instances, bare_instances, public_host,
                                            browsers, args, stats)
        except (Unexpected, requests.RequestException) as problem:
            stats.error(f"phase 2: {type(problem).__name__}: {problem}")
            throughput = None
        report(stats, began, elapsed, throughput, args)
    finally:
        for instance in instances:
            instance.stop()
        for process in reversed(processes):
            process.stop()
        if redis is not None:
            redis.stop()
        if args.keep:
            print(f"Logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    passed = not stats.errors and not stats.leaks and stats.sign_ins > 0
    print("PASS: no errors, no cross-user leaks." if passed else "FAIL")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
