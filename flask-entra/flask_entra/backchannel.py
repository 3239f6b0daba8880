"""OpenID Connect Back-Channel Logout 1.0 (opt-in: Auth(backchannel_logout=True)): the provider
ends a user's sessions here, server to server, without the user's browser.

  POST <prefix>/backchannel-logout   form field `logout_token`: a JWT signed by the provider (§2.5)

`<prefix>` is the folder of the redirect URI's path, as for /login and /logout (views.py).

The request carries no session cookie and no CSRF token (the provider sends it), so everything
rests on the token: checked as §2.6 says by the one JWT check (Provider.verify_jwt: signature,
kid, aud, azp, iss, exp/iat), plus the logout token's own rules here (events, no nonce, sid or
sub, jti). A valid token ends the sessions its `sid` (or, without one, its `sub`) names whose ID
token was issued by the token's `iat`; any failure is a 400 in OAuth's error shape (§2.8), and
every answer is no-store. Both times are the provider's, so they compare without any allowance
for clock skew.

A token of any age is accepted (§2.6 sets no limit), so a provider retrying after an outage of the
app still ends the session. Ending only sessions signed in by its iat is what makes that safe: a
token, replayed or late, cannot end a sign-in that came after it. Its `jti` is remembered for a
while only to refuse a replay without redoing the work.

Finding those sessions needs an index, since sessions are keyed by session id only: when a sign-in
completes (the `signed_in` signal), the new session id and its ID token's iat are recorded under
(iss, sid) and (iss, sub) in the extension's Store, so every process and instance sharing it finds
them; entries live no longer than the session can. A write the store does not make fails the
sign-in (the session is ended again) or the logout (a 400, so the provider retries).

A sign-in still completing when its logout token comes (its code being redeemed) is not indexed
yet, so the logout also leaves a marker, its iat under its (iss, sid) or (iss, sub), and a
sign-in whose ID token was issued by then is refused instead of keeping its session.

Entra does not send logout tokens; the endpoint serves generic providers (oidc_authority). It
only ever acts on a token the configured provider signed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import posixpath
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

from flask import Blueprint, Flask, Response, current_app, jsonify, request, session
from flask.typing import ResponseReturnValue

from .errors import AuthError
from .provider import ProviderError, TokenError
from .session import end_session
from .settings import Settings
from .signals import signed_in
from .store import Store, StoreBusy, StoreUnavailable

log = logging.getLogger(__name__)

LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
FORM_TYPE = "application/x-www-form-urlencoded"
# A logout token is a few hundred bytes to a couple of kilobytes; anything far larger is not one.
MAX_REQUEST_BYTES = 16 * 1024
MAX_JTI_CHARS = 256
# Used jtis are kept only this long: a replay after that is accepted, and ends nothing the first
# delivery did not (only sessions signed in by the token's iat), so it costs work, not sessions.
JTI_RETENTION_SECONDS = 600
LOCK_SECONDS = 5  # the locked steps are one read and one write of the store

SID_INDEX = "backchannel:sid:"
SUB_INDEX = "backchannel:sub:"
SEEN_JTI = "backchannel:jti:"
# Logged-out markers, keyed like the index: the latest iat of a logout token for that key.
ENDED_SID = "backchannel:ended:sid:"
ENDED_SUB = "backchannel:ended:sub:"


class LogoutTokenError(Exception):
    """The request or its logout token is not acceptable; the message says which check failed
    (it is the error_description) and never quotes the token."""


def init_app(app: Flask, settings: Settings) -> None:
    """The route (a blueprint of its own) and the sign-in hook that indexes new sessions."""
    bp = Blueprint(f"{settings.blueprint_name}_backchannel", __name__)
    prefix = posixpath.dirname(settings.redirect_path).rstrip("/")
    bp.add_url_rule(f"{prefix}/backchannel-logout", "backchannel_logout", backchannel_logout,
                    methods=["POST"])
    for refusal in (LogoutTokenError, TokenError):
        bp.register_error_handler(refusal, refused)
    # §2.8: a logout that could not be carried out is a 400 too, in the same shape rather than
    # HTML pages: the provider's keys or metadata, or the store (also its check before every
    # request), failing, or a lock not obtained in time.
    for failure in (ProviderError, StoreUnavailable, StoreBusy):
        bp.register_error_handler(failure, failed)
    bp.after_request(_no_store)
    app.register_blueprint(bp)
    signed_in.connect(_on_signed_in, app, weak=False)


# --------------------------------------------------------------------------------------------
# POST <prefix>/backchannel-logout
# --------------------------------------------------------------------------------------------

def backchannel_logout() -> ResponseReturnValue:
    claims = validate_logout_token(logout_token_from_request())
    store = _store()
    seen_key = SEEN_JTI + _digest(claims["iss"], claims["jti"])
    # Not locked: two deliveries of one token at once may both act, which is harmless: each ends
    # the same sessions by id and removes only those from the index. The jti is marked seen only
    # once its sessions are gone, so a provider's retry after a failure is not refused.
    if store.get(seen_key) is not None:
        raise LogoutTokenError("this logout token was already used (jti)")
    ended = end_sessions(claims)
    store.set(seen_key, b"1", JTI_RETENTION_SECONDS)
    log.info("Back-channel logout: ended %d session(s)", ended)
    return Response(status=200)


def logout_token_from_request() -> str:
    if request.mimetype != FORM_TYPE:
        raise LogoutTokenError(f"the request must be a form ({FORM_TYPE})")
    # Read at most a little more than a logout token can be, whatever the body says of its
    # length: one sent in chunks states none, and request.form would read it all.
    declared = request.content_length or 0
    body = request.stream.read(MAX_REQUEST_BYTES + 1) if declared <= MAX_REQUEST_BYTES else b""
    if declared > MAX_REQUEST_BYTES or len(body) > MAX_REQUEST_BYTES:
        raise LogoutTokenError("the request is too large to hold a logout token")
    form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    values = form.get("logout_token", [])
    if len(values) != 1 or not values[0]:
        raise LogoutTokenError("the request must carry exactly one logout_token")
    return values[0]


def refused(exc: Exception) -> ResponseReturnValue:
    log.warning("Back-channel logout refused: %s", exc)
    return _error(str(exc))


def failed(exc: Exception) -> ResponseReturnValue:
    log.warning("Back-channel logout failed: %s", exc.__class__.__name__)
    return _error("the logout could not be carried out right now; send it again later")


def _error(description: str) -> Response:
    response = jsonify(error="invalid_request", error_description=description)
    response.status_code = 400
    return response


def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"  # §2.8
    return response


# --------------------------------------------------------------------------------------------
# Logout token validation (§2.6)
# --------------------------------------------------------------------------------------------

def validate_logout_token(token: str) -> dict[str, Any]:
    """The claims of a valid logout token from the configured provider; TokenError (the JWT
    check, shared with ID tokens) or LogoutTokenError (the logout token's own rules) if not."""
    provider = current_app.extensions["flask_entra"].provider
    claims = provider.verify_jwt(
        token, kind="logout token", require=["iss", "aud", "iat", "jti"],
        # jti is checked below (PyJWT checks it only from 2.10); sub by verify_jwt.
        options={"verify_sub": False, "verify_jti": False})
    _check_claims(claims)
    return claims


def _check_claims(claims: dict[str, Any]) -> None:
    iat = claims["iat"]
    if not isinstance(iat, int | float) or isinstance(iat, bool):  # PyJWT also takes "123"
        raise LogoutTokenError("the logout token's iat is not a number")
    events = claims.get("events")
    if not isinstance(events, dict):
        raise LogoutTokenError("the logout token has no events object")
    if not isinstance(events.get(LOGOUT_EVENT), dict):
        raise LogoutTokenError("the logout token's events do not hold the back-channel "
                               "logout event")
    # An ID token (which carries a nonce) must never pass for a logout token.
    if "nonce" in claims:
        raise LogoutTokenError("the logout token must not contain a nonce")
    if "sid" in claims and (not isinstance(claims["sid"], str) or not claims["sid"]):
        raise LogoutTokenError("the logout token's sid is not a non-empty string")
    if "sub" not in claims and "sid" not in claims:
        raise LogoutTokenError("the logout token names neither a subject (sub) nor a "
                               "session (sid)")
    jti = claims["jti"]
    if not isinstance(jti, str) or not jti or len(jti) > MAX_JTI_CHARS:
        raise LogoutTokenError("the logout token's jti is not a valid identifier")


# --------------------------------------------------------------------------------------------
# The session index: (iss, sid) and (iss, sub) -> session ids
# --------------------------------------------------------------------------------------------

def _on_signed_in(_sender: Any, user: dict[str, Any], **_extra: Any) -> None:
    """The `signed_in` receiver: the session has its new id; raising ends it again."""
    remember_session(user, session.sid)  # type: ignore[attr-defined]


def remember_session(claims: dict[str, Any], session_id: str) -> None:
    """At sign-in, after the ID token was validated: index the new session under its provider
    session (sid, if the ID token has one) and its user (sub), with its ID token's iat, for as
    long as it can live. StoreUnavailable if the store does not keep it (a session no logout
    token could find must not start), an AuthError if a logout token already ended this
    sign-in."""
    since = issued_at(claims)
    entry = {"session": session_id, "sub": claims["sub"], "since": since,
             "until": time.time() + _settings().session_lifetime}
    keys = _index_and_marker_keys(claims)
    for index_key, _ in keys:
        with _index_entry(index_key) as entries:  # locked: concurrent sign-ins all stay
            entries.append(entry)
    # Checked after indexing, as end_sessions writes its marker before reading the index: of a
    # sign-in and a logout at once, one of the two then always sees the other.
    if _logged_out_since([marker_key for _, marker_key in keys], since):
        log.warning("Sign-in refused: a logout token ended it while it was completing")
        raise AuthError(400, "Sign-in failed", "Your identity provider ended this sign-in (it "
                        "signed you out) while it was completing.", hint="Sign in again.",
                        offer_sign_in=True)


def issued_at(claims: dict[str, Any]) -> float:
    """The ID token's iat: the provider's clock, as a logout token's iat is. Validation requires
    it; the app's clock only in case it is somehow missing."""
    iat = claims.get("iat")
    if isinstance(iat, int | float) and not isinstance(iat, bool):
        return iat
    return time.time()


def end_sessions(claims: dict[str, Any]) -> int:
    """End the sessions the logout token names whose ID token was issued by its iat; return how
    many were indexed (some may have ended already). With a sid: that provider session's (and,
    if the token has a sub, only those of that user); without: all of the user's. Marks the
    sid (or sub) logged out first, for sign-ins not indexed yet."""
    _mark_logged_out(claims)
    if "sid" in claims:
        key = SID_INDEX + _digest(claims["iss"], claims["sid"])
        return _end_indexed_sessions(key, sub=claims.get("sub"), signed_in_by=claims["iat"])
    key = SUB_INDEX + _digest(claims["iss"], claims["sub"])
    return _end_indexed_sessions(key, sub=None, signed_in_by=claims["iat"])


def _index_and_marker_keys(claims: dict[str, Any]) -> list[tuple[str, str]]:
    """The index keys an ID token's session goes under, each with its logged-out marker's key:
    its user's (iss, sub) and, if it has one, its provider session's (iss, sid)."""
    sub = _digest(claims["iss"], claims["sub"])
    keys = [(SUB_INDEX + sub, ENDED_SUB + sub)]
    sid = claims.get("sid")
    if isinstance(sid, str) and sid:
        digest = _digest(claims["iss"], sid)
        keys.append((SID_INDEX + digest, ENDED_SID + digest))
    return keys


def _mark_logged_out(claims: dict[str, Any]) -> None:
    """Record the logout token's iat under its (iss, sid), or without a sid its (iss, sub),
    keeping a later one already there. Kept as long as a session lives: far longer than any
    sign-in takes to complete, without guessing how long that is."""
    if "sid" in claims:
        key = ENDED_SID + _digest(claims["iss"], claims["sid"])
    else:
        key = ENDED_SUB + _digest(claims["iss"], claims["sub"])
    store = _store()
    # Locked: of two logouts at once, the later iat must be the one kept.
    with store.lock(key, LOCK_SECONDS):
        earlier = _marker(store, key)
        latest = claims["iat"] if earlier is None else max(earlier, claims["iat"])
        store.set(key, json.dumps(latest).encode(), _settings().session_lifetime)


def _logged_out_since(marker_keys: list[str], issued: float) -> bool:
    """Whether a logout token for this sign-in's sid or sub was issued no earlier than its ID
    token (iat is in whole seconds: one of the same second may be the later, so it counts)."""
    store = _store()
    markers = (_marker(store, key) for key in marker_keys)
    return any(logged_out is not None and logged_out >= issued for logged_out in markers)


def _marker(store: Store, key: str) -> float | None:
    value = _load(store, key)
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _end_indexed_sessions(key: str, *, sub: str | None, signed_in_by: float) -> int:
    # Read without the lock (each write replaces the entry whole, so a read sees one write), and
    # no lock held while sessions end, so a sign-in of the same user meanwhile is not held up.
    ending = {e["session"] for e in _live_entries(_store(), key, time.time())
              if e["since"] <= signed_in_by and (sub is None or e.get("sub") == sub)}
    for session_id in ending:
        end_session(session_id)
    # Out of the index only once ended: if the store fails midway, the provider's retry still
    # finds them. Removed by id from the entry as it is now, keeping sign-ins made meanwhile.
    if ending:
        with _index_entry(key) as entries:
            entries[:] = [e for e in entries if e["session"] not in ending]
    return len(ending)


@contextlib.contextmanager
def _index_entry(key: str) -> Iterator[list[dict[str, Any]]]:
    """The index entry's live sessions, to change in place; saved (or deleted, if empty) after,
    under the lock, to expire with its last session. Held only for this read and write."""
    store = _store()
    with store.lock(key, LOCK_SECONDS):
        now = time.time()
        entries = _live_entries(store, key, now)
        yield entries
        if entries:
            last = max(e["until"] for e in entries)
            store.set(key, json.dumps(entries).encode(), int(last - now) + 1)
        else:
            store.delete(key)


def _live_entries(store: Store, key: str, now: float) -> list[dict[str, Any]]:
    entries = _load(store, key)
    if not isinstance(entries, list):
        return []
    return [e for e in entries if isinstance(e, dict) and isinstance(e.get("session"), str)
            and isinstance(e.get("until"), int | float) and e["until"] > now
            and isinstance(e.get("since"), int | float)]


def _load(store: Store, key: str) -> Any:
    raw = store.get(key)
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _store() -> Store:
    return current_app.extensions["flask_entra"].store


def _settings() -> Settings:
    return current_app.extensions["flask_entra"].settings


def _digest(issuer: str, value: str) -> str:
    """A fixed-size store key for an (issuer, value) pair; surrogatepass because JSON claims may
    hold lone surrogates, which plain UTF-8 refuses to encode."""
    pair = f"{issuer}\0{value}".encode("utf-8", "surrogatepass")
    return hashlib.sha256(pair).hexdigest()
