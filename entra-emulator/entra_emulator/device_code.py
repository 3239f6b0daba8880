"""The device code flow (RFC 8628, v2-oauth2-device-code.md): `POST
/{tenant}/oauth2/v2.0/devicecode` hands out a device code and a user code; the user enters the
user code on the emulator's page (device_login.py) and signs in; meanwhile the device polls the
token endpoint with `grant_type=urn:ietf:params:oauth:grant-type:device_code`.

The device authorization response has Entra's fields in Entra's order: `user_code` (nine
letters and digits, as Entra's), `device_code`, `verification_uri` (the emulator's page on its
browser port: Entra's is https://microsoft.com/devicelogin), `expires_in` (900: "the user has
15 minutes to sign in"), `interval` (5) and `message`; no `verification_uri_complete`, which
Entra does not send.

Polling answers, in this order [order inferred]: an unknown device code, or one issued to
another client, `bad_verification_code` (70018); then client authentication (a public client
needs `isFallbackPublicClient`, public_client.py); `expired_token` (70019) past `expires_in`;
`authorization_declined` when the user cancelled; `authorization_pending` (70016) until the
user has signed in; then the tokens, once (a second poll is `bad_verification_code`
[inferred]). No `slow_down`: Entra is not known to send it.

Device codes live in the state database (db.py), in a table of this module, so a code issued
by one worker is polled on another and approved on a third.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass, replace
from typing import Any

from flask import Response, request

from entra_emulator import token as token_endpoint
from entra_emulator.client_auth import TokenRequest, authenticate_without_redirect, new_family
from entra_emulator.context import current_state, tenant_id_for
from entra_emulator.db import StateDB
from entra_emulator.errors import EntraError, entra_error, error_json_response, json_response
from entra_emulator.records import digest
from entra_emulator.request_limits import check_lengths
from entra_emulator.scopes import parse_scopes
from entra_emulator.state import Clock, random_token

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
DEVICE_CODE_LIFETIME_SECONDS = 900
POLL_INTERVAL_SECONDS = 5
# How long an expired or spent device code is remembered, so that its polls are told
# expired_token rather than bad_verification_code.
SPENT_MEMORY_SECONDS = 3600
# Entra's user codes are nine capitals and digits (e.g. "FRWQDE7YL"); ours leave out the
# look-alikes (I, O, 0, 1) a user could mistype.
USER_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
USER_CODE_LENGTH = 9
MAX_DEVICE_CODES = 4000  # as many sign-ins in progress as PendingStore keeps
VERIFICATION_PATH = "/devicelogin"
MESSAGE = ("To sign in, use a web browser to open the page {uri} and enter the code {code} to "
           "authenticate.")

@dataclass(frozen=True)
class DeviceAuthorization:
    id: str                    # internal: names the flow on the device-login pages
    client_id: str
    tenant_segment: str
    tenant_id: str
    scope: str
    issued_at: float
    expires_at: float
    status: str = "pending"    # pending, approved, declined, redeemed
    # Once approved: who signed in, what they granted, their session.
    user_id: str | None = None
    granted: tuple[str, ...] = ()
    sid: str | None = None
    auth_time: int | None = None


class DeviceCodeStore:
    """Device authorizations by device code (hashed), user code and id."""

    def __init__(self, clock: Clock, db: StateDB | None = None) -> None:
        self._clock = clock
        self._db = db or StateDB.in_memory()   # its table: db.DEVICE_CODES_SCHEMA

    def issue(self, record: DeviceAuthorization) -> tuple[str, str]:
        """(device_code, user_code) of a new authorization."""
        device_code = "DAQABIQEAAAD" + random_token(96)
        with self._db.write() as connection:
            connection.execute("DELETE FROM device_codes WHERE forget_at < ?",
                               (self._clock.now(),))
            while True:
                user_code = "".join(secrets.choice(USER_CODE_ALPHABET)
                                    for _ in range(USER_CODE_LENGTH))
                taken = connection.execute("SELECT 1 FROM device_codes WHERE user_code = ?",
                                           (user_code,)).fetchone()
                if not taken:
                    break
            connection.execute(
                "INSERT INTO device_codes (key, id, user_code, record, forget_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (digest(device_code), record.id, user_code, _text(record),
                 record.expires_at + SPENT_MEMORY_SECONDS))
            # Anyone who knows a public client id can start one: keep the newest few thousand.
            connection.execute("DELETE FROM device_codes WHERE rowid <= "
                               "(SELECT max(rowid) FROM device_codes) - ?", (MAX_DEVICE_CODES,))
        return device_code, user_code

    def find(self, device_code: str) -> DeviceAuthorization | None:
        return self._one("key = ?", digest(device_code))

    def by_user_code(self, user_code: str) -> DeviceAuthorization | None:
        return self._one("user_code = ?", normalize_user_code(user_code))

    def by_id(self, flow_id: str) -> DeviceAuthorization | None:
        return self._one("id = ?", flow_id)

    def settle(self, flow_id: str, **changes: Any) -> DeviceAuthorization | None:
        """Move a pending authorization on (approved or declined); None when it was not
        pending (already settled elsewhere) or is unknown."""
        return self._move("id = ?", flow_id, "pending", **changes)

    def redeem(self, device_code: str) -> DeviceAuthorization | None:
        """The approved authorization, marked redeemed (once: None for a second caller)."""
        return self._move("key = ?", digest(device_code), "approved", status="redeemed")

    def _one(self, where: str, value: str) -> DeviceAuthorization | None:
        row = self._db.one(f"SELECT record FROM device_codes WHERE {where}",  # noqa: S608
                           (value,))
        return _record(row[0]) if row else None

    def _move(self, where: str, value: str, from_status: str,
              **changes: Any) -> DeviceAuthorization | None:
        with self._db.write() as connection:
            row = connection.execute(
                f"SELECT key, record FROM device_codes WHERE {where}",  # noqa: S608
                (value,)).fetchone()
            record = _record(row[1]) if row else None
            if record is None or record.status != from_status:
                return None
            record = replace(record, **changes)
            connection.execute("UPDATE device_codes SET record = ? WHERE key = ?",
                               (_text(record), row[0]))
        return record



def _text(record: DeviceAuthorization) -> str:
    return json.dumps(asdict(record), separators=(",", ":"))


def _record(text: str) -> DeviceAuthorization:
    data = json.loads(text)
    data["granted"] = tuple(data["granted"])
    return DeviceAuthorization(**data)


def normalize_user_code(text: str) -> str:
    """As typed: any case, with spaces or dashes."""
    return "".join(ch for ch in text.upper() if ch.isalnum())


def device_codes() -> DeviceCodeStore:
    """The current emulator state's store."""
    return current_state().device_codes


