"""What the benchmarks share: CPU time from Linux /proc, the verdict word, and the scripted
browser for the emulator's sign-in pages. Imported as a sibling module (the benchmarks run as
`python bench/<name>.py`, and gunicorn gets `--pythonpath bench`)."""

from __future__ import annotations

import contextlib
import os
import sys
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


def machine_busy_seconds() -> float:
    """CPU time used so far by everything on the machine, all cores (/proc/stat)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def load_sign_in_driver() -> Callable[..., Any]:
    """tests/conftest.py's `browser_sign_in`: the scripted browser for the emulator's pages."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from tests.conftest import browser_sign_in

    return browser_sign_in
