"""The app's extensions, created unbound and attached in create_app() (Flask's app-factory
pattern): the sign-in, configured from app.config's ENTRA_* keys."""

from flask_entra import Auth

auth = Auth()
