"""The password grant (resource owner password credentials, v2-oauth-ropc.md): `username`,
`password` and `scope`, for public clients (`isFallbackPublicClient`, no credential) and
confidential ones (with their credential; see client_auth.py, "Public clients").

In Entra's order of failures [order inferred]: the client; an unknown user (AADSTS50034,
with the address masked as Entra masks it: `{EmailHidden}`); a wrong password (invalid_grant
AADSTS50126); an account that needs interaction (invalid_grant AADSTS50076, suberror
basic_action) — our directory marks it with `perUserMfaState` (directory_credentials.py); an
app role assignment required and missing (AADSTS50105); then consent, which this grant cannot
ask for: the user's or an administrator's grant must already cover the scopes (invalid_grant
AADSTS65001 otherwise).

`GET /common/userrealm/{username}`: MSAL asks it before the password grant (always on port
443 of the authority's host: see the README). Answered as Entra answers for a managed domain,
and `Unknown` for a domain that is not the tenant's.
"""

from __future__ import annotations

import hmac
import uuid
from typing import Any

from flask import Response

from entra_emulator import discovery
from entra_emulator import token as token_endpoint
from entra_emulator.client_auth import (
    TokenRequest,
    authenticate_without_redirect,
    new_family,
)
from entra_emulator.consent import held_permissions
from entra_emulator.context import current_state
from entra_emulator.errors import entra_error, json_response
from entra_emulator.scopes import GRAPH_APP_ID, parse_scopes, resources_of, split_scope_string

PASSWORD_GRANT = "password"


# ---------------------------------------------------------------------------------------------
# The password grant
# ---------------------------------------------------------------------------------------------

def password_grant(req: TokenRequest, basic: tuple[str, str] | None) -> dict[str, Any]:
    state = current_state()
    username, password = req.required("username"), req.required("password")
    scope = req.required("scope")
    client_auth = authenticate_without_redirect(req, basic)
    user = state.directory.user_by_username(username)
    if user is None:
        raise entra_error("UserAccountNotFound", error="invalid_grant",
                          username="{EmailHidden}", tenant=req.tenant_id)
    if not hmac.compare_digest(password.encode(), user.password.encode()):
        raise entra_error("InvalidUserNameOrPassword", error="invalid_grant")
    if user.mfa_required:
        resources = resources_of(parse_scopes(scope, state.directory))
        raise entra_error("UserStrongAuthClientAuthNRequired", error="invalid_grant",
                          resource=resources[0].app_id if resources else GRAPH_APP_ID)
    principal = state.directory.service_principal_for(req.app.app_id)
    if principal.app_role_assignment_required and not state.directory.user_is_assigned(
            req.app.app_id, user.id):
        raise entra_error("EntitlementGrantsNotFound", error="invalid_grant",
                          upn=user.user_principal_name, app_id=req.app.app_id,
                          app_name=req.app.display_name)
    granted = held_permissions(req.app.app_id, user.id)
    requested = token_endpoint.requested_permissions(req, None, granted)
    grant = token_endpoint.UserGrant(
        app=req.app, user=user, tenant_id=req.tenant_id, granted=granted,
        sid=str(uuid.uuid4()), auth_time=state.now(), include_auth_time=False,
        family=new_family(client_auth))
    body, _ = token_endpoint.issue_user_tokens(
        req, grant, requested, nonce=None, client_auth=client_auth,
        with_refresh_token="offline_access" in split_scope_string(scope))
    return body


token_endpoint.GRANTS[PASSWORD_GRANT] = password_grant


# ---------------------------------------------------------------------------------------------
# Home realm discovery
# ---------------------------------------------------------------------------------------------

def _is_managed_domain(domain: str) -> bool:
    directory = current_state().directory
    if domain == directory.tenant.default_domain.lower():
        return True
    return any(user.user_principal_name.lower().rpartition("@")[2] == domain
               for user in directory.users)


@discovery.bp.get("/common/userrealm/<path:username>")
@discovery.bp.get("/common/UserRealm/<path:username>")
def user_realm(username: str) -> Response:
    """What MSAL's user_realm_discovery reads (api-version=1.0): `account_type` Managed sends
    it on to the password grant; Federated would send it to a WS-Trust server we do not run."""
    domain = username.rpartition("@")[2].lower()
    body: dict[str, Any] = {"ver": "1.0"}
    if domain and _is_managed_domain(domain):
        body.update(account_type="Managed", domain_name=domain,
                    cloud_instance_name="microsoftonline.com",
                    cloud_audience_urn="urn:federation:MicrosoftOnline")
    else:
        body.update(account_type="Unknown", cloud_instance_name="microsoftonline.com")
    return json_response(body, no_store=False)
