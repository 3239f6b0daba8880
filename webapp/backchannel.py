"""OpenID Connect Back-Channel Logout 1.0: the provider ends a user's sessions here, server to
server, without the user's browser.

  POST /backchannel-logout   form field `logout_token`: a JWT signed by the provider (§2.5)

The request carries no session cookie and no CSRF token (the provider sends it), so everything
rests on the token: checked as §2.6 says, with the provider's keys and the ID token's rules
(webapp/oidc.py). A valid token ends the sessions its `sid` (or, without one, its `sub`) names
whose ID token was issued by the token's `iat`; any failure is a 400 in OAuth's error shape
(§2.8). Both times are the provider's, so they compare without any allowance for clock skew.

A token of any age is accepted (§2.6 sets no limit), so a provider retrying after an outage of the
app still ends the session. Ending only sessions signed in by its iat is what makes that safe: a
token, replayed or late, cannot end a sign-in that came after it. Its `jti` is remembered for a
while only to refuse a replay without redoing the work.

Finding those sessions needs an index, since the store is keyed by session id only: at sign-in,
remember_session() records the new session id and its ID token's iat under (iss, sid) and
(iss, sub) in the shared index store, so every process and instance sharing the sessions finds
it. A write the store does not make is a store failure (503 at sign-in, 400 here), never ignored.

A sign-in still completing when its logout token comes (its code being redeemed) is not indexed
yet, so the logout also leaves a marker, its iat under its (iss, sid) or (iss, sub), and a
sign-in whose ID token was issued by then is refused instead of starting a session.

Entra does not send logout tokens; the endpoint serves generic providers (OIDC_AUTHORITY). It is
always there, and only ever acts on a token the configured provider signed.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

import jwt
from cachelib.base import BaseCache
from flask import Blueprint, Response, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from . import auth
from .errors import STORE_UNAVAILABLE, AppError, session_store_unavailable
from .oidc import (
    ALLOWED_ALGORITHMS,
    IdTokenError,
    Provider,
    ProviderError,
    decode_signed_token,
)

log = logging.getLogger(__name__)
bp = Blueprint("backchannel", __name__)

LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
FORM_TYPE = "application/x-www-form-urlencoded"
# A logout token is a few hundred bytes to a couple of kilobytes; anything far larger is not one.
MAX_REQUEST_BYTES = 16 * 1024
MAX_JTI_CHARS = 256
# Used jtis are kept only this long: a replay after that is accepted, and ends nothing the first
# delivery did not (only sessions signed in by the token's iat), so it costs work, not sessions.
JTI_RETENTION_SECONDS = 600
LOCK_SECONDS = 5  # the locked steps are one read and one write of the index store

SID_INDEX = "backchannel:sid:"
SUB_INDEX = "backchannel:sub:"
SEEN_JTI = "backchannel:jti:"
# Logged-out markers, keyed like the index: the latest iat of a logout token for that key.
ENDED_SID = "backchannel:ended:sid:"
ENDED_SUB = "backchannel:ended:sub:"


class LogoutTokenError(Exception):
    """The request or its logout token is not acceptable; the message says which check failed
    (it is the error_description) and never quotes the token."""


# --------------------------------------------------------------------------------------------
# POST /backchannel-logout
# --------------------------------------------------------------------------------------------

@bp.post("/backchannel-logout")
def backchannel_logout() -> ResponseReturnValue:
    token = logout_token_from_request()
    claims = validate_logout_token(token)
    records = _index_store()
    seen_key = SEEN_JTI + _digest(claims["iss"], claims["jti"])
    # Not locked: ending sessions may wait far longer than any lock's lease for sessions busy
    # renewing. Two deliveries of one token at once may then both act, which is harmless: each
    # ends the same sessions by id and removes only those from the index. The jti is marked seen
    # only once its sessions are gone, so a provider's retry after a failure is not refused.
    if records.get(seen_key) is not None:
        raise LogoutTokenError("this logout token was already used (jti)")
    ended = end_sessions(claims)
    _store(records, seen_key, True, JTI_RETENTION_SECONDS)
    log.info("Back-channel logout: ended %d session(s)", ended)
    # Cache-Control: no-store (§2.8) comes with every response of the app (webapp/__init__.py).
    return Response(status=200)


def logout_token_from_request() -> str:
    if request.mimetype != FORM_TYPE:
        raise LogoutTokenError(f"the request must be a form ({FORM_TYPE})")
    # Read at most a little more than a logout token can be, whatever the body says of its
    # length: one sent in chunks states none, and request.form would read it all (with Flask
    # 3.1's request.max_content_length, werkzeug cuts such a body short without saying so).
    declared = request.content_length or 0
    body = request.stream.read(MAX_REQUEST_BYTES + 1) if declared <= MAX_REQUEST_BYTES else b""
    if declared > MAX_REQUEST_BYTES or len(body) > MAX_REQUEST_BYTES:
        raise LogoutTokenError("the request is too large to hold a logout token")
    form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    values = form.get("logout_token", [])
    if len(values) != 1 or not values[0]:
        raise LogoutTokenError("the request must carry exactly one logout_token")
    return values[0]


@bp.errorhandler(LogoutTokenError)
def refused(exc: LogoutTokenError) -> ResponseReturnValue:
    log.warning("Back-channel logout refused: %s", exc)
    return _error(str(exc))


def failed(exc: Exception) -> ResponseReturnValue:
    log.warning("Back-channel logout failed: %s", exc.__class__.__name__)
    return _error("the logout could not be carried out right now; send it again later")


# §2.8: a logout that failed is a 400 too, in the same shape rather than the app's HTML pages.
# These are the provider's keys or the store (also the store check that runs before every
# request) failing; AppError is SessionBusy, a lock not obtained in time, or a store write that
# did not happen (session_store_unavailable).
for _failure in (ProviderError, AppError, *STORE_UNAVAILABLE):
    bp.register_error_handler(_failure, failed)


def _error(description: str) -> Response:
    response = jsonify(error="invalid_request", error_description=description)
    response.status_code = 400
    return response


# --------------------------------------------------------------------------------------------
# Logout token validation (§2.6)
# --------------------------------------------------------------------------------------------

def validate_logout_token(token: str) -> dict[str, Any]:
    """The claims of a valid logout token from the configured provider, or LogoutTokenError."""
    provider = current_app.extensions["webapp"].provider
    header = _unverified_header(token)
    if header.get("alg") not in ALLOWED_ALGORITHMS:
        raise LogoutTokenError("the logout token's signing algorithm is not allowed "
                               f"(only {', '.join(ALLOWED_ALGORITHMS)})")
    if not isinstance(header.get("kid"), str) or not header["kid"]:
        raise LogoutTokenError("the logout token does not name its signing key (kid)")
    try:
        key = provider.signing_key(header)
    except IdTokenError:
        raise LogoutTokenError("the logout token is signed with a key the provider does not "
                               "publish") from None
    claims = _verified_claims(token, key, provider.client_id)
    _check_audience(claims, provider.client_id)
    _check_issuer(claims, provider)
    _check_claims(claims)
    return claims


def _unverified_header(token: str) -> dict[str, Any]:
    try:
        header = jwt.get_unverified_header(token)
    except (jwt.PyJWTError, ValueError, TypeError):
        raise LogoutTokenError("the logout token is not a well-formed JWT") from None
    if not isinstance(header, dict):
        raise LogoutTokenError("the logout token is not a well-formed JWT")
    return header


def _verified_claims(token: str, key: jwt.PyJWK, client_id: str) -> dict[str, Any]:
    """Signature, aud, iat (not in the future) and exp (when present), as for ID tokens."""
    try:
        return decode_signed_token(
            token, key, client_id, kind="logout token", require=["iss", "aud", "iat", "jti"],
            # sub and jti are checked below (PyJWT checks them only from 2.10).
            options={"verify_sub": False, "verify_jti": False})
    except IdTokenError as exc:
        raise LogoutTokenError(str(exc)) from None


def _check_audience(claims: dict[str, Any], client_id: str) -> None:
    # As for ID tokens (oidc.py): no other audiences, and azp, if any, is this app.
    audience = claims["aud"]
    if isinstance(audience, list) and set(audience) != {client_id}:
        raise LogoutTokenError("the logout token is also meant for other audiences (aud)")
    if "azp" in claims and claims["azp"] != client_id:
        raise LogoutTokenError("the logout token was issued to another party (azp)")


def _check_issuer(claims: dict[str, Any], provider: Provider) -> None:
    try:
        expected = provider.expected_issuer(claims)
    except IdTokenError:
        raise LogoutTokenError("the logout token has no valid tid for the provider's "
                               "{tenantid} issuer") from None
    if claims["iss"] != expected:
        raise LogoutTokenError("the logout token comes from another issuer (iss)")


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
    for name in ("sub", "sid"):
        if name in claims and (not isinstance(claims[name], str) or not claims[name]):
            raise LogoutTokenError(f"the logout token's {name} is not a non-empty string")
    if "sub" not in claims and "sid" not in claims:
        raise LogoutTokenError("the logout token names neither a subject (sub) nor a "
                               "session (sid)")
    jti = claims["jti"]
    if not isinstance(jti, str) or not jti or len(jti) > MAX_JTI_CHARS:
        raise LogoutTokenError("the logout token's jti is not a valid identifier")


# --------------------------------------------------------------------------------------------
# The session index: (iss, sid) and (iss, sub) -> session ids
# --------------------------------------------------------------------------------------------

def remember_session(claims: dict[str, Any], session_id: str) -> None:
    """At sign-in, after the ID token was validated: index the new session under its provider
    session (sid, if the ID token has one) and its user (sub), with its ID token's iat, for as
    long as it can live. Raises the store-unavailable AppError if the store does not keep it (a
    session no logout token could find must not start), and a 401 AppError if a logout token
    already ended this sign-in."""
    settings = current_app.extensions["webapp"].settings
    since = issued_at(claims)
    entry = {"session": session_id, "sub": claims["sub"], "since": since,
             "until": time.time() + settings.session_lifetime}
    keys = _index_and_marker_keys(claims)
    for index_key, _ in keys:
        _add_to_index(index_key, entry)
    # Checked after indexing, as end_sessions writes its marker before reading the index: of a
    # sign-in and a logout at once, one of the two then always sees the other.
    if _logged_out_since([marker_key for _, marker_key in keys], since):
        log.warning("Sign-in refused: a logout token ended it while it was completing")
        raise AppError(401, "Signed out by your identity provider",
                       "Your identity provider ended this sign-in (it signed you out) while it "
                       "was completing. Please sign in again.", offer_sign_in=True)


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
    settings = current_app.extensions["webapp"].settings
    records = _index_store()
    # Locked: of two logouts at once, the later iat must be the one kept.
    with current_app.session_interface.lock(key, LOCK_SECONDS):
        earlier = _marker(records, key)
        latest = claims["iat"] if earlier is None else max(earlier, claims["iat"])
        _store(records, key, latest, settings.session_lifetime)


def _logged_out_since(marker_keys: list[str], issued: float) -> bool:
    """Whether a logout token for this sign-in's sid or sub was issued no earlier than its ID
    token (iat is in whole seconds: one of the same second may be the later, so it counts)."""
    records = _index_store()
    markers = (_marker(records, key) for key in marker_keys)
    return any(logged_out is not None and logged_out >= issued for logged_out in markers)


def _marker(records: BaseCache, key: str) -> float | None:
    value = records.get(key)
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _add_to_index(key: str, entry: dict[str, Any]) -> None:
    # Locked: two sign-ins of one user at once must both end up in the entry.
    with _index_entry(key) as entries:
        entries.append(entry)


def _end_indexed_sessions(key: str, *, sub: str | None, signed_in_by: float) -> int:
    # Read without the lock (each write replaces the entry whole, so a read sees one write), and
    # no lock held while sessions end: each may wait ~35 s for a renewal holding its session,
    # far past the index lock's lease, after which a sign-in would take the lock over and its
    # addition be lost to a stale list written back.
    ending = {e["session"] for e in _live_entries(_index_store(), key, time.time())
              # Entries recorded before "since" was: sessions older than any token now sent.
              if e.get("since", 0) <= signed_in_by and (sub is None or e["sub"] == sub)}
    for session_id in ending:
        auth.destroy_stored_session(session_id)
    # Out of the index only once destroyed: if the store fails midway, the provider's retry
    # still finds them. Removed by id from the entry as it is now, keeping later sign-ins.
    if ending:
        with _index_entry(key) as entries:
            entries[:] = [e for e in entries if e["session"] not in ending]
    return len(ending)


@contextlib.contextmanager
def _index_entry(key: str) -> Iterator[list[dict[str, Any]]]:
    """The index entry's live sessions, to change in place; saved (or deleted, if empty) after,
    under the lock, to expire with its last session. Held only for this read and write."""
    records = _index_store()
    with current_app.session_interface.lock(key, LOCK_SECONDS):
        now = time.time()
        entries = _live_entries(records, key, now)
        yield entries
        if entries:
            last = max(e["until"] for e in entries)
            _store(records, key, entries, int(last - now) + 1)
        else:
            # Not checked (Redis answers False for a key already gone): a delete that failed
            # leaves only sessions already ended, and the entry expires with them.
            records.delete(key)


def _live_entries(records: BaseCache, key: str, now: float) -> list[dict[str, Any]]:
    return [e for e in records.get(key) or [] if e["until"] > now]


def _store(records: BaseCache, key: str, value: Any, timeout: int) -> None:
    """Set a record, or raise the store-unavailable AppError: cachelib's FileSystemCache reports
    an I/O error (a full disk, a folder gone) only by returning False (Redis raises)."""
    if not records.set(key, value, timeout=timeout):
        log.warning("The session index store did not save a record")
        raise session_store_unavailable()


def _index_store() -> BaseCache:
    return current_app.extensions["webapp"].records.session_index


def _digest(issuer: str, value: str) -> str:
    """A fixed-size store key for an (issuer, value) pair; surrogatepass because JSON claims may
    hold lone surrogates, which plain UTF-8 refuses to encode."""
    pair = f"{issuer}\0{value}".encode("utf-8", "surrogatepass")
    return hashlib.sha256(pair).hexdigest()
