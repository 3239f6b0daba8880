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
TODO_API_PORT = 5001
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


def run_apps(extra_env: dict[str, str], with_todo_api: bool) -> int:
    """The quickstart's own command, `flask run --host=localhost --port=5000`, as a child, and
    the To-do API beside it on port 5001 (when it is registered)."""
    env = {**os.environ, **extra_env}
    todo = None
    if with_todo_api:
        todo = subprocess.Popen(  # noqa: S603 - fixed argv
            [sys.executable, "-m", "flask", "--app", "todo_api", "run",
             f"--host={WEBAPP_HOST}", f"--port={TODO_API_PORT}"], cwd=ROOT, env=env)
    child = subprocess.Popen(  # noqa: S603 - fixed argv
        [sys.executable, "-m", "flask", "--app", "wsgi", "run", f"--host={WEBAPP_HOST}",
         f"--port={WEBAPP_PORT}"], cwd=ROOT, env=env)
    try:
        return child.wait()
    except KeyboardInterrupt:
        return 130
    finally:
        # At a terminal Ctrl-C reaches the children too; a signal sent to this process alone
        # (a process manager, a test) does not, so pass it on to those still running, once.
        for process in (child, todo):
            if process is None:
                continue
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def todo_api_settings(emu: object) -> dict[str, str]:
    """The To-do API's registration in the emulator's directory, wired to both apps."""
    api = next((a for a in emu.directory.applications  # type: ignore[attr-defined]
                if a.display_name == "Todo API" and a.password_credentials), None)
    if api is None:
        return {}
    return {"TODO_API_CLIENT_ID": api.app_id,
            "TODO_API_CLIENT_SECRET": api.password_credentials[0].secret_text,
            "TODO_API_URL": f"http://{WEBAPP_HOST}:{TODO_API_PORT}",
            "TODO_API_SCOPE": f"api://{api.app_id}/ToDoList.ReadWrite",
            "TODO_DB": str(STATE_DIR / "todo_api" / "todos.db")}


def main() -> int:
    # SIGTERM (e.g. from a process manager) ends both servers as Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    env = settings()
    if real_tenant_settings(env):
        provider = env.get("OIDC_AUTHORITY") or env.get("AUTHORITY")
        print(f"Using the identity provider from .env: {provider}")
        return run_apps({}, with_todo_api=bool(env.get("TODO_API_CLIENT_ID")))

    unset = placeholders(env)
    if unset:
        # Named, never silently taken for settings: the emulator stands in for all of them.
        print(f"These settings in .env still hold .env.sample's placeholders, so they count as "
              f"unset: {', '.join(unset)}. Using the embedded emulator instead; fill them in to "
              "use your own tenant.")
    from entra_emulator.server import EmulatorServer
    from entra_emulator.serving import describe, env_settings

    emu = EmulatorServer(state_dir=STATE_DIR, https_port=8443, http_port=8080)
    try:
        emu.start()
    except OSError as exc:
        print(f"Cannot start the emulator on ports 8443/8080: {exc}", file=sys.stderr)
        return 1
    try:
        wiring = env_settings(emu)
        todo = todo_api_settings(emu)
        print(describe(emu, wiring))
        if todo:
            print(f"  To-do API          {todo['TODO_API_URL']} (scope {todo['TODO_API_SCOPE']})")
        print(f"\n  Open http://{WEBAPP_HOST}:{WEBAPP_PORT} and sign in as a sample user. "
              "Ctrl-C stops everything.\n", flush=True)
        return run_apps({**wiring, **todo,
                         "SECRET_KEY": env.get("SECRET_KEY") or persistent_secret_key()},
                        with_todo_api=bool(todo))
    finally:
        emu.stop()


if __name__ == "__main__":
    sys.exit(main())
