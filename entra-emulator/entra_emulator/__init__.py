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

from entra_emulator.directory import DirectoryError, load_directory
from entra_emulator.server import EmulatorServer, env_settings
from entra_emulator.testing import (
    EntraEmulator,
    SignInError,
    SignInResult,
    browser_sign_in,
    sign_in,
)

__all__ = ["DirectoryError", "EmulatorServer", "EntraEmulator", "SignInError", "SignInResult",
           "browser_sign_in", "env_settings", "load_directory", "sign_in"]
