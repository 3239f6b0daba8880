"""The Entra emulator against a certified peer, node `oidc-provider`, measured in the same run by
the same client code (issue 14 item 4; `make bench-peer`).

The peer is bench/peer/server.mjs: one Node process running oidc-provider (OpenID Certified),
installed with npm into bench/peer/node_modules (git-ignored) when missing, configured like the
emulator: https with the emulator's own localhost certificate (ECDSA P-256, from the benchmark's
state folder), RS256 with an RSA-2048 key, a confidential client with client_secret_post, JWT
access tokens (so a refresh signs two tokens on both sides), refresh-token rotation on every use,
an ID token on every refresh, and one user whose password its sign-in page checks.

Each of `--runs` (3) runs measures both servers, one after the other (the order alternates from
run to run; only the server being measured is running):

1. Cold start: from spawning the process to a 200 for its discovery document (`--starts` starts,
   keys and certificate already made; the very first start, which makes them, is shown apart).
   The emulator is the CLI (`python -m entra_emulator serve --port 0 ...`), the peer
   `node server.mjs`; both say "Ready:" with their address, then one https GET.
2. Full sign-in, sequential (`--sign-ins`): a scripted browser (requests, cookies cleared each
   time: no SSO session) from the authorization endpoint, following redirects and filling the
   sign-in form (and a consent form, if one comes), to the code at the redirect URI; then the web
   app (a keep-alive requests.Session) redeems the code with PKCE. Every sign-in's tokens are
   verified afterwards (signature against the published JWKS, RS256, a 2048-bit RSA key, the
   audiences, the ID token's issuer and nonce).
3. Refresh grant throughput: `--clients` (8) client processes, each with one keep-alive TLS
   connection (http.client, the emulator's CA), each rotating its own refresh token (from a real
   sign-in) as fast as answers come, for `--seconds`; every answer checked (200, the three tokens,
   a new refresh token, the connection kept open), and every `--sample-every`-th answer's ID and
   access tokens verified against the published JWKS after the timed window.
4. Memory: the server's resident set, now and at its peak (VmHWM), after all of the above.

CPU time is read from /proc per run: the server (its whole process tree), the clients (their own
os.times()) and the rest of the machine ("others"), and each server's refresh grants per CPU-second
of its own. Target: **emulator refresh throughput >= 1.0x the peer's** (the ratio of the medians
of the runs); on a 2-core machine whose cores the clients share, the per-CPU-second ratio shows
what the raw ratio cannot.

Exit status 0 once the figures are printed (--strict: 1 when the target is missed); 2 when the
benchmark could not run (npm or node missing, the install failed, a server did not start).
Everything runs on loopback, bounded in count and time, and every process it starts is stopped.
The client processes import this module (multiprocessing "spawn"): module-level imports are the
standard library's and bench_support's only.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import http.client
import json
import os
import queue
import secrets
import shlex
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from html.parser import HTMLParser
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit

from bench_support import (
    REPO,
    PipedProcesses,
    clean_env,
    machine_busy_seconds,
    process_cpu_seconds,
    process_tree,
    stop_process,
    verdict,
)

sys.path.insert(0, str(REPO))  # tests.support: the PKCE pair the emulator's bench uses too
from tests.support import pkce_pair  # noqa: E402 - after sys.path

PEER_DIR = Path(__file__).resolve().parent / "peer"
PEER_SERVER = PEER_DIR / "server.mjs"
PEER_PACKAGE = "oidc-provider"

REFRESH_RATIO_TARGET = 1.0
USERNAME = "AdeleV@contoso.onmicrosoft.com"
PASSWORD = "Passw0rd!"
USER_NAME = "Adele Vance"
EMULATOR_SCOPE = "User.Read offline_access openid profile"
PEER_SCOPE = "openid offline_access profile User.Read"
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"   # the emulator's access tokens' audience
PEER_RESOURCE = "urn:entra-bench:graph"                  # the peer's access tokens' audience
SERVER_START_SECONDS = 20
HTTP_TIMEOUT_SECONDS = 30
NPM_INSTALL_SECONDS = 300
SIGN_IN_PAGES = 8          # browser requests at most per sign-in
PHASE_SECONDS = 120        # any one sign-in phase, whatever the count


# ------------------------------------------------------------------------------------------------
# The peer's installation
# ------------------------------------------------------------------------------------------------

def wanted_peer_version() -> str:
    return json.loads((PEER_DIR / "package.json").read_text())["dependencies"][PEER_PACKAGE]


def installed_peer_version() -> str | None:
    manifest = PEER_DIR / "node_modules" / PEER_PACKAGE / "package.json"
    try:
        return str(json.loads(manifest.read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None


def ensure_peer_installed() -> str:
    """node and npm present, and oidc-provider at package.json's version in bench/peer/
    node_modules (installed now when missing); returns a line saying what runs. Raises
    SystemExit(2) with a clear message otherwise."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        missing = " and ".join(name for name, path in (("node", node), ("npm", npm))
                               if path is None)
        print(f"bench_peer: {missing} not found on PATH. The peer is node oidc-provider, "
              "installed with npm; install Node.js 20.19+ with npm (Debian: apt-get install "
              "nodejs npm) and run again.", file=sys.stderr)
        raise SystemExit(2)
    wanted = wanted_peer_version()
    if installed_peer_version() != wanted:
        command = [npm, "ci" if (PEER_DIR / "package-lock.json").exists() else "install",
                   "--no-audit", "--no-fund", "--omit=dev"]
        print(f"   installing {PEER_PACKAGE} {wanted} into {PEER_DIR / 'node_modules'} "
              f"({' '.join(command[1:])})", flush=True)
        try:
            done = subprocess.run(command, cwd=PEER_DIR, capture_output=True, text=True,
                                  timeout=NPM_INSTALL_SECONDS, env=clean_env())
        except subprocess.TimeoutExpired:
            print(f"bench_peer: npm did not finish in {NPM_INSTALL_SECONDS} s.", file=sys.stderr)
            raise SystemExit(2) from None
        if done.returncode != 0 or installed_peer_version() != wanted:
            print(f"bench_peer: npm could not install {PEER_PACKAGE} {wanted} "
                  f"(exit {done.returncode}):\n{done.stderr[-2000:]}", file=sys.stderr)
            raise SystemExit(2)
    version = subprocess.run([node, "--version"], capture_output=True, text=True,
                             timeout=30).stdout.strip()
    return f"node {version}, {PEER_PACKAGE} {wanted}"


