"""Sealing: encrypt and authenticate small values with keys derived from the app's SECRET_KEY.

cryptography's Fernet (AES-128-CBC + HMAC-SHA256, with a timestamp) does the work; MultiFernet
gives key rotation for free: values are sealed with SECRET_KEY and still opened with any of
Flask's SECRET_KEY_FALLBACKS. Each use (pending sign-ins, token caches) derives its own keys
(HKDF with the purpose as `info`), so a value sealed for one purpose never opens as another.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


class SealError(Exception):
    """A sealed value that does not open: altered, sealed with another key, or too old."""


class Sealer:
    def __init__(self, secret_keys: Iterable[str | bytes], purpose: str) -> None:
        keys = [_derive(key, purpose) for key in secret_keys if key]
        if not keys:
            raise ValueError("Sealing needs a SECRET_KEY.")
        self._fernet = MultiFernet([Fernet(key) for key in keys])

    def seal(self, data: bytes) -> bytes:
        return self._fernet.encrypt(data)

    def open(self, sealed: bytes | str, max_age: int | None = None) -> bytes:
        try:
            return self._fernet.decrypt(sealed, ttl=max_age)
        except (InvalidToken, TypeError, ValueError):
            raise SealError() from None


def _derive(secret_key: str | bytes, purpose: str) -> bytes:
    material = secret_key.encode() if isinstance(secret_key, str) else secret_key
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
               info=f"flask_entra {purpose}".encode()).derive(material)
    return base64.urlsafe_b64encode(key)
