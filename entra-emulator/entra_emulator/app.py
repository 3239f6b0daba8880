"""The emulator's Flask application: state, blueprints, and errors that are never a stack trace."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask, Response, current_app, request
from werkzeug.exceptions import HTTPException

import entra_emulator.graph_membership  # noqa: F401  (on import: its views join graph.bp)
import entra_emulator.obo  # noqa: F401  (on import: the on-behalf-of grant joins token.GRANTS)
from entra_emulator import admin, authorize, discovery, faults, graph, logout, token
from entra_emulator.context import EXTENSION_KEY, current_state
from entra_emulator.db import StateDB
from entra_emulator.defects import DefectInjector
from entra_emulator.device_code import DeviceCodeStore
from entra_emulator.directory import Directory, load_directory
from entra_emulator.errors import json_response
from entra_emulator.keys import KeyStore, ensure_private_dir
from entra_emulator.pages import secure_page
from entra_emulator.state import (
    Clock,
    CodeStore,
    ConsentStore,
    EmulatorState,
    PendingStore,
    RefreshTokenStore,
    SessionStore,
)

# Nothing the protocol sends comes near this; it bounds what a misbehaving client can make us
# parse.
MAX_REQUEST_BYTES = 1024 * 1024


@dataclass
class EmulatorConfig:
    directory: Directory | str | Path | None = None   # None: the packaged default directory
    state_dir: str | Path = ".emulator"
    https_base: str = "https://localhost:8443"
    http_base: str = "http://localhost:8080"
    # RFC 9207: put `iss` in every authorization response and advertise it in the v2 discovery
    # document. Off by default: Entra is not known to send it.
    authorization_response_iss: bool = False


def build_state(config: EmulatorConfig) -> EmulatorState:
    """This worker's view of the state folder's shared state (db.py)."""
    directory = config.directory if isinstance(config.directory, Directory) \
        else load_directory(config.directory)
    state_dir = Path(config.state_dir)
    ensure_private_dir(state_dir)
    db = StateDB.open(state_dir)
    clock = Clock(db)
    return EmulatorState(
        directory=directory, keys=KeyStore(db=db), faults=faults.FaultInjector(db),
        defects=DefectInjector(authorization_response_iss=config.authorization_response_iss,
                               db=db),
        https_base=config.https_base.rstrip("/"),
        http_base=config.http_base.rstrip("/"), state_dir=state_dir, clock=clock,
        sessions=SessionStore(clock, db=db), pending=PendingStore(clock, db=db),
        codes=CodeStore(clock, db), refresh_tokens=RefreshTokenStore(clock, db),
        consents=ConsentStore(db), db=db, device_codes=DeviceCodeStore(clock, db))


def create_app(config: EmulatorConfig | Mapping[str, Any]) -> Flask:
    if isinstance(config, Mapping):
        config = EmulatorConfig(**config)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BYTES
    app.extensions[EXTENSION_KEY] = build_state(config)
    for blueprint in (discovery.bp, authorize.bp, token.bp, logout.bp, graph.bp,
                      admin.bp):
        app.register_blueprint(blueprint)
    app.before_request(_sync_state)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)
    return app


def _sync_state() -> None:
    # What another worker (or a test) changed: the clock, the signing keys, the directory.
    current_state().sync()


def _wants_html() -> bool:
    return request.accept_mimetypes.accept_html and not request.accept_mimetypes.accept_json


def _http_error(error: HTTPException) -> Response:
    status = error.code or 500
    if _wants_html():
        response = error.get_response()
        return secure_page(Response(response.get_data(), status=status,
                                    content_type="text/html; charset=utf-8"))
    body = {"error": "invalid_request" if status < 500 else "server_error",
            "error_description": f"{status} {error.name}: {error.description}"}
    return json_response(body, status=status)


def _unexpected_error(error: Exception) -> Response:
    # Logged with its traceback; the caller gets a plain answer, never the trace.
    current_app.logger.exception("unhandled error in %s %s", request.method, request.path)
    body = {"error": "server_error",
            "error_description": "The emulator hit an unexpected error; see its log."}
    return json_response(body, status=500)
