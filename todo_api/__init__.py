"""The To-do web API: a protected API on flask_entra's public API, registered as its own app
(exposing ToDoList.Read and ToDoList.ReadWrite). The quickstart web app calls it with the user's
token; its /api/me calls Microsoft Graph on behalf of that user.

  GET  /api/todos   the caller's items (delegated: ToDoList.Read or .ReadWrite; app-only:
                    the ToDoList.Read.All application permission, everyone's items)
  POST /api/todos   {"text": "..."} (ToDoList.ReadWrite)
  GET  /api/me      who Graph says the caller is (on-behalf-of)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import requests
from dotenv import dotenv_values, find_dotenv
from flask import Flask, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

from flask_entra import Auth

from .store import MAX_TEXT, TodoStore, TooMany

MAX_BODY_BYTES = 4096
auth = Auth()


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Settings from the environment and `.env` (TODO_API_CLIENT_ID, TODO_API_CLIENT_SECRET,
    AUTHORITY, ENDPOINT for Graph, CA_BUNDLE, TODO_DB), or from `test_config` alone."""
    settings = test_config if test_config is not None else {
        **{k: v for k, v in dotenv_values(find_dotenv(usecwd=True)).items() if v}, **os.environ}
    app = Flask(__name__)
    graph_me = settings.get("ENDPOINT", "https://graph.microsoft.com/v1.0/me")
    app.config.update(
        SECRET_KEY=settings.get("SECRET_KEY") or os.urandom(32).hex(),
        SESSION_TYPE="filesystem",
        SESSION_FILE_DIR=str(Path(settings.get("TODO_DB", ".todo_api/todos.db")).parent
                             / "sessions"),
        ENTRA_CLIENT_ID=settings.get("TODO_API_CLIENT_ID"),
        ENTRA_CLIENT_CREDENTIAL=settings.get("TODO_API_CLIENT_SECRET"),
        ENTRA_AUTHORITY=settings.get("AUTHORITY"),
        ENTRA_CA_BUNDLE=settings.get("CA_BUNDLE") or None,
        # The web app's tenant list, so a multi-tenant AUTHORITY lets in no other tenant here.
        ENTRA_ALLOWED_TENANTS=settings.get("ALLOWED_TENANTS", "").replace(",", " ").split(),
        ENTRA_GRAPH_ENDPOINT=graph_me.rsplit("/me", 1)[0],
        TODO_GRAPH_ME=graph_me)
    auth.init_app(app)
    app.extensions["todo_api"] = TodoStore(settings.get("TODO_DB", ".todo_api/todos.db"))
    app.register_error_handler(HTTPException, json_error)
    app.add_url_rule("/api/todos", "list_todos", list_todos, methods=["GET"])
    app.add_url_rule("/api/todos", "add_todo", add_todo, methods=["POST"])
    app.add_url_rule("/api/me", "me", me, methods=["GET"])
    app.add_url_rule("/healthz", "healthz", lambda: jsonify(status="ok"))
    return app


def owner_of(claims: dict[str, Any]) -> str:
    """Items belong to a user in a tenant (tid + oid: stable, unlike a name)."""
    return f"{claims.get('tid')}/{claims.get('oid') or claims.get('sub')}"


@auth.token_required(scopes=["ToDoList.Read", "ToDoList.ReadWrite"],
                     roles=["ToDoList.Read.All"])
def list_todos(*, context: dict[str, Any]) -> ResponseReturnValue:
    store: TodoStore = current_app.extensions["todo_api"]
    owner = None if context["app_only"] else owner_of(context["claims"])
    return jsonify(value=store.list(owner))


@auth.token_required(scopes=["ToDoList.ReadWrite"])
def add_todo(*, context: dict[str, Any]) -> ResponseReturnValue:
    request.max_content_length = MAX_BODY_BYTES
    body = request.get_json(silent=True)
    text = body.get("text") if isinstance(body, dict) else None
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT:
        return api_error(400, "invalid_request",
                         f"Send JSON {{\"text\": \"...\"}} with 1 to {MAX_TEXT} characters.")
    try:
        item = current_app.extensions["todo_api"].add(owner_of(context["claims"]), text.strip())
    except TooMany:
        return api_error(409, "too_many_items", "Delete some items first.")
    return jsonify(item), 201


@auth.token_required(scopes=["ToDoList.Read", "ToDoList.ReadWrite"])
def me(*, context: dict[str, Any]) -> ResponseReturnValue:
    result = auth.acquire_token_on_behalf_of(context, ["User.Read"])
    if "access_token" not in result:
        # RFC 6750-style: the caller must get the user's consent (or sign in) again.
        return api_error(403, result.get("error", "interaction_required"),
                         str(result.get("error_description", ""))[:300])
    try:
        graph = auth.http_client().get(current_app.config["TODO_GRAPH_ME"], headers={
            "Authorization": f"Bearer {result['access_token']}"})
        profile = graph.json() if graph.ok else None
    except (requests.RequestException, ValueError):
        profile = None
    if not isinstance(profile, dict):
        return api_error(502, "graph_unavailable", "Microsoft Graph did not answer.")
    return jsonify(displayName=profile.get("displayName"),
                   userPrincipalName=profile.get("userPrincipalName"), via="on-behalf-of")


def api_error(status: int, error: str, description: str) -> ResponseReturnValue:
    response = jsonify(error=error, error_description=description)
    response.status_code = status
    return response


def json_error(exc: HTTPException) -> ResponseReturnValue:
    return api_error(exc.code or 500, exc.name.lower().replace(" ", "_"), exc.description or "")
