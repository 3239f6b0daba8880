"""The one pooled HTTP client every outbound call uses: MSAL, discovery, JWKS and Graph."""

from __future__ import annotations

from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry


class OutboundSession(requests.Session):
    """A requests.Session with a default timeout (requests has none) and trust set once.

    Shared by all threads of a process: requests' connection pool is thread-safe for this use,
    and reusing it saves a TLS handshake per call.
    """

    def __init__(self, timeout: float, ca_bundle: str = "") -> None:
        super().__init__()
        self.default_timeout = timeout
        if ca_bundle:
            # Explicit trust for this client only; otherwise requests' default (certifi or
            # REQUESTS_CA_BUNDLE) applies. TLS verification is never turned off.
            self.verify = ca_bundle
        # Retry once only when the connection could not be made (nothing was sent, so it is safe
        # even for POST). Never on an answer: urllib3 would otherwise sleep out any Retry-After
        # on 429/503 itself, unbounded; Graph retries are decided in graph.py.
        retry = Retry(total=1, connect=1, read=0, redirect=0, status=0, other=0,
                      respect_retry_after_header=False)
        adapter = HTTPAdapter(max_retries=retry, pool_connections=4, pool_maxsize=32)
        self.mount("https://", adapter)
        self.mount("http://", adapter)

    def request(self, method: str | bytes, url: str | bytes, *args: Any,  # type: ignore[override]
                **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.default_timeout)
        # Never follow a redirect: requests would resend a token request's body (client secret,
        # code, verifier) to wherever a 307/308 points (RFC 9700 §4.12). urllib3's
        # Retry(redirect=0) does not stop this; requests follows redirects itself.
        kwargs.setdefault("allow_redirects", False)
        if self.verify is not True:
            # Per request, because requests lets REQUESTS_CA_BUNDLE override a session's verify.
            kwargs.setdefault("verify", self.verify)
        return super().request(method, url, *args, **kwargs)
