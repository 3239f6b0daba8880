"""Entra's error answers: the AADSTS catalogue and the JSON body / redirect / page shapes.

Every protocol check raises `EntraError`; the endpoint glue turns it into what Entra sends:
a JSON body at the token endpoint, a redirect to the app at authorize (once the redirect URI
is trusted), or an error page. Texts are Entra's wire texts where known (entra-protocol.md §1.4,
reference-error-codes.md); where Entra's exact text is not documented the comment says so.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from flask import Response, request

ERROR_LOOKUP_URI = "https://login.microsoftonline.com/error?code={code}"

# Entra's internal error name: (AADSTS code, OAuth error, HTTP status at the token endpoint,
# error_description template).
CATALOGUE: dict[str, tuple[int, str, int, str]] = {
    "InvalidReplyTo": (
        50011, "invalid_request", 400,
        "The redirect URI '{redirect_uri}' specified in the request does not match the "
        "redirect URIs configured for the application '{app_id}'. Make sure the redirect URI "
        "sent in the request matches one added to your application in the Azure portal. "
        "Navigate to https://aka.ms/redirectUriMismatchError to learn more about how to fix "
        "this."),
    # 50011 as the token endpoint sends it: the code was issued for another redirect URI.
    "CodeRedirectUriMismatch": (
        50011, "invalid_grant", 400,
        "The reply address '{redirect_uri}' does not match the reply address "
        "'{code_redirect_uri}' provided when requesting Authorization code."),
    "NoReplyAddressRegistered": (
        500113, "invalid_request", 400, "No reply address is registered for the application."),
    "NoReplyAddressProvided": (900971, "invalid_request", 400, "No reply address provided."),
    # 700038 is what Entra answers for the all-zero GUID, at the token endpoint (differential
    # capture of 2026-08-13) and at authorize (an error page quoted in 2024); any other unknown
    # client id stays 700016 (captures up to 2026-05). See `entra_error`.
    "InvalidApplicationIdentifier": (
        700038, "unauthorized_client", 400,
        "{app_id} is not a valid application identifier."),
    "UnauthorizedClient_DoesNotMatchRequest": (
        700016, "unauthorized_client", 400,
        "Application with identifier '{app_id}' was not found in the directory '{tenant}'. "
        "This can happen if the application has not been installed by the administrator of "
        "the tenant or consented to by any user in the tenant. You may have sent your "
        "authentication request to the wrong tenant."),
    "InvalidTenantName": (
        90002, "invalid_request", 400,
        "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are "
        "signing into the correct cloud. Check with your subscription administrator, this may "
        "happen if there are no active subscriptions for the tenant."),
    "MissingRequiredParameter": (
        900144, "invalid_request", 400,
        "The request body must contain the following parameter: '{name}'."),
    "InvalidRequestParameter": (
        90100, "invalid_request", 400, "The '{name}' parameter is empty or not valid."),
    "UnsupportedPrompt": (90023, "invalid_request", 400, "Unsupported 'prompt' value."),
    "BadResourceRequestInvalidRequest": (
        900561, "invalid_request", 400,
        "The endpoint only accepts POST, OPTIONS requests. Received a {method} request."),
    "UnsupportedGrantType": (
        70003, "unsupported_grant_type", 400,
        "The app requested an unsupported grant type '{grant_type}'."),
    "UnsupportedResponseType": (
        70005, "unsupported_response_type", 400,
        "The provided value for the input parameter 'response_type' is not allowed for this "
        "request. Expected value is 'code'."),
    "UnsupportedResponseMode": (
        70007, "invalid_request", 400,
        "The provided value '{response_mode}' for the input parameter 'response_mode' is not "
        "supported."),
    "InvalidScope": (
        70011, "invalid_scope", 400,
        "The provided value for the input parameter 'scope' isn't valid. The scope {scope} "
        "isn't valid."),
    "InvalidResourceServicePrincipalNotFound": (
        500011, "invalid_resource", 400,
        "The resource principal named {resource} was not found in the tenant named "
        "{tenant_name}. This can happen if the application has not been installed by the "
        "administrator of the tenant or consented to by any user in the tenant. You might have "
        "sent your authentication request to the wrong tenant."),
    "ClientCredentialsScopeWithoutDefault": (
        1002012, "invalid_scope", 400,
        "The provided value for scope {scope} is not valid. Client credential flows must have "
        "a scope value with /.default suffixed to the resource identifier (application ID "
        "URI)."),
    "InvalidMultipleResourcesScope": (
        700022, "invalid_scope", 400,
        "The provided value for the input parameter scope is not valid because it contains "
        "more than one resource. Scope {scope} is not valid."),
    "InvalidClientSecret": (
        7000215, "invalid_client", 401,
        "Invalid client secret provided. Ensure the secret being sent in the request is the "
        "client secret value, not the client secret ID, for a secret added to app "
        "'{app_id}'."),
    "MissingClientCredential": (
        7000218, "invalid_client", 401,
        "The request body must contain the following parameter: 'client_assertion' or "
        "'client_secret'."),
    # RFC 6749 §2.3: a client MUST NOT use more than one authentication method per request.
    # Entra documents no answer to two; the code and text are inferred: 90100 is what Entra
    # sends for a parameter it cannot use (InvalidRequestParameter).
    "MultipleClientAuthenticationMethods": (
        90100, "invalid_request", 400,
        "The request uses more than one client authentication method ({methods}). Send "
        "exactly one: client_secret, an Authorization: Basic header, or client_assertion."),
    "InvalidClientSecretExpiredKeysProvided": (
        7000222, "invalid_client", 401,
        "The provided client secret keys for app '{app_id}' are expired. Visit the Azure "
        "portal to create new keys for your app: https://aka.ms/NewClientSecret, or consider "
        "using certificate credentials for added security: https://aka.ms/certCreds."),
    # Entra's texts for the client assertion failures vary by case; the codes are Entra's.
    "InvalidJwtToken": (
        50027, "invalid_request", 400, "JWT token is invalid or malformed. {reason}"),
    "ClientAssertionAppIdMismatch": (
        700021, "invalid_client", 401,
        "Client assertion application identifier doesn't match 'client_id' parameter."),
    "ClientAssertionAudienceMismatch": (
        700023, "invalid_client", 401,
        "Client assertion audience claim does not match Realm issuer. Review the "
        "documentation at https://aka.ms/certCreds."),
    "ClientAssertionNotInValidTimeRange": (
        700024, "invalid_client", 401,
        "Client assertion is not within its valid time range. Review the documentation at "
        "https://aka.ms/certCreds."),
    "ClientAssertionInvalid": (700027, "invalid_client", 401, "{reason}"),
    "ExpiredOrRevokedGrant": (
        70008, "invalid_grant", 400,
        "The provided authorization code or refresh token has expired due to inactivity. "
        "Send a new interactive authorization request for this user and resource."),
    "ExpiredOrRevokedGrantInactiveToken": (
        700082, "invalid_grant", 400,
        "The refresh token has expired due to inactivity. The token was issued on {issued} "
        "and was inactive for {inactive}."),
    "CodeAlreadyRedeemed": (
        54005, "invalid_grant", 400,
        "OAuth2 Authorization code was already redeemed, please retry with a new valid code "
        "or use an existing refresh token."),
    "InvalidGrant": (70000, "invalid_grant", 400, "Provided grant is invalid or malformed. "
                     "{reason}"),
    "CodeVerifierMismatch": (
        501481, "invalid_grant", 400,
        "The Code_Verifier does not match the code_challenge supplied in the authorization "
        "request."),
    "InvalidCodeChallengeSize": (
        501491, "invalid_request", 400, "Invalid size of Code_Challenge parameter."),
    "MalformedRequest": (
        9002313, "invalid_grant", 400, "Invalid request. Request is malformed or invalid."),
    "DelegationDoesNotExist": (
        65001, "invalid_grant", 400,
        "The user or administrator has not consented to use the application with ID "
        "'{app_id}' named '{app_name}'. Send an interactive authorization request for this "
        "user and resource."),
    # On-behalf-of (obo.py; entra-authorization.md §4.2). 50013's texts vary with the reason;
    # the signature one is Entra's wire text, the others follow its pattern [inferred].
    "InvalidAssertion": (50013, "invalid_grant", 400, "{reason}"),
    "AssertionAudienceMismatch": (
        500131, "invalid_grant", 400,
        "Assertion audience does not match the Client app presenting the assertion. The "
        "audience in the assertion was '{audience}' and the expected audience is '{app_id}' "
        "or one of the Application Uris of this application with App ID '{app_id}'"
        "({app_name}). The downstream client must request a token for the expected audience "
        "(the application that made the OBO request) and this application should use that "
        "token as the assertion."),
    "AssertionNotWithinValidTimeRange": (
        500133, "invalid_grant", 400,
        "Assertion isn't within its valid time range. Ensure that the access token isn't "
        "expired before using it for user assertion, or request a new token. Current time: "
        "{now}, expiry time of assertion {expires}."),
    # The `error` value is not documented; invalid_grant (the assertion is the grant) is
    # [inferred].
    "ApplicationOnBehalfOfNotAllowed": (
        7000114, "invalid_grant", 400,
        "Application '{app_id}' isn't allowed to make application on-behalf-of calls."),
    # entra-authorization.md §3.2: an Admin-type permission a user may not consent to.
    # The text is the one Entra sends with 90094.
    "AdminConsentRequired": (
        90094, "access_denied", 400, "The grant requires admin permission."),
    # §1.2: appRoleAssignmentRequired without an assignment. The user's text is from a capture
    # of Entra's error page; the application's from a capture of the token endpoint's answer,
    # whose `error` value was not captured (invalid_grant is inferred).
    "EntitlementGrantsNotFound": (
        50105, "access_denied", 400,
        "The signed in user '{upn}' is not assigned to a role for the application "
        "'{app_id}'({app_name})."),
    "EntitlementGrantsNotFoundApplication": (
        50105, "invalid_grant", 400,
        "Application '{client_id}' is not assigned to a role for the application "
        "'{resource}'."),
    # §3.1: a delegated token request naming two resources, as captured on the wire (28000).
    # The documentation lists 700022 instead, which client credentials keep answering.
    "MultipleResourcesInScope": (
        28000, "invalid_scope", 400,
        "Provided value for the input parameter scope is not valid because it contains more "
        "than one resource. Scope {scope}"),
    "UserDeclinedConsent": (
        65004, "access_denied", 400, "User declined to consent to access the app."),
    "UserInformationNotProvided": (
        50058, "login_required", 400,
        "A silent sign-in request was sent but no user is signed in. The cookies used to "
        "represent the user's session were not sent in the request to Azure AD."),
    "FlowTokenExpired": (
        50089, "invalid_request", 400,
        "Authentication failed due to flow token expired. Please start the sign-in again."),
    # The sign-in form came from a browser other than the one that started the sign-in (its
    # `esctx` cookie is missing or another's; see signin_binding.py). Entra does not document
    # its answer to this; 90100 ("flowToken parameter is empty or not valid", its answer to an
    # unusable flow token) is inferred, and the second sentence is ours.
    "FlowTokenNotBoundToBrowser": (
        90100, "invalid_request", 400,
        "flowToken parameter is empty or not valid. This sign-in was started in another "
        "browser, or this browser did not send the sign-in's cookie; start the sign-in again "
        "from the app."),
    # Documented: 90015 QueryStringTooLong, seen on the wire as "Requested query string is too
    # long." Entra documents no per-parameter limits; ours (request_limits.py) and the second
    # sentence are the emulator's.
    "QueryStringTooLong": (
        90015, "invalid_request", 400,
        "Requested query string is too long. The '{name}' parameter is longer than {limit} "
        "characters."),
    "InvalidUserNameOrPassword": (
        50126, "invalid_request", 400,
        "Error validating credentials due to invalid username or password."),
    "UserAccountNotFound": (
        50034, "invalid_request", 400,
        "The user account {username} does not exist in the {tenant} directory. To sign into "
        "this application, the account must be added to the directory."),
    # The next three only ever come from injected faults (faults.py).
    # Entra documents temporarily_unavailable for "too busy"; it does not document the AADSTS
    # number sent with its 429, so we use TenantThrottlingError's (90055).
    "TenantThrottlingError": (
        90055, "temporarily_unavailable", 429,
        "There are too many incoming requests. Please try again later."),
    # Nor does it document what comes with a 503: we send 90033 (MsodsServiceUnavailable,
    # "the directory service isn't available") with a text of our own.
    "MsodsServiceUnavailable": (
        90033, "temporarily_unavailable", 503,
        "A transient error has occurred. Please try again."),
    # What Conditional Access answers when a token needs a stronger sign-in.
    "UserStrongAuthClientAuthNRequired": (
        50076, "interaction_required", 400,
        "Due to a configuration change made by your administrator, or because you moved to a "
        "new location, you must use multi-factor authentication to access '{resource}'."),
    # Public clients (public_client.py). 700025's text is Entra's wire text (issue threads,
    # 2019-2023).
    "InvalidClientPublicClientWithCredential": (
        700025, "invalid_client", 401,
        "Client is public so neither 'client_assertion' nor 'client_secret' should be "
        "presented."),
    # The device code flow (device_code.py). The `error` values are the documented ones
    # (v2-oauth2-device-code.md, "Expected errors"); the codes are reference-error-codes.md's
    # for AuthorizationPending, BadVerificationCode and CodeExpired, whose names are those
    # errors'. 70016's text is a capture's (msal-browser's recorded response, 2020). The other
    # texts are the reference's descriptions; the declined flow's code (65004,
    # UserDeclinedConsent) is [inferred]: Entra documents none for it.
    "AuthorizationPending": (
        70016, "authorization_pending", 400,
        "OAuth 2.0 device flow error. Authorization is pending. Continue polling."),
    "BadVerificationCode": (
        70018, "bad_verification_code", 400,
        "Invalid verification code due to User typing in wrong user code for device code "
        "flow. Authorization isn't approved."),
    "CodeExpired": (
        70019, "expired_token", 400,
        "Verification code expired. Have the user retry the sign-in."),
    "DeviceFlowDeclined": (
        65004, "authorization_declined", 400,
        "User declined to consent to access the app."),
}

# Codes whose answers carry no `error_uri`. Entra sends the lookup link with most errors
# (7000215, 7000218, 7000222, 500011, 700016, 900144, 90002 in captures up to 2026-09) but not
# with these (70003 in captures from 2019 to 2026-08; 700038 in 2026-08). The rule behind the
# choice is not documented; codes never captured keep the link, the common case.
NO_ERROR_URI: frozenset[int] = frozenset({70003, 700038})

# Errors whose body also carries a `suberror` (entra-protocol.md §1.4), which MSAL hands to the
# app to say what kind of interaction is needed.
SUBERRORS: dict[str, str] = {
    "UserStrongAuthClientAuthNRequired": "basic_action",
    # §3.4: a silent request without consent (MSAL copies it into `classification`).
    "DelegationDoesNotExist": "consent_required",
}


@dataclass
class EntraError(Exception):
    """One AADSTS error, by Entra's name for it. `error` and `status` default from the
    catalogue and may be overridden (65001 is `consent_required` at authorize but
    `invalid_grant` at the token endpoint)."""

    name: str
    fields: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    status: int = 0

    def __post_init__(self) -> None:
        _, default_error, default_status, _ = CATALOGUE[self.name]
        self.error = self.error or default_error
        self.status = self.status or default_status
        super().__init__(self.message)

    @property
    def code(self) -> int:
        return CATALOGUE[self.name][0]

    @property
    def message(self) -> str:
        return f"AADSTS{self.code}: " + CATALOGUE[self.name][3].format(**self.fields)


NIL_GUID = "00000000-0000-0000-0000-000000000000"


def entra_error(name: str, /, *, error: str = "", status: int = 0,
                **fields: Any) -> EntraError:
    if name == "UnauthorizedClient_DoesNotMatchRequest" and fields.get("app_id") == NIL_GUID:
        # Entra does not look the all-zero GUID up: it is refused as an identifier (700038),
        # wherever an unknown client would be 700016.
        name = "InvalidApplicationIdentifier"
    return EntraError(name, fields, error=error, status=status)


@dataclass(frozen=True)
class Diagnostics:
    """The ids and time Entra stamps on every error."""

    trace_id: str
    correlation_id: str
    timestamp: str

    @classmethod
    def for_request(cls) -> Diagnostics:
        return cls(trace_id=str(uuid.uuid4()), correlation_id=correlation_id(),
                   timestamp=datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ"))


def correlation_id() -> str:
    """Entra uses the caller's `client-request-id` (MSAL sends one) as the correlation id."""
    sent = request.headers.get("client-request-id", "")
    try:
        return str(uuid.UUID(sent))
    except ValueError:
        return str(uuid.uuid4())


