"""The quickstart's app.py (Azure-Samples/ms-identity-python-webapp, the code behind the
quickstart), cut to what the tests read: written once, run on `identity` or on `flask_entra`
with only its `Auth` import switched."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import requests
from flask import Flask, render_template
from jinja2 import DictLoader

# The sample's templates, cut down to what the test reads.
TEMPLATES = {
    "index.html": (
        "<h2>Welcome {{ user.get('name') }}!</h2>"
        "{% if edit_profile_url %}<a href='{{ edit_profile_url }}'>Edit Profile</a>{% endif %}"
        "<ul>{% if api_endpoint %}<li><a href='/call_api'>Call an API</a></li>{% endif %}"
        "<li><a href='{{ url_for(\"identity.logout\") }}'>Logout</a></li></ul>"),
    "display.html": "<h1>{{ title }}</h1><pre>{{ result|tojson(indent=4) }}</pre>",
}
META_REFRESH = re.compile(r"content='0; URL=([^']+)'")
LOGOUT_LINK = re.compile(r"<a href='([^']+)'>Logout</a>")
PRE = re.compile(r"<pre>(.*)</pre>", re.S)


def quickstart_app(Auth: type, settings: dict[str, str], session_dir: Path) -> Flask:
    """The sample's app.py, its .env settings passed in instead of read from os.environ."""
    app = Flask(__name__)
    app.config.update(SESSION_TYPE="filesystem", SESSION_FILE_DIR=str(session_dir),
                      SERVER_NAME="localhost:5000")   # `flask run --host=localhost --port=5000`
    app.jinja_loader = DictLoader(TEMPLATES)
    auth = Auth(
        app,
        authority=settings["AUTHORITY"],
        client_id=settings["CLIENT_ID"],
        client_credential=settings["CLIENT_SECRET"],
        redirect_uri=settings["REDIRECT_URI"],
    )

    @app.route("/")
    @auth.login_required
    def index(*, context: dict[str, Any]) -> str:
        return render_template("index.html", user=context["user"],
                               edit_profile_url=auth.get_edit_profile_url(),
                               api_endpoint=settings["ENDPOINT"])

    @app.route("/call_api")
    @auth.login_required(scopes=settings["SCOPE"].split())
    def call_downstream_api(*, context: dict[str, Any]) -> str:
        api_result = requests.get(  # Use access token to call a web api
            settings["ENDPOINT"],
            headers={"Authorization": "Bearer " + context["access_token"]},
            timeout=30,
        ).json()
        return render_template("display.html", title="API Response", result=api_result)

    return app
