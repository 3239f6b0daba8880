"""What the benchmarks share: CPU time from Linux /proc, the verdict word, the scripted browser
for the emulator's sign-in pages, a clean environment for the processes they start, and a
memory-only redis-server. Imported as a sibling module (the benchmarks run as
`python bench/<name>.py`, and gunicorn gets `--pythonpath bench`)."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def process_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) the process used so far; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_pids(parent: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                # Field 4 of /proc/PID/stat, counted after the parenthesised command name.
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == parent:
                    children.append(int(entry.name))
    return children


def process_tree(pid: int) -> list[int]:
    """The process and its descendants (the emulator may run worker processes)."""
    tree, pending = [], [pid]
    while pending and len(tree) < 256:
        current = pending.pop()
        tree.append(current)
        pending.extend(child_pids(current))
    return tree


def machine_busy_seconds() -> float:
    """CPU time used so far by everything on the machine, all cores (/proc/stat)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def load_sign_in_driver() -> Callable[..., Any]:
    """`entra_emulator.testing.browser_sign_in`: the scripted browser for the emulator's pages."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from tests.support import browser_sign_in

    return browser_sign_in


# ------------------------------------------------------------------------------------------------
# A clean environment for the processes a benchmark starts
# ------------------------------------------------------------------------------------------------

# What a child process needs from this one to run at all; every setting the app reads is given
# explicitly instead (never the developer's shell or .env: a benchmark measures what it says).
# PYTHONDONTWRITEBYTECODE: how the machine runs Python (bench_emulator's cold start reports it).
PASSED_THROUGH = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT",
                  "PYTHONDONTWRITEBYTECODE")


def stop_process(process: subprocess.Popen) -> None:
    """SIGTERM (the servers stop cleanly on it), then SIGKILL after 10 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def clean_env(**settings: str) -> dict[str, str]:
    """The environment of a child process: PASSED_THROUGH from this one, then `settings`."""
    env = {name: os.environ[name] for name in PASSED_THROUGH if name in os.environ}
    return {**env, **settings}


# ------------------------------------------------------------------------------------------------
# redis-server, memory only, on a free loopback port
# ------------------------------------------------------------------------------------------------

REDIS_STARTUP_SECONDS = 20


class RedisServer:
    """redis-server on a free loopback port, in its own folder, nothing persisted; stopped by its
    own pid. `cpu_seconds()` is what it used so far (a Redis session store's share of a page)."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (Debian: apt-get install "
                               "redis-server; `make system-deps` does it)")
        directory.mkdir(parents=True, exist_ok=True)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(directory),
             "--save", "", "--appendonly", "no", "--daemonize", "no",
             "--logfile", str(directory / "redis.log")],
            cwd=directory, env=clean_env(), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + REDIS_STARTUP_SECONDS
        while not self._answers():
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode} "
                                   f"(log: {directory / 'redis.log'})")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer in {REDIS_STARTUP_SECONDS} s")
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as connection:
                connection.sendall(b"PING\r\n")
                return connection.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def keys(self) -> int:
        """How many keys Redis holds (DBSIZE of database 0)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as connection:
            connection.sendall(b"DBSIZE\r\n")
            return int(connection.recv(64).strip().lstrip(b":"))

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.process.pid)

    def stop(self) -> None:
        stop_process(self.process)


# ------------------------------------------------------------------------------------------------
# Client processes driven over pipes (the throughput benchmarks' clients)
# ------------------------------------------------------------------------------------------------

CLIENT_ANSWER_SECONDS = 60


class PipedProcesses:
    """Processes ("spawn": they import the benchmark afresh) each running `target(*args,
    pipe)`, driven by messages over their pipes."""

    def __init__(self, target: Callable[..., None], args_per_process: list[tuple]) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipes: list[Any] = []
        self.processes: list[Any] = []
        for args in args_per_process:
            ours, theirs = context.Pipe()
            process = context.Process(target=target, args=(*args, theirs), daemon=True)
            process.start()
            theirs.close()
            self.pipes.append(ours)
            self.processes.append(process)

    def send_all(self, message: Any) -> None:
        for pipe in self.pipes:
            pipe.send(message)

    def answers(self) -> list[Any]:
        """One answer from each process; a process that fails says "error: ..."."""
        answers = []
        for pipe in self.pipes:
            if not pipe.poll(CLIENT_ANSWER_SECONDS):
                raise RuntimeError("a client process did not answer")
            answer = pipe.recv()
            if isinstance(answer, str) and answer.startswith("error"):
                raise RuntimeError(f"a client failed: {answer}")
            answers.append(answer)
        return answers

    def start_together(self, seconds: float) -> None:
        """Tell every process to run a `seconds` window from one instant; return at it."""
        start_at = time.monotonic() + 0.05
        self.send_all((start_at, seconds))
        while time.monotonic() < start_at:
            time.sleep(0.0005)

    def close(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send(None)
        for process in self.processes:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
                process.join(timeout=5)