# ------------------------------------------------------------------------------------------------
# Server processes
# ------------------------------------------------------------------------------------------------

@dataclass
class Side:
    """One server being compared, and what a client needs to sign in and refresh there."""

    name: str
    discovery_url: str
    cafile: str
    client_id: str
    client_secret: str
    redirect_uri: str
    scope: str
    access_audience: str
    authorize_extra: dict[str, str] = field(default_factory=dict)
    token_extra: dict[str, str] = field(default_factory=dict)


@dataclass
class StartedServer:
    side: Side
    process: subprocess.Popen[str]
    first_200_seconds: float
    discovery: dict[str, Any]

    def pids(self) -> list[int]:
        return process_tree(self.process.pid)

    def cpu_seconds(self, pids: list[int] | None = None) -> float:
        return sum(process_cpu_seconds(pid) for pid in pids or self.pids())

    def memory_mb(self) -> tuple[float, float]:
        """(VmRSS, VmHWM) in MB, summed over the process tree."""
        now = peak = 0.0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    name, _, value = line.partition(":")
                    if name == "VmRSS":
                        now += int(value.split()[0]) / 1024
                    elif name == "VmHWM":
                        peak += int(value.split()[0]) / 1024
        return now, peak

    def stop(self) -> None:
        stop_process(self.process)


def spawn_until_ready(command: list[str], name: str, workdir: Path) -> tuple[
        subprocess.Popen[str], str, float]:
    """Start `command`; returns (process, its "Ready:" line, perf_counter at spawn). Its other
    output goes to workdir/<name>.log. Fails after SERVER_START_SECONDS or when it exits."""
    log = (workdir / f"{name.split()[0]}.log").open("a")
    began = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True,
                               cwd=workdir, env=clean_env(), stdin=subprocess.DEVNULL)
    lines: queue.Queue[str] = queue.Queue()

    def drain() -> None:   # keeps reading after "Ready:", so the pipe never fills
        assert process.stdout is not None
        said_ready = False
        for line in process.stdout:
            if not said_ready and line.startswith("Ready:"):
                said_ready = True
                lines.put(line)
            else:
                log.write(line)
        if not said_ready:
            lines.put("")
        log.close()

    threading.Thread(target=drain, daemon=True).start()
    try:
        line = lines.get(timeout=SERVER_START_SECONDS)
    except queue.Empty:
        line = ""
    if not line:
        process.kill()
        process.wait()
        raise RuntimeError(f"{name} did not say it was ready (exit status {process.poll()}; "
                           f"log in {workdir})")
    return process, line, began


def https_get_json(url: str, cafile: str) -> tuple[int, Any]:
    parts = urlsplit(url)
    connection = http.client.HTTPSConnection(parts.hostname or "localhost", parts.port,
                                             timeout=HTTP_TIMEOUT_SECONDS,
                                             context=ssl.create_default_context(cafile=cafile))
    try:
        connection.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""))
        response = connection.getresponse()
        body = response.read()
        return response.status, json.loads(body) if response.status == 200 else None
    finally:
        connection.close()