def error_description(err: EntraError, diagnostics: Diagnostics) -> str:
    """The message, then the ids and time separated by single spaces: Entra's form in every
    capture since 2024 (older ones, 2014-2023, separate them with \\r\\n; see
    tests/emulator/golden/token-errors.json)."""
    return (f"{err.message} Trace ID: {diagnostics.trace_id} "
            f"Correlation ID: {diagnostics.correlation_id} Timestamp: {diagnostics.timestamp}")


def error_uri(err: EntraError) -> dict[str, str]:
    """`error_uri`, for the codes Entra sends it with (see NO_ERROR_URI)."""
    if err.code in NO_ERROR_URI:
        return {}
    return {"error_uri": ERROR_LOOKUP_URI.format(code=err.code)}


def error_body(err: EntraError, diagnostics: Diagnostics | None = None) -> dict[str, Any]:
    diagnostics = diagnostics or Diagnostics.for_request()
    body = {
        "error": err.error,
        "error_description": error_description(err, diagnostics),
        "error_codes": [err.code],
        "timestamp": diagnostics.timestamp,
        "trace_id": diagnostics.trace_id,
        "correlation_id": diagnostics.correlation_id,
        **error_uri(err),
    }
    if err.name in SUBERRORS:
        body["suberror"] = SUBERRORS[err.name]
    return body


def json_response(body: Any, status: int = 200, *, no_store: bool = True) -> Response:
    response = Response(json.dumps(body), status=status,
                        content_type="application/json; charset=utf-8")
    if no_store:
        # What Entra sends on token responses (RFC 6749 §5.1 requires no-store).
        response.headers["Cache-Control"] = "no-store, no-cache"
        response.headers["Pragma"] = "no-cache"
    return response


def error_json_response(err: EntraError) -> Response:
    return json_response(error_body(err), status=err.status)


def redirect_error_params(err: EntraError) -> dict[str, str]:
    """The parameters of an error redirect to the app (state is added by the caller)."""
    diagnostics = Diagnostics.for_request()
    return {
        "error": err.error,
        "error_description": error_description(err, diagnostics),
        **error_uri(err),
    }
