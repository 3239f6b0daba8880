"""Serving from the command line: `serve` runs the emulator until Ctrl-C or SIGTERM, in this
process (server.py) or in N worker processes (workers.py), and says where it is; `env_settings`,
`describe` and `write_env_file` give an app what it needs to point at a running emulator.

This module imports neither Flask nor the emulator's app, so the parent of `serve --workers N`,
which only prepares the state folder and watches its workers, starts without them.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from entra_emulator.keys import write_private_file

if TYPE_CHECKING:
    from entra_emulator.directory import Directory


class Addresses:
    """A running emulator's addresses, from its https base and its directory: what
    `env_settings` and `describe` read, in-process (server.EmulatorServer) or of a worker pool
    (workers.Endpoints)."""

    https_base: str
    http_base: str
    ca_bundle: str
    directory: Directory

    @property
    def tenant_id(self) -> str:
        return self.directory.tenant_id

    @property
    def authority(self) -> str:
        return f"{self.https_base}/{self.tenant_id}"

    @property
    def graph_me_url(self) -> str:
        return f"{self.https_base}/v1.0/me"


def env_settings(emulator: Addresses) -> dict[str, str]:
    """What a web app needs to point at this emulator (the quickstart's .env keys)."""
    app = next((a for a in emulator.directory.applications if a.password_credentials),
               emulator.directory.applications[0] if emulator.directory.applications else None)
    settings = {"AUTHORITY": emulator.authority}
    if app is not None:
        settings["CLIENT_ID"] = app.app_id
        if app.password_credentials:
            settings["CLIENT_SECRET"] = app.password_credentials[0].secret_text
        if app.redirect_uris:
            settings["REDIRECT_URI"] = app.redirect_uris[0]
    bundle = str(Path(emulator.ca_bundle).resolve())
    # CA_BUNDLE is the web app's own trust setting, which a shell's REQUESTS_CA_BUNDLE cannot
    # override; REQUESTS_CA_BUNDLE is for code that offers no other way (requests, identity).
    settings.update({"SCOPE": "User.Read", "ENDPOINT": emulator.graph_me_url,
                     "CA_BUNDLE": bundle, "REQUESTS_CA_BUNDLE": bundle})
    return settings


def write_env_file(path: str | Path, settings: dict[str, str]) -> None:
    """Owner-only (0600), written atomically: it holds the client secret."""
    lines = ["# Written by entra_emulator: point the web app at the local emulator."]
    lines += [f'{name}="{value}"' for name, value in settings.items()]
    write_private_file(Path(path), "\n".join(lines) + "\n")


def describe(emulator: Addresses, settings: dict[str, str]) -> str:
    users = emulator.directory.users
    lines = [
        f"Entra emulator for tenant {emulator.directory.tenant.display_name} "
        f"({emulator.tenant_id})",
        f"  AUTHORITY          {emulator.authority}",
        f"  sign-in pages      {emulator.http_base}",
        f"  Graph /me          {emulator.graph_me_url}",
        f"  REQUESTS_CA_BUNDLE {settings['REQUESTS_CA_BUNDLE']}",
    ]
    if "CLIENT_ID" in settings:
        lines.append(f"  CLIENT_ID          {settings['CLIENT_ID']}")
    if "CLIENT_SECRET" in settings:
        lines.append(f"  CLIENT_SECRET      {settings['CLIENT_SECRET']}  (development only)")
    if users:
        lines.append("  sample users (development passwords from the directory file):")
        lines += [f"    {u.user_principal_name:<40} {u.password}" for u in users[:5]]
        if len(users) > 5:
            lines.append(f"    … and {len(users) - 5} more in the directory file")
    return "\n".join(lines)


def serve(directory: str | Path | None = None, state_dir: str | Path = ".emulator",
          host: str = "localhost", https_port: int = 8443, http_port: int = 8080,
          env_file: str | Path | None = None, authorization_response_iss: bool = False,
          workers: int = 1) -> None:
    """Run until Ctrl-C or SIGTERM: in this process, or in `workers` processes (workers.py)."""
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    emulator: Any
    if workers == 1:
        from entra_emulator.server import EmulatorServer

        emulator = EmulatorServer(directory=directory, state_dir=state_dir, host=host,
                                  https_port=https_port, http_port=http_port,
                                  authorization_response_iss=authorization_response_iss,
                                  access_log=True)
    else:
        from entra_emulator.workers import WorkerPool

        emulator = WorkerPool(workers, directory, state_dir, host, https_port, http_port,
                              authorization_response_iss)
    try:
        endpoints = emulator.start() if workers == 1 else emulator.prepare()
        if workers != 1:
            emulator.start()
            print(f"{workers} workers", flush=True)
        _announce(endpoints, env_file)
        if workers == 1:
            while not stop.wait(0.5):
                pass
        else:
            emulator.watch(stop)
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
        signal.signal(signal.SIGTERM, previous)
        print("Emulator stopped.", flush=True)


def _announce(emulator: Any, env_file: str | Path | None) -> None:
    settings = env_settings(emulator)
    print(describe(emulator, settings), flush=True)
    if env_file is not None:
        write_env_file(env_file, settings)
    where = f"; settings in {env_file}" if env_file is not None else ""
    print(f"Ready: {emulator.authority} (sign-in pages on {emulator.http_base}){where}. "
          "Ctrl-C stops.", flush=True)