def started(side: Side, process: subprocess.Popen[str], began: float) -> StartedServer:
    """Times the first 200 for the discovery document (the cold start's end)."""
    try:
        status, discovery = https_get_json(side.discovery_url, side.cafile)
        elapsed = time.perf_counter() - began
        if status != 200 or "token_endpoint" not in discovery:
            raise RuntimeError(f"{side.name}'s discovery document answered {status}")
    except BaseException:
        process.kill()
        process.wait()
        raise
    return StartedServer(side, process, elapsed, discovery)


def read_env_file(path: Path) -> dict[str, str]:
    settings = {}
    for line in path.read_text().splitlines():
        name, equals, value = line.partition("=")
        if equals and not line.startswith("#"):
            settings[name.strip()] = value.strip().strip('"')
    return settings


class Launcher:
    """Starts the emulator (its CLI) and the peer (node server.mjs) the same way."""

    def __init__(self, workdir: Path, emulator_args: list[str]) -> None:
        self.workdir = workdir
        self.state_dir = workdir / "state"
        self.cafile = str(self.state_dir / "tls" / "ca.pem")
        self.emulator_args = emulator_args
        self.settings: dict[str, str] = {}
        self.peer_config = workdir / "peer.json"

    def start_emulator(self) -> StartedServer:
        env_file = self.workdir / f"emulator-{secrets.token_hex(4)}.env"
        command = [sys.executable, "-m", "entra_emulator", "serve", "--port", "0",
                   "--state", str(self.state_dir), "--env-file", str(env_file),
                   *self.emulator_args]
        process, _, began = spawn_until_ready(command, "emulator", self.workdir)
        try:
            self.settings = read_env_file(env_file)
            side = self.emulator_side()
        except BaseException:
            process.kill()
            process.wait()
            raise
        return started(side, process, began)

    def emulator_side(self) -> Side:
        settings = self.settings
        return Side(name="emulator",
                    discovery_url=f"{settings['AUTHORITY']}/v2.0/.well-known/openid-configuration",
                    cafile=self.cafile, client_id=settings["CLIENT_ID"],
                    client_secret=settings["CLIENT_SECRET"],
                    redirect_uri=settings["REDIRECT_URI"], scope=EMULATOR_SCOPE,
                    access_audience=GRAPH_APP_ID,
                    token_extra={"scope": EMULATOR_SCOPE, "client_info": "1"})

    def write_peer_config(self) -> None:
        """The peer gets the emulator's client (id, secret, redirect URI), user and TLS files."""
        tls = self.state_dir / "tls"
        config = {"host": "localhost", "port": 0, "cert": str(tls / "server.pem"),
                  "key": str(tls / "server-key.pem"),
                  "signing_key": str(self.workdir / "peer-signing-key.json"),
                  "client": {"client_id": self.settings["CLIENT_ID"],
                             "client_secret": self.settings["CLIENT_SECRET"],
                             "redirect_uri": self.settings["REDIRECT_URI"]},
                  "user": {"id": secrets.token_hex(16), "username": USERNAME,
                           "password": PASSWORD, "name": USER_NAME},
                  "resource": PEER_RESOURCE}
        fd = os.open(self.peer_config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            json.dump(config, file)

    def start_peer(self) -> StartedServer:
        node = shutil.which("node") or "node"
        process, line, began = spawn_until_ready([node, str(PEER_SERVER), str(self.peer_config)],
                                                 "node oidc-provider", self.workdir)
        base = line.split()[1].rstrip(".")
        side = Side(name="node oidc-provider",
                    discovery_url=f"{base}/.well-known/openid-configuration", cafile=self.cafile,
                    client_id=self.settings["CLIENT_ID"],
                    client_secret=self.settings["CLIENT_SECRET"],
                    redirect_uri=self.settings["REDIRECT_URI"], scope=PEER_SCOPE,
                    access_audience=PEER_RESOURCE,
                    # OpenID Connect Core 11: offline_access is honoured with prompt=consent only;
                    # the peer's sign-in page grants the consent with the sign-in (no extra page).
                    authorize_extra={"prompt": "consent"},
                    token_extra={"scope": PEER_SCOPE})
        return started(side, process, began)

    def start(self, which: str) -> StartedServer:
        return self.start_emulator() if which == "emulator" else self.start_peer()


# ------------------------------------------------------------------------------------------------
# Token checks (the parent's sign-ins and the clients' samples)
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TokenCheck:
    """What an issued token must be: signed by a published RS256 2048-bit RSA key, for the
    audience, (ID token) from the issuer."""

    jwks: dict[str, Any]
    issuer: str
    client_id: str
    access_audience: str


class TokenVerifier:
    def __init__(self, check: TokenCheck) -> None:
        import jwt

        self._jwt = jwt
        self.check = check
        self.keys = {}
        for entry in check.jwks.get("keys", []):
            if entry.get("kty") == "RSA" and entry.get("kid"):
                self.keys[entry["kid"]] = jwt.PyJWK.from_dict(entry)
        if not self.keys:
            raise RuntimeError("the JWKS publishes no RSA key with a kid")

    def verify(self, body: dict[str, Any], nonce: str | None = None) -> int:
        """Verify the ID and access tokens of a token response; returns 2 (tokens verified)."""
        jwt = self._jwt
        for name, audience, issuer in (("id_token", self.check.client_id, self.check.issuer),
                                       ("access_token", self.check.access_audience, None)):
            try:
                header = jwt.get_unverified_header(body[name])
                key = self.keys.get(header.get("kid", ""))
                if header.get("alg") != "RS256" or key is None:
                    raise RuntimeError(f"{name}: alg {header.get('alg')}, kid not published")
                if key.key.key_size != 2048:
                    raise RuntimeError(f"{name}: signed by a {key.key.key_size}-bit key")
                claims = jwt.decode(body[name], key.key, algorithms=["RS256"],
                                    audience=audience, issuer=issuer, leeway=60)
            except jwt.PyJWTError as problem:
                raise RuntimeError(f"{name} does not verify: {problem}") from None
            if name == "id_token" and nonce is not None and claims.get("nonce") != nonce:
                raise RuntimeError("id_token: the nonce is not the one sent")
        return 2


def token_check(server: StartedServer) -> TokenCheck:
    status, jwks = https_get_json(server.discovery["jwks_uri"], server.side.cafile)
    if status != 200:
        raise RuntimeError(f"{server.side.name}'s JWKS answered {status}")
    return TokenCheck(jwks=jwks, issuer=server.discovery["issuer"],
                      client_id=server.side.client_id,
                      access_audience=server.side.access_audience)


# ------------------------------------------------------------------------------------------------
# Sign-in: one scripted browser and one web app for both servers
# ------------------------------------------------------------------------------------------------

class FormParser(HTMLParser):
    """The forms of a page: action, inputs (name -> value) and submit buttons (name, value)."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "form":
            self.forms.append({"action": values.get("action", ""), "inputs": {},
                               "buttons": []})
        elif self.forms and tag in ("input", "button") and values.get("name"):
            kind = values.get("type", "submit" if tag == "button" else "text").lower()
            if kind == "submit":
                self.forms[-1]["buttons"].append((values["name"], values.get("value", "")))
            else:
                self.forms[-1]["inputs"][values["name"]] = values.get("value", "")


class SignInDriver:
    """A browser (requests.Session, cookies cleared before each sign-in) and a web app (a
    keep-alive requests.Session to the token endpoint)."""

    def __init__(self, server: StartedServer) -> None:
        import requests

        self.side = server.side
        self.discovery = server.discovery
        self.browser = requests.Session()
        self.app = requests.Session()
        for session in (self.browser, self.app):
            session.verify = server.side.cafile
            session.trust_env = False   # else REQUESTS_CA_BUNDLE would replace `verify`
        self.requests_per_sign_in = 0

    def sign_in(self) -> tuple[dict[str, Any], str]:
        """One full sign-in; returns (the token response, the nonce sent)."""
        side = self.side
        self.browser.cookies.clear()
        verifier, challenge = pkce_pair()
        state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
        query = {"client_id": side.client_id, "response_type": "code",
                 "redirect_uri": side.redirect_uri, "scope": side.scope, "state": state,
                 "nonce": nonce, "code_challenge": challenge, "code_challenge_method": "S256",
                 **side.authorize_extra}
        url = f"{self.discovery['authorization_endpoint']}?{urlencode(query)}"
        response = self.browser.get(url, allow_redirects=False, timeout=HTTP_TIMEOUT_SECONDS)
        requests_made, params = 1, None
        while params is None:
            if requests_made > SIGN_IN_PAGES:
                raise RuntimeError(f"{side.name}: no code after {SIGN_IN_PAGES} pages")
            if response.is_redirect:
                location = urljoin(response.url, response.headers["Location"])
                if location.startswith(side.redirect_uri):
                    params = dict(parse_qsl(urlsplit(location).query))
                    break
                response = self.browser.get(location, allow_redirects=False,
                                            timeout=HTTP_TIMEOUT_SECONDS)
                requests_made += 1
                continue
            page = FormParser()
            page.feed(response.text)
            if response.status_code != 200 or not page.forms:
                raise RuntimeError(f"{side.name}'s sign-in page answered "
                                   f"{response.status_code}: {response.text[:300]!r}")
            form = page.forms[0]
            target = urljoin(response.url, form["action"])
            if target.startswith(side.redirect_uri):   # a form_post answer
                params = dict(form["inputs"])
                break
            if "username" in form["inputs"] and "password" in form["inputs"]:
                data = {**form["inputs"], "username": USERNAME, "password": PASSWORD}
            elif ("decision", "accept") in form["buttons"]:
                data = {**form["inputs"], "decision": "accept"}
            else:
                raise RuntimeError(f"{side.name}: a page with an unknown form ({target})")
            response = self.browser.post(target, data=data, allow_redirects=False,
                                         timeout=HTTP_TIMEOUT_SECONDS)
            requests_made += 1
        if params.get("state") != state or "code" not in params:
            raise RuntimeError(f"{side.name}: the sign-in ended without a code: "
                               f"{sorted(params)} {params.get('error_description', '')[:200]}")
        response = self.app.post(self.discovery["token_endpoint"], timeout=HTTP_TIMEOUT_SECONDS,
                                 data={"client_id": side.client_id,
                                       "client_secret": side.client_secret,
                                       "grant_type": "authorization_code", "code": params["code"],
                                       "redirect_uri": side.redirect_uri,
                                       "code_verifier": verifier, **side.token_extra})
        body = response.json()
        if response.status_code != 200 or not {"access_token", "id_token",
                                                "refresh_token"} <= set(body):
            raise RuntimeError(f"{side.name}: the code redemption answered "
                               f"{response.status_code}: {str(body)[:200]}")
        self.requests_per_sign_in = requests_made + 1
        return body, nonce

    def close(self) -> None:
        self.browser.close()
        self.app.close()


# ------------------------------------------------------------------------------------------------
# Refresh throughput: client processes, the same for both servers
# ------------------------------------------------------------------------------------------------

def client_process(commands: Connection) -> None:
    """One client. Per round the parent sends ("round", spec); the client connects (one
    keep-alive TLS connection), warms up and answers "ready"; the parent sends (start, seconds);
    the client posts until the end, answers (count, CPU seconds), then on "verify" checks the
    sampled answers' tokens against the JWKS and answers how many it verified. None stops it."""
    connection: http.client.HTTPSConnection | None = None
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    try:
        while (order := commands.recv()) is not None:
            _, spec = order
            form = dict(spec["form"])
            parts = urlsplit(spec["token_endpoint"])
            connection = http.client.HTTPSConnection(
                parts.hostname or "localhost", parts.port, timeout=HTTP_TIMEOUT_SECONDS,
                context=ssl.create_default_context(cafile=spec["cafile"]))
            samples: list[dict[str, Any]] = []

            def post(keep: bool, form: dict[str, str] = form, path: str = parts.path,
                     connection: http.client.HTTPSConnection = connection,
                     samples: list[dict[str, Any]] = samples) -> None:
                connection.request("POST", path, urlencode(form), headers)
                response = connection.getresponse()
                body = json.loads(response.read())
                if response.status != 200:
                    raise RuntimeError(f"{response.status} "
                                       f"{str(body.get('error_description', body))[:200]}")
                if response.will_close:
                    raise RuntimeError("the server closed the keep-alive connection")
                if not {"access_token", "id_token", "refresh_token"} <= set(body):
                    raise RuntimeError(f"a refresh answer without the three tokens: "
                                       f"{sorted(body)}")
                if body["refresh_token"] == form["refresh_token"]:
                    raise RuntimeError("the refresh token was not rotated")
                form["refresh_token"] = body["refresh_token"]
                if keep:
                    samples.append(body)

            for _ in range(spec["warmup"]):
                post(False)
            commands.send("ready")
            start_at, duration = commands.recv()
            while time.monotonic() < start_at:
                time.sleep(0.0005)
            cpu_before = sum(os.times()[:2])
            end_at = start_at + duration
            count, every = 0, spec["sample_every"]
            while time.monotonic() < end_at:
                post(count % every == 0)
                count += 1
            commands.send((count, sum(os.times()[:2]) - cpu_before))
            connection.close()
            connection = None
            if commands.recv() != "verify":
                raise RuntimeError("the parent did not ask for the verification")
            verifier = TokenVerifier(TokenCheck(**spec["check"]))
            commands.send(sum(verifier.verify(body) for body in samples))
    except Exception as problem:  # reported to the parent, which stops the benchmark
        with contextlib.suppress(OSError):
            commands.send(f"error: {problem!r}")
    finally:
        if connection is not None:
            connection.close()


@dataclass
class Round:
    requests: int
    seconds: float
    server_cpu_seconds: float
    client_cpu_seconds: float
    own_cpu_seconds: float          # this (driving) process
    machine_busy_seconds: float
    tokens_verified: int = 0

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    @property
    def per_server_cpu_second(self) -> float:
        return self.requests / self.server_cpu_seconds if self.server_cpu_seconds else 0.0

    def cores(self) -> tuple[float, float, float]:
        """(server, clients, others) cores used during the window."""
        others = (self.machine_busy_seconds - self.server_cpu_seconds - self.client_cpu_seconds
                  - self.own_cpu_seconds)
        return (self.server_cpu_seconds / self.seconds, self.client_cpu_seconds / self.seconds,
                max(others, 0.0) / self.seconds)


class ClientPool(PipedProcesses):
    """Client processes, started once and driven round by round (any server, any tokens)."""

    def __init__(self, clients: int) -> None:
        super().__init__(client_process, [() for _ in range(clients)])

    def run_round(self, server: StartedServer, forms: list[dict[str, str]], check: TokenCheck,
                  args: argparse.Namespace) -> Round:
        for pipe, form in zip(self.pipes, forms, strict=True):
            pipe.send(("round", {"token_endpoint": server.discovery["token_endpoint"],
                                 "cafile": server.side.cafile, "form": form,
                                 "warmup": args.warmup, "sample_every": args.sample_every,
                                 "check": dataclasses.asdict(check)}))
        self.answers()   # all connected and warmed up
        pids = server.pids()
        self.start_together(args.seconds)
        server_before, busy_before = server.cpu_seconds(pids), machine_busy_seconds()
        own_before = sum(os.times()[:2])
        answers = self.answers()
        result = Round(requests=sum(count for count, _ in answers), seconds=args.seconds,
                       server_cpu_seconds=server.cpu_seconds(pids) - server_before,
                       client_cpu_seconds=sum(cpu for _, cpu in answers),
                       own_cpu_seconds=sum(os.times()[:2]) - own_before,
                       machine_busy_seconds=machine_busy_seconds() - busy_before)
        self.send_all("verify")
        result.tokens_verified = sum(self.answers())
        return result


# ------------------------------------------------------------------------------------------------
# One run of one server
# ------------------------------------------------------------------------------------------------

@dataclass
class SideRun:
    name: str
    cold_starts: list[float]
    sign_in_ms: list[float]
    sign_in_requests: int
    sign_in_cores: tuple[float, float, float]      # server, the signing-in client, others
    sign_in_tokens_verified: int
    refresh: Round
    rss_mb: float
    peak_rss_mb: float


def measure_side(launcher: Launcher, which: str, pool: ClientPool,
                 args: argparse.Namespace, deadline: float) -> SideRun:
    cold_starts = []
    for _ in range(args.starts - 1):
        server = launcher.start(which)
        server.stop()
        cold_starts.append(server.first_200_seconds)
    server = launcher.start(which)
    try:
        cold_starts.append(server.first_200_seconds)
        check = token_check(server)
        verifier = TokenVerifier(check)
        driver = SignInDriver(server)
        try:
            for _ in range(args.warmup_sign_ins):
                driver.sign_in()
            bodies, sign_in_ms = [], []
            pids = server.pids()
            server_before, own_before = server.cpu_seconds(pids), sum(os.times()[:2])
            busy_before, wall_before = machine_busy_seconds(), time.perf_counter()
            phase_end = time.monotonic() + PHASE_SECONDS
            for _ in range(args.sign_ins):
                began = time.perf_counter()
                bodies.append(driver.sign_in())
                sign_in_ms.append((time.perf_counter() - began) * 1000)
                if time.monotonic() > min(phase_end, deadline):
                    break
            wall = time.perf_counter() - wall_before
            server_cpu = server.cpu_seconds(pids) - server_before
            own_cpu = sum(os.times()[:2]) - own_before
            others = max(machine_busy_seconds() - busy_before - server_cpu - own_cpu, 0.0)
            sign_in_cores = (server_cpu / wall, own_cpu / wall, others / wall)
            verified = sum(verifier.verify(body, nonce) for body, nonce in bodies)
            forms = [{"client_id": server.side.client_id,
                      "client_secret": server.side.client_secret,
                      "grant_type": "refresh_token",
                      "refresh_token": driver.sign_in()[0]["refresh_token"],
                      **server.side.token_extra} for _ in range(args.clients)]
            requests_per_sign_in = driver.requests_per_sign_in
        finally:
            driver.close()
        if time.monotonic() > deadline:
            raise RuntimeError(f"over the time limit ({args.max_seconds:g} s)")
        refresh = pool.run_round(server, forms, check, args)
        rss, peak = server.memory_mb()
    finally:
        server.stop()
    return SideRun(server.side.name, cold_starts, sign_in_ms, requests_per_sign_in,
                   sign_in_cores, verified, refresh, rss, peak)


def first_starts(launcher: Launcher) -> dict[str, float]:
    """The very first start of each (the emulator makes its CA, TLS certificate and signing key;
    the peer its signing key), which also gives the peer the emulator's settings."""
    emulator = launcher.start_emulator()
    emulator.stop()
    launcher.write_peer_config()
    peer = launcher.start_peer()
    peer.stop()
    return {"emulator": emulator.first_200_seconds, "peer": peer.first_200_seconds}


# ------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------

def spread(values: list[float], fmt: str) -> str:
    return f"{format(min(values), fmt)}-{format(max(values), fmt)}"


def print_run(number: int, runs: dict[str, SideRun], order: list[str]) -> None:
    print(f"\n   run {number} ({' then '.join(runs[w].name for w in order)})")
    print(f"   {'':<20}{'refresh':>9}{'per srv':>9}{'cores: server':>15}{'clients':>9}"
          f"{'others':>8}{'sign-in':>9}{'cold':>8}{'peak RSS':>10}{'tokens':>8}")
    print(f"   {'':<20}{'req/s':>9}{'CPU-s':>9}{'':>15}{'':>9}{'':>8}{'ms':>9}{'s':>8}"
          f"{'MB':>10}{'checked':>8}")
    for which in ("emulator", "peer"):
        run = runs[which]
        server, clients, others = run.refresh.cores()
        print(f"   {run.name:<20}{run.refresh.rate:>9.0f}{run.refresh.per_server_cpu_second:>9.0f}"
              f"{server:>15.2f}{clients:>9.2f}{others:>8.2f}"
              f"{statistics.median(run.sign_in_ms):>9.2f}{statistics.median(run.cold_starts):>8.3f}"
              f"{run.peak_rss_mb:>10.1f}"
              f"{run.refresh.tokens_verified + run.sign_in_tokens_verified:>8}")
    ratio = runs["emulator"].refresh.rate / runs["peer"].refresh.rate
    per_cpu = (runs["emulator"].refresh.per_server_cpu_second
               / runs["peer"].refresh.per_server_cpu_second)
    print(f"   emulator / node: refresh x{ratio:.2f}, per server CPU-second x{per_cpu:.2f}",
          flush=True)


def report(first: dict[str, float], runs: list[dict[str, SideRun]],
           args: argparse.Namespace) -> list[str]:
    """The summary over the runs; returns the targets missed."""
    median = statistics.median
    emulator = [run["emulator"] for run in runs]
    peer = [run["peer"] for run in runs]
    missed = []

    def row(label: str, values: tuple[list[float], list[float]], fmt: str,
            note: str = "") -> float:
        ours, theirs = values
        ratio = median(ours) / median(theirs)
        print(f"   {label:<34}{format(median(ours), fmt):>9} ({spread(ours, fmt):>11})"
              f"{format(median(theirs), fmt):>9} ({spread(theirs, fmt):>11})   x{ratio:.2f}{note}")
        return ratio

    print(f"\nSummary: medians of {len(runs)} interleaved runs (range of the runs); "
          "ratio = emulator / node")
    print(f"   {'':<34}{'emulator':>23}{'node oidc-provider':>23}   ratio")
    rates = ([r.refresh.rate for r in emulator], [r.refresh.rate for r in peer])
    ratio = row(f"refresh grant, {args.clients} clients (req/s)", rates, ".0f")
    per_cpu = row("refresh per server CPU-second", (
        [r.refresh.per_server_cpu_second for r in emulator],
        [r.refresh.per_server_cpu_second for r in peer]), ".0f")
    server_ms = ([1000 / r.refresh.per_server_cpu_second for r in emulator],
                 [1000 / r.refresh.per_server_cpu_second for r in peer])
    row("server CPU per refresh (ms)", server_ms, ".3f")
    client_ms = ([r.refresh.client_cpu_seconds / r.refresh.requests * 1000 for r in emulator],
                 [r.refresh.client_cpu_seconds / r.refresh.requests * 1000 for r in peer])
    row("clients' CPU per refresh (ms)", client_ms, ".3f")
    row("full sign-in, median (ms)", ([median(r.sign_in_ms) for r in emulator],
                                      [median(r.sign_in_ms) for r in peer]), ".2f")
    row("cold start to first 200 (s)", ([median(r.cold_starts) for r in emulator],
                                        [median(r.cold_starts) for r in peer]), ".3f")
    row("peak RSS after the load (MB)", ([r.peak_rss_mb for r in emulator],
                                         [r.peak_rss_mb for r in peer]), ".1f")
    row("RSS after the load (MB)", ([r.rss_mb for r in emulator], [r.rss_mb for r in peer]), ".1f")
    print(f"   very first start (makes keys)     {first['emulator']:>9.3f}"
          f"{'':>14}{first['peer']:>9.3f}")

    print("\n   CPU split during the refresh windows (cores of "
          f"{os.cpu_count()}: server / clients / others):")
    for number, run in enumerate(runs, 1):
        parts = []
        for which in ("emulator", "peer"):
            server, clients, others = run[which].refresh.cores()
            parts.append(f"{run[which].name} {server:.2f} / {clients:.2f} / {others:.2f}")
        print(f"   run {number}: " + ";  ".join(parts))
    print("   during the sign-ins (server / the signing-in client / others): " + ";  ".join(
        f"{side[0].name} " + " / ".join(f"{median(r.sign_in_cores[i] for r in side):.2f}"
                                        for i in range(3)) for side in (emulator, peer)))
    print(f"   a sign-in is {emulator[0].sign_in_requests} requests on the emulator "
          f"(authorize page, form post -> code, token) and {peer[0].sign_in_requests} on node "
          "(/auth -> 303, sign-in page, form post -> 303, /auth resumed -> code, token)")

    verified = sum(r.refresh.tokens_verified + r.sign_in_tokens_verified
                   for r in (*emulator, *peer))
    print(f"   tokens verified against the published JWKS (RS256, RSA-2048, audience, issuer): "
          f"{verified} (every sign-in's, and 1 refresh answer in {args.sample_every}); none "
          "failed")

    ok = ratio >= REFRESH_RATIO_TARGET
    print(f"\n   refresh throughput: emulator x{ratio:.2f} of node's (runs: "
          + ", ".join(f"x{r['emulator'].refresh.rate / r['peer'].refresh.rate:.2f}"
                      for r in runs)
          + f")   target >= {REFRESH_RATIO_TARGET:.1f}  {verdict(ok)}")
    print(f"   per server CPU-second: emulator x{per_cpu:.2f} of node's (runs: "
          + ", ".join(f"x{r['emulator'].refresh.per_server_cpu_second / r['peer'].refresh.per_server_cpu_second:.2f}"  # noqa: E501
                      for r in runs)
          + f")  {verdict(per_cpu >= REFRESH_RATIO_TARGET)}")
    if not ok:
        missed.append(f"refresh throughput x{ratio:.2f} of node's < {REFRESH_RATIO_TARGET:.1f}")
    return missed


# ------------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 when the target is missed (default: report, exit 0)")
    parser.add_argument("--runs", type=int, default=3, help="interleaved runs")
    parser.add_argument("--starts", type=int, default=3, help="cold starts per server per run")
    parser.add_argument("--clients", type=int, default=8, help="refresh client processes")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="refresh window per server per run")
    parser.add_argument("--warmup", type=int, default=30,
                        help="warm-up refreshes per client before each window")
    parser.add_argument("--sample-every", type=int, default=16,
                        help="verify the tokens of every N-th refresh answer")
    parser.add_argument("--sign-ins", type=int, default=30,
                        help="timed sign-ins per server per run")
    parser.add_argument("--warmup-sign-ins", type=int, default=5)
    parser.add_argument("--emulator-args", default="",
                        help="more arguments for `entra-emulator serve`, e.g. '--workers 2'")
    parser.add_argument("--max-seconds", type=float, default=900,
                        help="give up past this (the phases are bounded too)")
    args = parser.parse_args(argv)
    if min(args.runs, args.starts, args.clients, args.sign_ins, args.sample_every) < 1 \
            or args.seconds <= 0 or min(args.warmup, args.warmup_sign_ins) < 0:
        parser.error("counts must be at least 1, --seconds positive, warm-ups not negative")
    args.seconds = min(args.seconds, 60.0)   # bounded, whatever is asked
    args.runs = min(args.runs, 10)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.monotonic()
    deadline = began + args.max_seconds
    print(f"Emulator vs node oidc-provider: {os.cpu_count()} CPUs, Python "
          f"{sys.version.split()[0]}", flush=True)
    try:
        peer_version = ensure_peer_installed()
    except SystemExit as exit_:
        return int(exit_.code or 2)
    workdir = Path(tempfile.mkdtemp(prefix="bench-peer-"))
    print(f"   {peer_version}; emulator: {sys.executable} -m entra_emulator serve "
          f"{args.emulator_args}".rstrip() + f"; logs in {workdir}", flush=True)
    launcher = Launcher(workdir, shlex.split(args.emulator_args))
    pool: ClientPool | None = None
    runs: list[dict[str, SideRun]] = []
    try:
        first = first_starts(launcher)
        pool = ClientPool(args.clients)
        for number in range(1, args.runs + 1):
            order = ["emulator", "peer"] if number % 2 else ["peer", "emulator"]
            results = {}
            for which in order:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"over the time limit ({args.max_seconds:g} s)")
                results[which] = measure_side(launcher, which, pool, args, deadline)
            runs.append(results)
            print_run(number, results, order)
    except (RuntimeError, OSError, subprocess.SubprocessError, ValueError, KeyError) as problem:
        print(f"The benchmark could not run: {problem!r} (logs in {workdir})", file=sys.stderr)
        return 2
    finally:
        if pool is not None:
            pool.close()
    missed = report(first, runs, args)
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        print("   (PYTHONDONTWRITEBYTECODE is set: every emulator start compiles its modules, "
              "which its cold start shows)")
    shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nTotal {time.monotonic() - began:.0f} s.")
    if missed:
        print("Missed: " + "; ".join(missed))
        return 1 if args.strict else 0
    print("Target met.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
