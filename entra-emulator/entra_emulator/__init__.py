"""entra_emulator: a local Microsoft Entra ID (v2) + Microsoft Graph that unmodified MSAL
accepts, over real TLS, for running and testing apps offline.

Public API:

- `EmulatorServer(directory=None, state_dir=".emulator", https_port=0, http_port=0)`: the
  emulator in-process (a context manager); `env_settings(server)` the settings an app needs.
- `EntraEmulator.start(directory, state_dir)`: the same with what tests need (typed faults,
  defects and clock, `env`, `msal_kwargs()`, a trusting `http` session, `reset()`, `add_user()`,
  `add_application()`, `grant_consent()`, `sign_in()`); the pytest plugin's `entra_emulator`
  fixture hands one out.
- `sign_in(client, start_url, user, password)`: a whole sign-in through an app, as a browser;
  `browser_sign_in(authorize_url, user, password)`: the emulator's pages alone.
- `load_directory(path)`, `DirectoryError`: the directory file, validated.

The command line: `entra-emulator serve` and `entra-emulator check FILE`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from entra_emulator.directory import DirectoryError, load_directory
from entra_emulator.serving import env_settings

if TYPE_CHECKING:
    from entra_emulator.server import EmulatorServer
    from entra_emulator.testing import (
        EntraEmulator,
        SignInError,
        SignInResult,
        browser_sign_in,
        sign_in,
    )

__all__ = ["DirectoryError", "EmulatorServer", "EntraEmulator", "SignInError", "SignInResult",
           "browser_sign_in", "env_settings", "load_directory", "sign_in"]

# Imported on first use (PEP 562), so that `python -m entra_emulator` starts quickly: the
# server imports Flask and the whole app, which the parent of `serve --workers N` (it only
# prepares and watches) and `check` never need; testing.py imports requests, which `serve`
# never needs. The submodules stay reachable as attributes, as when they were imported here.
_LAZY = {"EmulatorServer": "server", "EntraEmulator": "testing", "SignInError": "testing",
         "SignInResult": "testing", "browser_sign_in": "testing", "sign_in": "testing",
         "server": "server", "testing": "testing"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(f"entra_emulator.{_LAZY[name]}")
        return module if name == _LAZY[name] else getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
