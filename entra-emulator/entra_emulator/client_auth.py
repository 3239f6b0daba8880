"""Who is asking at the token endpoint: the request, and client authentication by secret
(client_secret_post or client_secret_basic) or certificate (private_key_jwt), or none for a
public client (see "Public clients" below).

One method per request (RFC 6749 §2.3): a request that presents two is refused before either
is looked at, so a wrong credential can never ride along with a right one.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus

import jwt
from flask import request

from entra_emulator.claims import CLIENT_AUTH_CERTIFICATE, CLIENT_AUTH_PUBLIC, CLIENT_AUTH_SECRET
from entra_emulator.context import current_state
from entra_emulator.directory import Application
from entra_emulator.errors import entra_error
from entra_emulator.jsonsafe import UnsafeJson, check_jwt
from entra_emulator.redirect_uris import redirect_platform

JWT_BEARER_ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# Entra (Microsoft.IdentityModel) tolerates five minutes of clock skew on assertions.
ASSERTION_CLOCK_SKEW_SECONDS = 300


@dataclass(frozen=True)
class TokenRequest:
    params: Mapping[str, str]
    tenant_segment: str
    tenant_id: str
    app: Application
    # From the `claims` parameter, read (and refused if malformed) before anything is spent.
    client_capabilities: list[str] | None = None

    def required(self, name: str) -> str:
        return required(self.params, name)


def required(params: Mapping[str, str], name: str) -> str:
    value = params.get(name, "")
    if not value.strip():
        raise entra_error("MissingRequiredParameter", name=name)
    return value


# ---------------------------------------------------------------------------------------------
# Client authentication
# ---------------------------------------------------------------------------------------------

def basic_credentials() -> tuple[str, str] | None:
    """client_secret_basic: base64(urlencode(id) ":" urlencode(secret)) (RFC 6749 §2.3.1)."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise entra_error("InvalidRequestParameter", name="Authorization") from None
    client_id, colon, secret = decoded.partition(":")
    if not colon:
        raise entra_error("InvalidRequestParameter", name="Authorization")
    return unquote_plus(client_id), unquote_plus(secret)


def refuse_two_methods(params: Mapping[str, str], basic: tuple[str, str] | None) -> None:
    """RFC 6749 §2.3: "The client MUST NOT use more than one authentication method in each
    request." A secret in the body with a wrong one in the header must not get tokens."""
    methods = [name for name, used in (
        ("client_secret_post", bool(params.get("client_secret"))),
        ("client_secret_basic", basic is not None),
        ("private_key_jwt", bool(params.get("client_assertion"))),
    ) if used]
    if len(methods) > 1:
        raise entra_error("MultipleClientAuthenticationMethods", methods=", ".join(methods))


def requested_client_id(params: Mapping[str, str], basic: tuple[str, str] | None) -> str:
    client_id = params.get("client_id", "").strip()
    if basic is not None:
        if client_id and client_id.lower() != basic[0].strip().lower():
            raise entra_error("InvalidRequestParameter", name="client_id")
        client_id = client_id or basic[0].strip()
    if not client_id:
        raise entra_error("MissingRequiredParameter", name="client_id")
    return client_id


def authenticate_client(req: TokenRequest, basic: tuple[str, str] | None) -> str:
    """Verify the client's credential; returns how it authenticated (appidacr)."""
    assertion = req.params.get("client_assertion")
    if assertion:
        verify_client_assertion(req, assertion)
        return CLIENT_AUTH_CERTIFICATE
    secret = req.params.get("client_secret") or (basic[1] if basic else "")
    if not secret:
        raise entra_error("MissingClientCredential")
    verify_client_secret(req.app, secret)
    return CLIENT_AUTH_SECRET


def verify_client_secret(app: Application, secret: str) -> None:
    for credential in app.password_credentials:
        if hmac.compare_digest(credential.secret_text.encode(), secret.encode()):
            if credential.end is not None and credential.end < datetime.now(UTC):
                raise entra_error("InvalidClientSecretExpiredKeysProvided", app_id=app.app_id)
            return
    raise entra_error("InvalidClientSecret", app_id=app.app_id)


def _thumbprint(header: Mapping[str, Any], name: str) -> bytes | None:
    value = header.get(name)
    if not isinstance(value, str):
        return None
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        return None


def assertion_audiences(req: TokenRequest) -> list[str]:
    """The token endpoint URLs an assertion may name as its audience."""
    base = current_state().https_base
    segments = dict.fromkeys([req.tenant_segment, req.tenant_id,
                              current_state().directory.tenant.default_domain])
    return [f"{base}/{segment}/oauth2/{path}" for segment in segments
            for path in ("v2.0/token", "token")]


