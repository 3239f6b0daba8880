"""Microsoft Graph client: bearer token in the header only, pooled connections, timeouts, the
CAE claims challenge, and a bounded retry that honours Retry-After on 429/503/504."""

from __future__ import annotations

import base64
import binascii
import email.utils
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests

from .errors import AppError

log = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({429, 503, 504})
MAX_RETRIES = 2
DEFAULT_RETRY_AFTER = 1.0  # seconds, when a retryable answer names no Retry-After
MAX_PHOTO_BYTES = 512 * 1024
AUTH_PARAM = re.compile(r'(\w+)\s*=\s*"([^"]*)"')


@dataclass(frozen=True)
class GraphResult:
    status: int
    headers: dict[str, str]
    content: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        try:
            return json.loads(self.content)
        except ValueError:
            return None


class GraphClient:
    def __init__(self, http: requests.Session, endpoint: str, *, max_wait: float,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._http = http
        self.endpoint = endpoint
        self.max_wait = max_wait
        self._sleep = sleep

    @property
    def photo_url(self) -> str | None:
        """The signed-in user's photo, when the endpoint is a user (`/me` or `/users/{id}`)."""
        path = urlsplit(self.endpoint).path.rstrip("/")
        if path.endswith("/me") or "/users/" in path:
            return f"{self.endpoint}/photo/$value"
        return None

    def get(self, url: str, access_token: str) -> GraphResult:
        """GET with the token in the Authorization header; retry throttling within bounds."""
        for attempt in range(MAX_RETRIES + 1):
            result = self._get_once(url, access_token)
            if result.status not in RETRYABLE_STATUSES or attempt == MAX_RETRIES:
                return result
            wait = retry_after_seconds(result.headers.get("retry-after"))
            if wait > self.max_wait:
                return result  # too long to hold the page; tell the user when to come back
            log.info("Graph answered %s; retrying in %.1f s", result.status, wait)
            self._sleep(wait)
        return result

    def _get_once(self, url: str, access_token: str) -> GraphResult:
        try:
            response = self._http.get(
                url, headers={"Authorization": f"Bearer {access_token}"},
                # Never carry the bearer token through a redirect.
                allow_redirects=False)
        except requests.RequestException as exc:
            raise graph_unreachable(url, exc) from None
        return GraphResult(response.status_code,
                           {k.lower(): v for k, v in response.headers.items()}, response.content)


def claims_challenge(result: GraphResult) -> str | None:
    """The decoded `claims` of a CAE challenge (401 with error="insufficient_claims"), or None."""
    if result.status != 401:
        return None
    params = dict(AUTH_PARAM.findall(result.headers.get("www-authenticate", "")))
    if params.get("error") != "insufficient_claims" or not params.get("claims"):
        return None
    encoded = params["claims"]
    try:
        return base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=False).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None


def retry_after_seconds(value: str | None) -> float:
    """Retry-After as seconds: delta-seconds (Graph also sends fractions) or an HTTP date."""
    if not value:
        return DEFAULT_RETRY_AFTER
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return DEFAULT_RETRY_AFTER
    return max(0.0, when.timestamp() - time.time())


def graph_error(result: GraphResult) -> AppError:
    """The page for a Graph answer we cannot use, with Graph's own code and message."""
    body = result.json()
    error = body.get("error") if isinstance(body, dict) else None
    code = _as_text(error.get("code"), limit=200) if isinstance(error, dict) else ""
    message = _as_text(error.get("message")) if isinstance(error, dict) else ""
    if result.status in RETRYABLE_STATUSES:
        wait = retry_after_seconds(result.headers.get("retry-after"))
        verb = "throttling requests" if result.status == 429 else "temporarily unavailable"
        return AppError(503, "Microsoft Graph is busy",
                        f"Microsoft Graph is {verb} (HTTP {result.status}). Try again in "
                        f"{int(wait + 0.999)} seconds.",
                        code=code, detail=message, retry_after=int(wait + 0.999))
    return AppError(502, "Microsoft Graph returned an error",
                    f"Microsoft Graph answered HTTP {result.status}.",
                    code=code, detail=message,
                    hint="Sign out and in again if the problem persists." if result.status in
                    (401, 403) else "")


def _as_text(value: Any, limit: int = 1000) -> str:
    """Graph's error code or message for the page: a string as sent, any other JSON value as
    JSON (a misbehaving Graph must not turn its error into ours), shortened."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text[:limit]


def graph_unreachable(url: str, exc: Exception) -> AppError:
    parts = urlsplit(url)
    cause = "did not answer in time" if isinstance(exc, requests.Timeout) else (
        "its TLS certificate is not trusted" if isinstance(exc, requests.exceptions.SSLError)
        else "the connection failed")
    return AppError(502, "Microsoft Graph is unreachable",
                    f"Could not reach Microsoft Graph at {parts.scheme}://{parts.netloc}: {cause}.",
                    hint="Check ENDPOINT (and CA_BUNDLE for a local Graph).")


def photo_data_uri(result: GraphResult) -> str | None:
    """The photo as a data: URI for the profile card, if Graph returned a small image."""
    content_type = result.headers.get("content-type", "").split(";")[0].strip().lower()
    if not result.ok or content_type not in ("image/jpeg", "image/png", "image/gif") or not (
            0 < len(result.content) <= MAX_PHOTO_BYTES):
        return None
    return f"data:{content_type};base64,{base64.b64encode(result.content).decode()}"