# ---------------------------------------------------------------------------------------------
# The device authorization endpoint
# ---------------------------------------------------------------------------------------------

def device_authorization(tenant_segment: str) -> dict[str, Any]:
    if request.method != "POST":
        raise entra_error("BadResourceRequestInvalidRequest", method=request.method)
    state = current_state()
    tenant_id = tenant_id_for(tenant_segment)
    params = request.form.to_dict()
    # An anonymous caller's request is stored for 15 minutes: bounded as /authorize's are.
    check_lengths(params, {"client_id": 256, "scope": 2048})
    client_id = params.get("client_id", "").strip()
    if not client_id:
        raise entra_error("MissingRequiredParameter", name="client_id")
    app = state.directory.application(client_id)
    if app is None:
        raise entra_error("UnauthorizedClient_DoesNotMatchRequest", app_id=client_id,
                          tenant=tenant_segment)
    scope = params.get("scope", "")
    if not scope.strip():
        raise entra_error("MissingRequiredParameter", name="scope")
    parse_scopes(scope, state.directory)   # InvalidScope for a scope no API exposes
    now = state.clock.now()
    record = DeviceAuthorization(
        id=random_token(24), client_id=app.app_id, tenant_segment=tenant_segment,
        tenant_id=tenant_id, scope=scope, issued_at=now,
        expires_at=now + DEVICE_CODE_LIFETIME_SECONDS)
    device_code, user_code = device_codes().issue(record)
    uri = state.http_base + VERIFICATION_PATH
    return {"user_code": user_code, "device_code": device_code, "verification_uri": uri,
            "expires_in": DEVICE_CODE_LIFETIME_SECONDS, "interval": POLL_INTERVAL_SECONDS,
            "message": MESSAGE.format(uri=uri, code=user_code)}


@token_endpoint.bp.route("/<tenant>/oauth2/v2.0/devicecode", methods=["GET", "POST"])
def devicecode(tenant: str) -> Response:
    try:
        body = device_authorization(tenant)
    except EntraError as err:
        return error_json_response(err)
    return json_response(body)


# ---------------------------------------------------------------------------------------------
# Polling: the device code grant
# ---------------------------------------------------------------------------------------------

def device_code_grant(req: TokenRequest, basic: tuple[str, str] | None) -> dict[str, Any]:
    state = current_state()
    store = device_codes()
    device_code = req.required("device_code")
    record = store.find(device_code)
    if record is None or record.client_id != req.app.app_id:
        raise entra_error("BadVerificationCode")
    client_auth = authenticate_without_redirect(req, basic)
    if state.clock.now() > record.expires_at:
        raise entra_error("CodeExpired")
    if record.status == "declined":
        raise entra_error("DeviceFlowDeclined")
    if record.status == "pending":
        raise entra_error("AuthorizationPending")
    # The requested scopes are checked before the code is spent.
    granted = frozenset(record.granted)
    requested = token_endpoint.requested_permissions(req, record.scope, granted)
    redeemed = store.redeem(device_code)
    if redeemed is None or redeemed.user_id is None:   # a second poll, or a concurrent one
        raise entra_error("BadVerificationCode")
    user = state.directory.user_by_id(redeemed.user_id)
    if user is None:   # deleted from the directory since
        raise entra_error("InvalidGrant", reason="The user no longer exists.")
    grant = token_endpoint.UserGrant(
        app=req.app, user=user, tenant_id=record.tenant_id, granted=granted,
        sid=redeemed.sid or "", auth_time=redeemed.auth_time or state.now(),
        include_auth_time=False, family=new_family(client_auth))
    body, _ = token_endpoint.issue_user_tokens(
        req, grant, requested, nonce=None, client_auth=client_auth,
        with_refresh_token="offline_access" in granted)
    return body


token_endpoint.GRANTS[DEVICE_CODE_GRANT] = device_code_grant
