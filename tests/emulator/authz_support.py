"""Helpers of the authorization tests (issue 12): the default directory's Todo API, MSAL
clients against an emulator, and sign-in through MSAL's auth code flow."""

from __future__ import annotations

import copy
from typing import Any

import msal

from tests.support import DEFAULT_PASSWORD, browser_sign_in, default_directory_document

TODO_API = "a7b3c1d2-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
TODO_API_URI = f"api://{TODO_API}"
TODO_API_SECRET = "todo-api-dev-secret"
TODO_SP = "6c2b9e4a-3d7f-4a1e-b8c5-9f0e1d2c3b4a"
WEB_SP = "a9ae9907-de57-58ff-bd27-0e98932ae4cb"
GRAPH_SP = "7d3c0f5e-8a41-4b2e-9c6d-0e1f2a3b4c5d"
ADMIN_ROLE = "f1c3e5a7-9b2d-4f6e-8a0c-2e4f6a8b0c1d"
READ_ALL_ROLE = "b8d0f2a4-6c8e-4a1b-9d3f-5e7a9c1b3d5f"
DEFAULT_ACCESS = "00000000-0000-0000-0000-000000000000"
TODO_READ = f"{TODO_API_URI}/ToDoList.Read"
TODO_READWRITE = f"{TODO_API_URI}/ToDoList.ReadWrite"

DIEGO = "DiegoS@contoso.onmicrosoft.com"
ALEX = "AlexW@contoso.onmicrosoft.com"
LEE = "LeeG@contoso.onmicrosoft.com"


def directory_with(change: Any = None) -> dict[str, Any]:
    """The default directory document, changed in place by `change(document)`."""
    document = copy.deepcopy(default_directory_document())
    if change is not None:
        change(document)
    return document


def app_entry(document: dict[str, Any], display_name: str) -> dict[str, Any]:
    return next(a for a in document["applications"] if a["displayName"] == display_name)


def sp_entry(document: dict[str, Any], sp_id: str) -> dict[str, Any]:
    return next(p for p in document["servicePrincipals"] if p["id"] == sp_id)


def msal_app(emu: Any, client_id: str, secret: str) -> msal.ConfidentialClientApplication:
    return msal.ConfidentialClientApplication(
        client_id, client_credential=secret, authority=emu.authority, instance_discovery=False,
        verify=emu.ca_bundle, token_cache=msal.TokenCache())


def web_msal_app(emu: Any, default_app: Any) -> msal.ConfidentialClientApplication:
    return msal_app(emu, default_app.client_id, default_app.client_secret)


def sign_in_with_msal(app: msal.ConfidentialClientApplication, redirect_uri: str,
                      username: str, scopes: list[str], *, session: Any = None,
                      consent: str = "accept") -> dict[str, Any]:
    """MSAL's auth code flow, the emulator's pages answered by the scripted browser."""
    flow = app.initiate_auth_code_flow(scopes, redirect_uri=redirect_uri,
                                       response_mode="form_post")
    result = browser_sign_in(flow["auth_uri"], username, DEFAULT_PASSWORD, session=session,
                             consent=consent)
    return app.acquire_token_by_auth_code_flow(flow, result.params)
