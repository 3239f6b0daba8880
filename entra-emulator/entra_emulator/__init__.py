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
from entra_emulator.server import EmulatorServer, env_settings

if TYPE_CHECKING:
    from entra_emulator.testing import (
        EntraEmulator,
        SignInError,
        SignInResult,
        browser_sign_in,
        sign_in,
    )

__all__ = ["DirectoryError", "EmulatorServer", "EntraEmulator", "SignInError", "SignInResult",
           "browser_sign_in", "env_settings", "load_directory", "sign_in"]

# Imported on first use (PEP 562): testing.py imports requests, which `serve` never needs and
# which would slow every start of `python -m entra_emulator`. `entra_emulator.testing` itself
# stays reachable as an attribute, as when it was imported here.
_TESTING_NAMES = frozenset({"EntraEmulator", "SignInError", "SignInResult", "browser_sign_in",
                            "sign_in"})


def __getattr__(name: str) -> Any:
    if name in _TESTING_NAMES or name == "testing":
        testing_module = importlib.import_module("entra_emulator.testing")
        if name == "testing":
            return testing_module
        return getattr(testing_module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_TESTING_NAMES, "testing"})
