"""The production command refuses to start several workers without a shared SECRET_KEY: each
would draw its own random key, and users would be signed out at random."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))


def check_config(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k != "SECRET_KEY"}
    # From an empty folder: no .env there to supply a SECRET_KEY.
    return subprocess.run([GUNICORN, "-c", str(ROOT / "gunicorn.conf.py"), "--chdir", str(ROOT),
                           "--check-config"], cwd=tmp_path, env={**base, **env},
                          capture_output=True, text=True, timeout=60)


def test_several_workers_without_secret_key_refuse_to_start(tmp_path: Path) -> None:
    result = check_config(tmp_path, GUNICORN_WORKERS="2")
    assert result.returncode != 0
    assert "Set SECRET_KEY" in result.stdout + result.stderr


def test_with_secret_key_the_configuration_loads(tmp_path: Path) -> None:
    result = check_config(tmp_path, GUNICORN_WORKERS="2", SECRET_KEY="s" * 32)
    assert result.returncode == 0, result.stdout + result.stderr
