"""Defect injection, modelled on the OpenID Foundation's RP certification tests.

`DefectInjector.add(client_id, defect)` makes the next ID token issued to that client carry one
defect; a relying party that validates ID tokens properly must refuse every one of them except
`rotated_key` (which it must accept after refetching the JWKS once). See security-checklist.md,
section B (SEC-B3, B6, B7, B8; `wrong_sub` in a refresh response is B9).

Two defects are of the authorization response instead (section C, mix-up): `authz_iss_wrong`
gives the next one an RFC 9207 `iss` that is not the issuer, and `authz_iss_missing` leaves `iss`
out although the discovery document promises it. Each kind is consumed by its own kind of
response, so one queue may hold both.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization

from entra_emulator.claims import pairwise_subject
from entra_emulator.db import StateDB
from entra_emulator.keys import b64url

# ID-token defects (the name predates the authorization-response ones below).
DEFECTS = (
    "bad_signature", "alg_none", "hs256_public_key", "wrong_iss", "wrong_aud", "wrong_nonce",
    "missing_sub", "missing_iat", "expired", "iat_future", "no_kid", "unknown_kid",
    "rotated_key", "aud_extra", "azp_wrong", "wrong_sub",
)
AUTHORIZATION_RESPONSE_DEFECTS = ("authz_iss_wrong", "authz_iss_missing")
ALL_DEFECTS = DEFECTS + AUTHORIZATION_RESPONSE_DEFECTS
MAX_COUNT = 10_000
# Well beyond the 5-minute clock skew relying parties allow.
TIME_SHIFT_SECONDS = 3600
# Header fields that name the signing key; they are set by whoever signs.
_KEY_HEADERS = ("kid", "x5t", "alg")


class DefectInjector:
    """Pending defects per client id, in order; an ID token consumes the first ID-token defect,
    an authorization response the first authorization-response defect. Kept in the state
    database, so a defect queued through one worker is used by whichever issues next.

    `authorization_response_iss`: whether the emulator sends (and advertises) RFC 9207's `iss`;
    leaving it out is a defect only then.
    """

    def __init__(self, authorization_response_iss: bool = False,
                 db: StateDB | None = None) -> None:
        self._db = db or StateDB.in_memory()
        self.authorization_response_iss = authorization_response_iss

    def add(self, client_id: str, defect: str, count: int = 1) -> None:
        if defect not in ALL_DEFECTS:
            raise ValueError(f"unknown defect {defect!r}; known defects: "
                             f"{', '.join(ALL_DEFECTS)}")
        if defect == "authz_iss_missing" and not self.authorization_response_iss:
            raise ValueError("authz_iss_missing needs the emulator to send the iss parameter "
                             "(authorization_response_iss=True, --authorization-response-iss); "
                             "otherwise every response already lacks it")
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_COUNT:
            raise ValueError(f"count must be a whole number from 1 to {MAX_COUNT} "
                             f"(got {count!r})")
        with self._db.write() as connection:
            connection.executemany("INSERT INTO defects (client_key, defect) VALUES (?, ?)",
                                   [(_client_key(client_id), defect)] * count)

    def clear(self) -> None:
        self._db.run("DELETE FROM defects")

    def pending(self) -> list[dict[str, str]]:
        rows = self._db.all("SELECT client_key, defect FROM defects ORDER BY seq")
        order = list(dict.fromkeys(client for client, _ in rows))   # clients as first queued
        return [{"client_id": client_id, "defect": defect}
                for client_id in order for client, defect in rows if client == client_id]

    def next_defect(self, client_id: str, kinds: tuple[str, ...] = DEFECTS) -> str | None:
        """Consume and return this client's first pending defect of `kinds`, if any (on
        whichever worker asks first)."""
        marks = ", ".join("?" * len(kinds))
        while True:
            row = self._db.one(f"SELECT seq, defect FROM defects WHERE client_key = ? "  # noqa: S608
                               f"AND defect IN ({marks}) ORDER BY seq LIMIT 1",
                               (_client_key(client_id), *kinds))
            if row is None:
                return None
            if self._db.run("DELETE FROM defects WHERE seq = ?", (row[0],)):
                return row[1]

    def sign_id_token(self, state: Any, client_id: str, header_extra: dict,
                      claims: dict) -> str:
        """The ID token for `claims`, with this client's next pending defect if there is one."""
        defect = self.next_defect(client_id)
        if defect is None:
            return state.keys.sign(claims, headers=header_extra)
        return _DEFECTIVE_SIGNERS[defect](state, client_id, dict(header_extra), dict(claims))

    def response_issuer(self, client_id: str, issuer: str) -> str | None:
        """The RFC 9207 `iss` for this client's next authorization response (None: leave it
        out): the issuer when the emulator sends it, unless a defect for the client is pending.
        A wrong `iss` is sent even when the emulator does not advertise the parameter: an app
        must refuse an `iss` that is present and wrong either way (security checklist SEC-C3)."""
        defect = self.next_defect(client_id, AUTHORIZATION_RESPONSE_DEFECTS)
        if defect == "authz_iss_wrong":
            # Same shape, another issuer: what a mix-up attacker's server would send (FAPI2's
            # invalid-authorization-response-iss test).
            return issuer + "1"
        if defect == "authz_iss_missing":
            return None
        return issuer if self.authorization_response_iss else None


