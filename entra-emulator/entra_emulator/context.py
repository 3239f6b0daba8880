"""Request-time access to the emulator's state and the tenant named in the URL."""

from __future__ import annotations

from flask import current_app

from entra_emulator.errors import entra_error
from entra_emulator.state import EmulatorState

EXTENSION_KEY = "entra_emulator"


def current_state() -> EmulatorState:
    return current_app.extensions[EXTENSION_KEY]


def tenant_id_for(segment: str) -> str:
    """The tenant GUID a URL's first segment names (GUID, domain, common, organizations)."""
    tenant_id = current_state().directory.resolve_tenant(segment)
    if tenant_id is None:
        raise entra_error("InvalidTenantName", tenant=segment)
    return tenant_id


def is_tenant_alias(segment: str) -> bool:
    """common and organizations stand for "whichever tenant the user is in"."""
    return segment.lower() in ("common", "organizations")