def verify_client_assertion(req: TokenRequest, assertion: str) -> None:
    """private_key_jwt with a registered certificate: PS256 + x5t#S256 or RS256 + x5t, as
    MSAL sends them (entra-protocol.md §1.3)."""
    if req.params.get("client_assertion_type") != JWT_BEARER_ASSERTION:
        raise entra_error("InvalidRequestParameter", name="client_assertion_type")
    try:
        check_jwt(assertion)
        header = jwt.get_unverified_header(assertion)
    except (jwt.PyJWTError, UnsafeJson) as problem:
        raise entra_error("InvalidJwtToken", reason=str(problem)) from None
    algorithm = header.get("alg")
    if algorithm not in ("PS256", "RS256"):
        raise entra_error("ClientAssertionInvalid",
                          reason=f"The client assertion's algorithm {algorithm!r} is not "
                                 "supported; use PS256 or RS256.")
    sha256, sha1 = _thumbprint(header, "x5t#S256"), _thumbprint(header, "x5t")
    credential = req.app.key_credential_for(sha1=sha1, sha256=sha256)
    if credential is None:
        used = (sha256 or sha1 or b"").hex().upper()
        raise entra_error("ClientAssertionInvalid", reason=(
            "The certificate with identifier used to sign the client assertion is not "
            f"registered on application. [Reason - The key was not found., Thumbprint of key "
            f"used by client: '{used}', Please visit the Azure Portal, Graph Explorer or "
            "directly use MS Graph to see configured keys for app Id "
            f"'{req.app.app_id}'. Review the documentation at https://aka.ms/certCreds.]"))
    try:
        claims = jwt.decode(assertion, credential.certificate.public_key(),
                            algorithms=[algorithm], audience=assertion_audiences(req),
                            leeway=ASSERTION_CLOCK_SKEW_SECONDS,
                            options={"require": ["aud", "exp", "iss", "sub"]})
    except jwt.InvalidSignatureError:
        raise entra_error("ClientAssertionInvalid",
                          reason="Client assertion failed signature validation.") from None
    except (jwt.ExpiredSignatureError, jwt.ImmatureSignatureError):
        raise entra_error("ClientAssertionNotInValidTimeRange") from None
    except jwt.InvalidAudienceError:
        raise entra_error("ClientAssertionAudienceMismatch") from None
    except jwt.PyJWTError as problem:
        raise entra_error("InvalidJwtToken", reason=str(problem)) from None
    if str(claims["iss"]).lower() != req.app.app_id or str(claims["sub"]).lower() != \
            req.app.app_id:
        raise entra_error("ClientAssertionAppIdMismatch")



# ---------------------------------------------------------------------------------------------
# Public clients (desktop, mobile and console apps, which hold no secret)
# ---------------------------------------------------------------------------------------------
# Who must authenticate (entra-protocol.md §1.3; redirect_uris.py):
# - a code issued for a `publicClient.redirectUris` URI is redeemed without a credential, and
#   one presented is refused (AADSTS700025, Entra's answer to apps that registered their
#   redirect URI under "Mobile and desktop applications" and still send their secret); a code
#   issued for a `web.redirectUris` URI needs the app's credential (AADSTS7000218 without);
# - the flows without a redirect URI (device code, password) run without a credential when
#   the app is a fallback public client (`isFallbackPublicClient`, the portal's "Allow public
#   client flows"), else need its credential (7000218, Entra's answer when that switch is
#   off). A credential sent by a fallback public client is refused as above [inferred];
# - a refresh token is redeemed as the grant that issued it was: its family remembers whether
#   that was public (`public:` prefix), so a web app's refresh token still needs its secret.
# Tokens issued without a credential say so: appidacr / azpacr "0".

PUBLIC_FAMILY_PREFIX = "public:"


def presents_credential(req: TokenRequest, basic: tuple[str, str] | None) -> bool:
    return bool(req.params.get("client_secret") or req.params.get("client_assertion")
                or basic is not None)


def authenticate(req: TokenRequest, basic: tuple[str, str] | None, *, public: bool) -> str:
    """appidacr: "0" for a public client (which must not present a credential), else the
    credential's (authenticate_client)."""
    if not public:
        return authenticate_client(req, basic)
    if presents_credential(req, basic):
        raise entra_error("InvalidClientPublicClientWithCredential")
    return CLIENT_AUTH_PUBLIC


def authenticate_for_redirect(req: TokenRequest, basic: tuple[str, str] | None,
                              redirect_uri: str) -> str:
    """For a code: public when it was issued for a public-client redirect URI."""
    return authenticate(req, basic,
                        public=redirect_platform(req.app, redirect_uri) == "public")


def authenticate_without_redirect(req: TokenRequest, basic: tuple[str, str] | None) -> str:
    """For the device code and password grants."""
    return authenticate(req, basic, public=req.app.is_fallback_public_client)


def new_family(client_auth: str) -> str:
    """A refresh token family id that remembers whether its grant was a public client's."""
    family = str(uuid.uuid4())
    return PUBLIC_FAMILY_PREFIX + family if client_auth == CLIENT_AUTH_PUBLIC else family


def authenticate_for_family(req: TokenRequest, basic: tuple[str, str] | None,
                            family: str) -> str:
    return authenticate(req, basic, public=family.startswith(PUBLIC_FAMILY_PREFIX))
