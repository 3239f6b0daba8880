"""The To-do page (the app calling its own protected web API, todo_api) and the Admin page (for
the Admin app role). The API's scope is asked for only when the To-do page is first opened:
incremental consent."""

from __future__ import annotations

import hmac
from typing import Any

from flask import Blueprint, current_app, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from flask_entra import InteractionRequired

from .errors import AppError
from .extensions import auth

bp = Blueprint("todo", __name__)


def api_token() -> str:
    scopes = list(current_app.extensions["webapp"].settings.todo_api_scopes)
    result = auth.get_token_for_user(scopes)
    if "access_token" not in result:  # not consented yet: to the provider and back
        raise InteractionRequired("The To-do API needs your consent.", scopes=scopes)
    return result["access_token"]


def call_api(method: str, path: str, token: str, **kwargs: Any) -> Any:
    base = current_app.extensions["webapp"].settings.todo_api_url
    try:
        response = auth.http_client().request(method, base + path, headers={
            "Authorization": f"Bearer {token}"}, **kwargs)
        body = response.json()
    except (OSError, ValueError):
        raise AppError(502, "The To-do API is unavailable", f"Could not reach it at {base}.",
                       hint="Is it running? `make run` starts it beside this app.") from None
    if not response.ok:
        raise AppError(502, "The To-do API refused the request",
                       f"It answered HTTP {response.status_code}.",
                       code=str(body.get("error", ""))[:100] if isinstance(body, dict) else "",
                       detail=str(body.get("error_description", ""))[:300]
                       if isinstance(body, dict) else "")
    return body


@bp.route("/todo", methods=["GET", "POST"])
@auth.login_required
def todo(*, context: dict[str, Any]) -> ResponseReturnValue:
    if not current_app.extensions["webapp"].settings.todo_api_url:
        raise AppError(503, "The To-do API is not configured",
                       "Set TODO_API_URL and TODO_API_SCOPE (see .env.sample).")
    token = api_token()
    if request.method == "POST":
        request.max_content_length = 4096
        sent = request.form.get("csrf_token", "")
        if not hmac.compare_digest(sent.encode(), auth.csrf_token().encode()):
            raise AppError(400, "Not added", "The form did not come from this app's page.")
        call_api("POST", "/api/todos", token, json={"text": request.form.get("text", "")})
        return redirect(url_for("todo.todo"), 303)
    items = call_api("GET", "/api/todos", token).get("value", [])
    me = call_api("GET", "/api/me", token)
    return render_template("todo.html", user=context["user"], items=items, api_me=me)


@bp.get("/admin")
@auth.login_required(roles=["Admin"])
def admin(*, context: dict[str, Any]) -> ResponseReturnValue:
    return render_template("admin.html", user=context["user"])
