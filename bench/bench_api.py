"""Benchmark: a protected web API call (flask_entra's token_required) as a ratio of the same
endpoint unprotected, served the same way in the same run, and how often the API fetches the
provider's keys (target: once, not per request).

    python bench/bench_api.py [--rounds 6] [--requests 2000] [--clients 4] [--strict]

One gunicorn (gthread, 1 worker x 2 threads) serves both routes of one app: `/open` and
`/protected` (the same JSON body). The emulator runs in this process, signs the access token
with its own key and serves the JWKS the API fetches over TLS; a counter on its WSGI app counts
JWKS requests. Rounds alternate which route goes first; the ratio is of the medians of the
requests per second, with the spread. Exit 0 after the figures and the verdict (--strict: 1 on
a missed target).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_support import clean_env, verdict  # noqa: E402

API_ID = "6f1f1e8a-2b7c-4a55-9d3e-7c0b5a1d2e3f"
CONFIG_ENV = "BENCH_API_CONFIG"
TARGET_RATIO = 0.8
ROUND_LIMIT_SECONDS = 60


def served_api() -> Any:
    """Gunicorn's app factory: the two routes, the authority and trust in BENCH_API_CONFIG."""
    from flask import Flask, jsonify

    from flask_entra import Auth

    config = json.loads(os.environ[CONFIG_ENV])
    app = Flask("bench-api")
    app.config.update(SECRET_KEY=config["secret_key"], SESSION_TYPE="filesystem",
                      SESSION_FILE_DIR=config["session_dir"])
    auth = Auth(app, client_id=API_ID, authority=config["authority"],
                ca_bundle=config["ca_bundle"])

    @app.get("/open")
    def open_route() -> Any:
        return jsonify(items=[], caller="anyone")

    @app.get("/protected")
    @auth.token_required(scopes=["ToDoList.Read"])
    def protected(*, context: dict[str, Any]) -> Any:
        return jsonify(items=[], caller=context["claims"]["oid"])

    return app


class KeysCounter:
    """WSGI middleware on the emulator: counts JWKS requests."""

    def __init__(self, wsgi_app: Any) -> None:
        self.wsgi_app, self.count, self._lock = wsgi_app, 0, threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO", "").endswith("/keys"):
            with self._lock:
                self.count += 1
        return self.wsgi_app(environ, start_response)


def drive(port: int, path: str, token: str, total: int, clients: int) -> float:
    """Requests per second for `total` GETs over `clients` keep-alive connections."""
    remaining, done, lock, failures = [total], [0], threading.Lock(), []
    start = threading.Barrier(clients + 1)
    headers = {"Authorization": f"Bearer {token}"}
    deadline = time.monotonic() + ROUND_LIMIT_SECONDS

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        start.wait()
        try:
            while time.monotonic() < deadline:
                with lock:
                    if remaining[0] <= 0:
                        return
                    remaining[0] -= 1
                connection.request("GET", path, headers=headers)
                response = connection.getresponse()
                body = response.read()
                if response.status != 200 or b"caller" not in body:
                    failures.append(response.status)
                    return
                with lock:
                    done[0] += 1  # only checked answers count
        except (OSError, http.client.HTTPException) as exc:
            failures.append(repr(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    began = time.perf_counter()
    start.wait()
    for thread in threads:
        thread.join(ROUND_LIMIT_SECONDS + 10)
    if failures:
        raise RuntimeError(f"GET {path} answered {failures[0]}")
    return done[0] / (time.perf_counter() - began)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--strict", action="store_true", help="exit 1 on a missed target")
    args = parser.parse_args(argv)
    from entra_emulator.server import EmulatorServer

    with tempfile.TemporaryDirectory() as tmp, EmulatorServer(
            directory=None, state_dir=Path(tmp) / "emulator", https_port=0, http_port=0) as emu:
        counter = KeysCounter(emu.app.wsgi_app)
        emu.app.wsgi_app = counter
        now = int(time.time())
        token = emu.keys.sign({"aud": API_ID, "iss": f"{emu.authority}/v2.0",
                               "tid": emu.tenant_id, "iat": now, "nbf": now, "exp": now + 7200,
                               "oid": "bench-caller", "sub": "bench", "scp": "ToDoList.Read",
                               "ver": "2.0"})
        config = {"authority": emu.authority, "ca_bundle": str(emu.ca_bundle),
                  "secret_key": os.urandom(32).hex(), "session_dir": str(Path(tmp) / "s")}
        import socket

        listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        port = listener.getsockname()[1]
        server = subprocess.Popen(  # noqa: S603 - fixed argv
            [sys.executable, "-m", "gunicorn", "--bind", f"fd://{listener.fileno()}",
             "--worker-class", "gthread", "--workers", "1", "--threads", "2",
             "--keep-alive", "30", "--log-level", "warning", "--pythonpath",
             str(Path(__file__).parent), "bench_api:served_api()"],
            pass_fds=(listener.fileno(),), cwd=tmp,
            env=clean_env(**{CONFIG_ENV: json.dumps(config)}), stdin=subprocess.DEVNULL)
        try:
            for _ in range(100):  # warm: the JWKS fetched, the worker's imports done
                try:
                    drive(port, "/protected", token, 20, 1)
                    break
                except (OSError, RuntimeError, http.client.HTTPException):
                    time.sleep(0.1)
            keys_before = counter.count
            rates: dict[str, list[float]] = {"/open": [], "/protected": []}
            for index in range(args.rounds):
                order = ["/open", "/protected"] if index % 2 == 0 else ["/protected", "/open"]
                for path in order:
                    rates[path].append(drive(port, path, token, args.requests, args.clients))
            fetched = counter.count - keys_before
        finally:
            server.terminate()
            server.wait(timeout=10)
            listener.close()
    open_median, protected_median = (statistics.median(rates[p]) for p in ("/open",
                                                                           "/protected"))
    ratio = protected_median / open_median
    spread = [p / o for p, o in zip(rates["/protected"], rates["/open"], strict=True)]
    total = args.rounds * args.requests
    print(f"{args.rounds} interleaved rounds of {args.requests} requests, {args.clients} "
          "keep-alive clients, gunicorn gthread 1 worker x 2 threads")
    print(f"  /open       {open_median:8.0f} req/s (median)")
    print(f"  /protected  {protected_median:8.0f} req/s (median)")
    print(f"  protected / open: {ratio:.2f} (rounds {min(spread):.2f}-{max(spread):.2f}), "
          f"target >= {TARGET_RATIO}: {verdict(ratio >= TARGET_RATIO)}")
    print(f"  JWKS fetches during {total} protected requests: {fetched} (target 0: "
          f"{verdict(fetched == 0)})")
    ok = ratio >= TARGET_RATIO and fetched == 0
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
