"""A host app of its own (not the quickstart's webapp) with flask_entra in it, and a driver that
signs in through the emulator's real pages: for the extension's own tests."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from flask import Flask, jsonify

from entra_emulator.serving import env_settings
from flask_entra import Auth
from tests.support import DEFAULT_PASSWORD, browser_sign_in

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def host_app(emu: Any, tmp_path: Path, *, redis_url: str | None = None,
             **options: Any) -> tuple[Flask, Auth]:
    """A small app with its own pages, error handlers and headers, and Auth on the emulator."""
    settings = env_settings(emu)
    app = Flask("host")
    app.config.update(SECRET_KEY="host-app-secret-key-0123456789abcdef", TESTING=True)
    if redis_url:
        import redis

        app.config.update(SESSION_TYPE="redis", SESSION_REDIS=redis.Redis.from_url(redis_url))
    else:
        app.config.update(SESSION_TYPE="filesystem",
                          SESSION_FILE_DIR=str(tmp_path / "host-sessions"))
    auth = Auth(app, **{"authority": settings["AUTHORITY"], "client_id": settings["CLIENT_ID"],
                        "client_credential": settings["CLIENT_SECRET"],
                        "redirect_uri": settings["REDIRECT_URI"], **options})

    @app.route("/")
    def home() -> str:
        user = auth.get_user()
        return f"home of {user['name']}" if user else "home, signed out"

    @app.route("/private")
    @auth.login_required
    def private(*, context: dict[str, Any]) -> str:
        return f"private page of {context['user']['name']}"

    @app.route("/me")
    @auth.login_required(scopes=["User.Read"])
    def me(*, context: dict[str, Any]) -> Any:
        profile = requests.get(settings["ENDPOINT"], timeout=10, headers={
            "Authorization": f"Bearer {context['access_token']}"}).json()
        return jsonify(context_keys=sorted(context), name=profile.get("displayName"))

    @app.route("/boom")
    def boom() -> str:
        raise KeyError("the host's own bug")

    @app.errorhandler(404)
    def not_found(_exc: Exception) -> tuple[str, int]:
        return "the host's own 404 page", 404

    @app.errorhandler(KeyError)
    def key_error(_exc: Exception) -> tuple[str, int]:
        return "the host's own error page", 500

    @app.after_request
    def host_header(response: Any) -> Any:
        response.headers["X-Host"] = "mine"
        return response

    return app, auth


class Driver:
    """One browser: the app through Flask's test client, the emulator over real HTTP."""

    def __init__(self, app: Flask, emu: Any, username: str) -> None:
        self.client = app.test_client()
        self.emu = emu
        self.username = username
        self.idp = requests.Session()
        self.idp.verify = str(emu.ca_bundle)

    def start(self, path: str = "/private") -> Any:
        """Visit a protected page signed out; the provider's request the browser then makes."""
        response = self.client.get(path)
        assert response.status_code == 302, response.get_data(as_text=True)
        login = self.client.get(response.headers["Location"])
        assert login.status_code == 302, login.get_data(as_text=True)
        return browser_sign_in(login.headers["Location"], self.username, DEFAULT_PASSWORD,
                               session=self.idp)

    def deliver(self, result: Any) -> Any:
        return self.client.post(urlsplit(result.url).path, data=result.data)

    def sign_in(self, path: str = "/private") -> Any:
        back = self.deliver(self.start(path))
        assert back.status_code == 303, back.get_data(as_text=True)
        return back

    def sign_out(self) -> Any:
        page = self.client.get("/logout")
        token = CSRF.search(page.get_data(as_text=True)).group(1)
        return self.client.post("/logout", data={"csrf_token": token})
