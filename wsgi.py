"""WSGI entry point: `flask run` finds `app` here; `gunicorn wsgi:app` serves it."""

from webapp import create_app

app = create_app()
