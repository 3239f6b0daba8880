"""`make run`: the web app on http://localhost:5000, on the embedded emulator unless `.env` names a
real tenant.

This is the one place (besides the tests) that knows both packages: it starts the emulator in this
process, then runs the web app as a child process wired to it by environment variables only, so
the web app reaches the emulator over HTTP exactly as it would reach Entra.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

from dotenv import dotenv_values

ROOT = Path(__file__).resolve().parent
# Keys, certificates and consents survive restarts here (git-ignored); tests point it elsewhere.
STATE_DIR = Path(os.environ.get("EMULATOR_STATE_DIR") or ROOT / ".emulator")
WEBAPP_HOST = "localhost"
WEBAPP_PORT = 5000
LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}


def placeholders(env: dict[str, str | None]) -> list[str]:
    """The settings still holding a `<…>` placeholder copied from .env.sample."""
    return sorted(k for k, v in env.items() if v and "<" in v and ">" in v)


def real_tenant_settings(env: dict[str, str | None]) -> bool:
    """True when the settings point at a real identity provider (not the emulator, not a
    placeholder copied from .env.sample)."""
    authority = env.get("OIDC_AUTHORITY") or env.get("AUTHORITY") or ""
    client_id = env.get("CLIENT_ID") or ""
    if not authority or not client_id or placeholders(
            {"AUTHORITY": authority, "CLIENT_ID": client_id}):
        return False
    return (urlsplit(authority).hostname or "") not in LOOPBACK_HOSTS


def settings() -> dict[str, str | None]:
    """What the web app will see: .env, overridden by the process environment (as python-dotenv
    does in the web app)."""
    return {**dotenv_values(ROOT / ".env"), **os.environ}


def persistent_secret_key() -> str:
    """One Flask SECRET_KEY per checkout, so sessions survive a restart of `make run`."""
    path = STATE_DIR / "flask-secret-key"
    if not path.exists():
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


def run_webapp(extra_env: dict[str, str]) -> int:
    """The quickstart's own command, `flask run --host=localhost --port=5000`, as a child."""
    env = {**os.environ, **extra_env}
    command = [sys.executable, "-m", "flask", "--app", "wsgi", "run",
               f"--host={WEBAPP_HOST}", f"--port={WEBAPP_PORT}"]
    child = subprocess.Popen(command, cwd=ROOT, env=env)  # noqa: S603 - fixed argv
    try:
        return child.wait()
    except KeyboardInterrupt:
        # At a terminal Ctrl-C reaches the child too; a signal sent to this process alone
        # (a process manager, a test) does not, so pass it on.
        child.send_signal(signal.SIGINT)
        return 130
    finally:
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def main() -> int:
    # SIGTERM (e.g. from a process manager) ends both servers as Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    env = settings()
    if real_tenant_settings(env):
        provider = env.get("OIDC_AUTHORITY") or env.get("AUTHORITY")
        print(f"Using the identity provider from .env: {provider}")
        return run_webapp({})

    unset = placeholders(env)
    if unset:
        # Named, never silently taken for settings: the emulator stands in for all of them.
        print(f"These settings in .env still hold .env.sample's placeholders, so they count as "
              f"unset: {', '.join(unset)}. Using the embedded emulator instead; fill them in to "
              "use your own tenant.")
    from entra_emulator.server import EmulatorServer, describe, env_settings

    emu = EmulatorServer(state_dir=STATE_DIR, https_port=8443, http_port=8080)
    try:
        emu.start()
    except OSError as exc:
        print(f"Cannot start the emulator on ports 8443/8080: {exc}", file=sys.stderr)
        return 1
    try:
        wiring = env_settings(emu)
        print(describe(emu, wiring))
        print(f"\n  Open http://{WEBAPP_HOST}:{WEBAPP_PORT} and sign in as a sample user. "
              "Ctrl-C stops both.\n", flush=True)
        return run_webapp({
            **wiring,
            "SECRET_KEY": env.get("SECRET_KEY") or persistent_secret_key(),
        })
    finally:
        emu.stop()


if __name__ == "__main__":
    sys.exit(main())