def _client_key(client_id: str) -> str:
    # Client ids are GUIDs, which Entra (and the directory) compare case-insensitively.
    return client_id.strip().lower()


# ---------------------------------------------------------------------------------------------
# Token plumbing
# ---------------------------------------------------------------------------------------------

def _b64url_json(value: dict[str, Any]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode("utf-8"))


def _without_key_headers(header_extra: dict) -> dict:
    return {name: value for name, value in header_extra.items() if name not in _KEY_HEADERS}


def _another_app_id() -> str:
    return str(uuid.uuid4())


# ---------------------------------------------------------------------------------------------
# Defects in the signature or header
# ---------------------------------------------------------------------------------------------

def _bad_signature(state: Any, client_id: str, header_extra: dict, claims: dict) -> str:
    token = state.keys.sign(claims, headers=header_extra)
    signing_input, _, signature = token.rpartition(".")
    raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    flipped = bytes(byte ^ 0xFF for byte in raw)
    return f"{signing_input}.{b64url(flipped)}"


def _alg_none(state: Any, client_id: str, header_extra: dict, claims: dict) -> str:
    return jwt.encode(claims, None, algorithm="none", headers=_without_key_headers(header_extra))


def _hs256_public_key(state: Any, client_id: str, header_extra: dict, claims: dict) -> str:
    # The key-confusion attack: HMAC keyed with the provider's *public* RSA key (which anyone
    # can fetch from the JWKS), hoping the RP verifies "with the key" whatever alg says. PyJWT
    # refuses to use a PEM public key as an HMAC secret (it guards against exactly this), so
    # the token is assembled by hand.
    key = state.keys.current
    secret = key.public_key.public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    header = {"typ": "JWT", **_without_key_headers(header_extra), "alg": "HS256",
              "kid": key.kid}
    signing_input = f"{_b64url_json(header)}.{_b64url_json(claims)}"
    signature = hmac.new(secret, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def _no_kid(state: Any, client_id: str, header_extra: dict, claims: dict) -> str:
    # Signed with the real current key; only the kid (and x5t) header is missing.
    return jwt.encode(claims, state.keys.current.private_key, algorithm="RS256",
                      headers={"typ": "JWT", **_without_key_headers(header_extra)})


def _unknown_kid(state: Any, client_id: str, header_extra: dict, claims: dict) -> str:
    return state.keys.sign(claims, headers=header_extra, key=state.keys.unpublished_key())


def _rotated_key(state: Any, client_id: str, header_extra: dict, claims: dict) -> str:
    # A genuine token under a key the RP has not seen yet: published only now, so an RP with a
    # cached JWKS must refetch it once and then accept.
    return state.keys.sign(claims, headers=header_extra, key=state.keys.publish_new_key())


# ---------------------------------------------------------------------------------------------
# Defects in the claims (properly signed)
# ---------------------------------------------------------------------------------------------

def _signed_with_changed_claims(change: Callable[[dict, str], None]) -> Callable[..., str]:
    def sign(state: Any, client_id: str, header_extra: dict, claims: dict) -> str:
        change(claims, client_id)
        return state.keys.sign(claims, headers=header_extra)
    return sign


def _wrong_iss(claims: dict, client_id: str) -> None:
    # Real Entra's issuer for the same tenant: well-formed, but not the authority the RP uses.
    claims["iss"] = f"https://login.microsoftonline.com/{claims.get('tid', uuid.uuid4())}/v2.0"


def _wrong_aud(claims: dict, client_id: str) -> None:
    claims["aud"] = _another_app_id()


def _wrong_nonce(claims: dict, client_id: str) -> None:
    claims["nonce"] = hashlib.sha256(uuid.uuid4().bytes).hexdigest()


def _missing_sub(claims: dict, client_id: str) -> None:
    claims.pop("sub", None)


def _missing_iat(claims: dict, client_id: str) -> None:
    claims.pop("iat", None)


def _expired(claims: dict, client_id: str) -> None:
    issued_at, lifetime = _issued_at(claims), _lifetime(claims)
    claims["exp"] = issued_at - TIME_SHIFT_SECONDS
    claims["iat"] = claims["nbf"] = claims["exp"] - lifetime


def _iat_future(claims: dict, client_id: str) -> None:
    claims["iat"] = _issued_at(claims) + TIME_SHIFT_SECONDS


def _issued_at(claims: dict) -> int:
    # Relative to the token's own iat, i.e. the emulator's clock (which tests may move).
    iat = claims.get("iat")
    return iat if isinstance(iat, int) else int(time.time())


def _aud_extra(claims: dict, client_id: str) -> None:
    claims["aud"] = [client_id, _another_app_id()]


def _azp_wrong(claims: dict, client_id: str) -> None:
    claims["azp"] = _another_app_id()


def _wrong_sub(claims: dict, client_id: str) -> None:
    # Another user of the same tenant, as this app sees them: a well-formed pairwise `sub`, and
    # that user's `oid` (when the token carries one). Valid on its own; only an RP comparing it
    # with the session's user (OIDC Core 12.2, on refresh) can tell.
    other_user = str(uuid.uuid4())
    claims["sub"] = pairwise_subject(str(claims.get("tid", "")), client_id, other_user)
    if "oid" in claims:
        claims["oid"] = other_user


def _lifetime(claims: dict) -> int:
    exp, iat = claims.get("exp"), claims.get("iat")
    if isinstance(exp, int) and isinstance(iat, int) and exp > iat:
        return exp - iat
    return 3900


_DEFECTIVE_SIGNERS: dict[str, Callable[..., str]] = {
    "bad_signature": _bad_signature,
    "alg_none": _alg_none,
    "hs256_public_key": _hs256_public_key,
    "wrong_iss": _signed_with_changed_claims(_wrong_iss),
    "wrong_aud": _signed_with_changed_claims(_wrong_aud),
    "wrong_nonce": _signed_with_changed_claims(_wrong_nonce),
    "missing_sub": _signed_with_changed_claims(_missing_sub),
    "missing_iat": _signed_with_changed_claims(_missing_iat),
    "expired": _signed_with_changed_claims(_expired),
    "iat_future": _signed_with_changed_claims(_iat_future),
    "no_kid": _no_kid,
    "unknown_kid": _unknown_kid,
    "rotated_key": _rotated_key,
    "aud_extra": _signed_with_changed_claims(_aud_extra),
    "azp_wrong": _signed_with_changed_claims(_azp_wrong),
    "wrong_sub": _signed_with_changed_claims(_wrong_sub),
}
assert set(_DEFECTIVE_SIGNERS) == set(DEFECTS)  # every defect has a signer
