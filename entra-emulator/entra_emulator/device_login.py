"""The device-login pages on the emulator's browser port (the `verification_uri` of
device_code.py), where a user enters the code a device shows and signs in:

1. `GET /devicelogin`: "Enter code"; `POST /devicelogin` checks it (an unknown or expired code
   is said so on the page, as Entra does).
2. "Are you trying to sign in to {app}?" — Continue or Cancel (Cancel: the device's next poll
   is `authorization_declined`). Entra asks this to stop device-code phishing; so do we.
3. Continue runs the emulator's own sign-in and consent pages (authorize.py), for an
   authorization request the emulator makes itself for the device's client and scopes, whose
   redirect URI is this module's `/devicelogin/complete` (no app's) and whose nonce and state
   name the device authorization. The SSO session, consent, app role assignment and admin-only
   permission rules are thus the browser flow's; declining consent declines the device.
4. `/devicelogin/complete` takes the code issued to that request (checking it was issued for
   this device authorization), spends it, and approves the device authorization with its user,
   granted permissions and session: "You have signed in to {app} on your device. You may now
   close this window."
"""

from __future__ import annotations

from flask import Response, request

from entra_emulator import authorize
from entra_emulator.authorize_request import AuthorizationRequest
from entra_emulator.context import current_state
from entra_emulator.device_code import (
    VERIFICATION_PATH,
    DeviceAuthorization,
    device_codes,
    normalize_user_code,
)
from entra_emulator.pages import html_page
from entra_emulator.scopes import parse_scopes

COMPLETE_PATH = VERIFICATION_PATH + "/complete"
WRONG_CODE = "That code didn't work. Check the code and try again."
EXPIRED_CODE = ("That code has expired. Get a new code from the device or app you're signing "
                "in to and try again.")
USED_CODE = "That code was already used. Get a new code from your device and try again."


def _page(step: str, status: int = 200, **context: object) -> Response:
    return html_page("devicelogin.html", status=status, step=step,
                     action=VERIFICATION_PATH, **context)


def _usable(record: DeviceAuthorization | None) -> str | None:
    """Why a code cannot be used on these pages (None: it can)."""
    if record is None:
        return WRONG_CODE
    if current_state().clock.now() > record.expires_at:
        return EXPIRED_CODE
    if record.status != "pending":
        return USED_CODE
    return None


@authorize.bp.get(VERIFICATION_PATH)
def enter_code() -> Response:
    return _page("code")


@authorize.bp.post(VERIFICATION_PATH)
def submit_code() -> Response:
    state = current_state()
    flow_id = request.form.get("flow")
    if flow_id is not None:
        return _confirm(flow_id, request.form.get("decision", ""))
    typed = request.form.get("otc", "")[:32]  # a code is 9 characters; echoed back on the page
    record = device_codes().by_user_code(typed) if normalize_user_code(typed) else None
    problem = _usable(record)
    if problem is not None:
        return _page("code", error=problem, code=typed)
    assert record is not None
    app = state.directory.application(record.client_id)
    if app is None:
        return _page("code", error=WRONG_CODE, code=typed)
    return _page("confirm", app_name=app.display_name, flow=record.id)


def _confirm(flow_id: str, decision: str) -> Response:
    state = current_state()
    store = device_codes()
    record = store.by_id(flow_id)
    problem = _usable(record)
    if problem is not None:
        return _page("code", error=problem)
    assert record is not None
    app = state.directory.application(record.client_id)
    if app is None:
        return _page("code", error=WRONG_CODE)
    if decision == "cancel":
        store.settle(record.id, status="declined")
        return _page("declined", app_name=app.display_name)
    if decision != "accept":
        return _page("confirm", app_name=app.display_name, flow=record.id)
    req = AuthorizationRequest(
        tenant_segment=record.tenant_segment, tenant_id=record.tenant_id, client=app,
        redirect_uri=COMPLETE_PATH, response_mode="query", scope=record.scope,
        scopes=tuple(parse_scopes(record.scope, state.directory)), state=record.id,
        nonce=record.id, prompt=frozenset(), login_hint=None, max_age=None,
        code_challenge=None, code_challenge_method=None, client_info=False,
        hinted_user_id=None)
    return authorize.continue_flow(req, authorize.session_from_cookie(), None)


@authorize.bp.get(COMPLETE_PATH)
def complete() -> Response:
    state = current_state()
    store = device_codes()
    record = store.by_id(request.args.get("state", ""))
    problem = _usable(record)
    if problem is not None:
        return _page("code", error=problem)
    assert record is not None
    app = state.directory.application(record.client_id)
    app_name = app.display_name if app is not None else record.client_id
    code = request.args.get("code")
    issued = state.codes.find(code) if code else None
    if issued is None or issued.nonce != record.id or issued.client_id != record.client_id:
        # An error redirect (the user declined consent), or a code that is not this flow's.
        store.settle(record.id, status="declined")
        return _page("declined", app_name=app_name,
                     error=request.args.get("error_description", "").split("Trace ID:")[0].strip())
    spent, first = state.codes.redeem(code)
    if spent is None or not first:
        return _page("code", error=USED_CODE)
    approved = store.settle(record.id, status="approved", user_id=issued.user_id,
                            granted=tuple(sorted(issued.granted)), sid=issued.sid,
                            auth_time=issued.auth_time)
    if approved is None:
        return _page("code", error=USED_CODE)
    return _page("done", app_name=app_name)
