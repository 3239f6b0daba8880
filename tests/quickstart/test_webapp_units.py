"""Small rules, tested directly: issuer matching (Discovery 4.3), Retry-After, CAE challenges,
log redaction (flask_entra.hardening), where a sign-in may return to (flask_entra.views)."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from flask_entra.errors import AuthError
from flask_entra.hardening import RedactOAuthParameters
from flask_entra.pending import PendingSignIn
from flask_entra.provider import issuer_matches_authority
from flask_entra.views import check_response_issuer, safe_next_path
from webapp.graph import GraphResult, claims_challenge, retry_after_seconds

TID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("issuer", "authority", "ok"), [
    (f"https://login.microsoftonline.com/{TID}/v2.0",
     f"https://login.microsoftonline.com/{TID}", True),
    ("https://login.microsoftonline.com/{tenantid}/v2.0",
     "https://login.microsoftonline.com/common", True),
    ("https://login.microsoftonline.com/{tenantid}/v2.0",
     "https://login.microsoftonline.com/organizations", True),
    (f"https://login.microsoftonline.com/{TID}/v2.0",
     "https://login.microsoftonline.com/contoso.onmicrosoft.com", True),
    ("https://login.microsoftonline.com/{tenantid}/v2.0",
     f"https://login.microsoftonline.com/{TID}", False),
    (f"https://login.microsoftonline.com/{TID}/v2.0",
     "https://login.microsoftonline.com/00000000-0000-0000-0000-000000000000", False),
    (f"https://evil.example/{TID}/v2.0", f"https://login.microsoftonline.com/{TID}", False),
    (f"https://sts.windows.net/{TID}/", f"https://login.microsoftonline.com/{TID}", False),
    (f"https://localhost:8443/{TID}/v2.0", f"https://localhost:8443/{TID}", True),
    (f"https://localhost:8444/{TID}/v2.0", f"https://localhost:8443/{TID}", False),
    (f"http://localhost:8443/{TID}/v2.0", f"https://localhost:8443/{TID}", False),
])
def test_entra_issuer_must_belong_to_the_authority(issuer, authority, ok):
    assert issuer_matches_authority(issuer, authority, generic_oidc=False) is ok


def test_generic_oidc_issuer_is_the_configured_url():
    assert issuer_matches_authority("https://id.example/realm", "https://id.example/realm/",
                                    generic_oidc=True)
    assert not issuer_matches_authority("https://id.example/realm1", "https://id.example/realm",
                                        generic_oidc=True)


@pytest.mark.parametrize(("value", "seconds"), [
    ("10", 10.0), ("2.128", 2.128), (None, 1.0), ("", 1.0), ("soon", 1.0), ("-5", 0.0),
    ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
])
def test_retry_after(value, seconds):
    assert retry_after_seconds(value) == pytest.approx(seconds)


def test_claims_challenge_is_decoded_from_www_authenticate():
    header = ('Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/'
              'oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000", '
              'error="insufficient_claims", claims="eyJhY2Nlc3NfdG9rZW4iOnsibmJmIjp7ImVzc2Vud'
              'GlhbCI6dHJ1ZSwgInZhbHVlIjoiMTYzNTUyNzc5MCJ9fX0="')
    result = GraphResult(401, {"www-authenticate": header}, b"{}")
    assert claims_challenge(result) == (
        '{"access_token":{"nbf":{"essential":true, "value":"1635527790"}}}')
    plain_401 = GraphResult(401, {"www-authenticate": 'Bearer realm=""'}, b"{}")
    assert claims_challenge(plain_401) is None
    assert claims_challenge(GraphResult(200, {"www-authenticate": header}, b"{}")) is None


def test_gunicorn_access_log_atoms_are_redacted():
    class Atoms(dict):  # gunicorn's SafeAtoms is a dict subclass used as %-format mapping
        pass

    atoms = Atoms(r="GET /getAToken?code=SECRETCODE&state=STATE123 HTTP/1.1",
                  q="code=SECRETCODE&state=STATE123", s="303")
    record = logging.LogRecord("gunicorn.access", logging.INFO, __file__, 1,
                               '%(r)s %(s)s', (), None)
    record.args = atoms
    assert RedactOAuthParameters().filter(record)
    message = record.getMessage()
    assert "SECRETCODE" not in message and "STATE123" not in message
    assert "code=[redacted]&state=[redacted]" in message
    # Formatted once, then redacted: no copy of the secrets stays behind in the arguments.
    assert record.args is None and record.getMessage() == message


def test_access_log_line_is_formatted_as_gunicorn_formats_it():
    class Atoms(dict):  # gunicorn's SafeAtoms: unknown atoms print as "-"
        def __getitem__(self, key):
            return super().get(key, "-")

    atoms = Atoms({"h": "127.0.0.1", "U": "/getAToken", "{cookie}i": "session=SECRET",
                   "QUERY_STRING": "code=SECRETCODE"})
    record = logging.LogRecord("gunicorn.access", logging.INFO, __file__, 1,
                               '%(h)s "%(U)s" %(missing)s', (), None)
    record.args = atoms
    assert RedactOAuthParameters().filter(record)
    assert record.getMessage() == '127.0.0.1 "/getAToken" -'


def test_msal_debug_event_json_is_redacted():
    record = logging.LogRecord("msal.token_cache", logging.DEBUG, __file__, 1, "event=%s",
                               ('{"data": {"code": "1.AbC", "code_verifier": "v3r1f13r"}}',),
                               None)
    RedactOAuthParameters().filter(record)
    assert "1.AbC" not in record.getMessage() and "v3r1f13r" not in record.getMessage()


def test_flask_run_finds_the_app_from_the_repo_root(tmp_path):
    """The quickstart's `flask run` works from the repo root (wsgi.py is discovered)."""
    env = {"PATH": str(Path(sys.executable).parent), "CLIENT_ID": "x", "CLIENT_SECRET": "y",
           "AUTHORITY": "https://login.microsoftonline.com/contoso.onmicrosoft.com",
           "SECRET_KEY": "0123456789abcdef0123", "SESSION_FILE_DIR": str(tmp_path / "s"),
           "HOME": str(tmp_path)}
    flask = Path(sys.executable).parent / "flask"
    result = subprocess.run([str(flask), "routes"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "/getAToken" in result.stdout and "identity.login" in result.stdout


def test_response_iss_parameter_rules():
    """RFC 9207 (checklist C2, C3); the emulator does not send `iss`, so the rules are tested
    directly: required when the provider advertises it, and must be the sign-in's issuer."""
    def pending(iss_required: bool) -> PendingSignIn:
        return PendingSignIn(flow={"state": "s"}, nonce="n", next_path="/",
                             issuer="https://login.microsoftonline.com/{tenantid}/v2.0",
                             iss_required=iss_required, previous_session=None, created=0.0)

    common = pending(iss_required=True)
    with pytest.raises(AuthError, match="lacks the iss parameter"):
        check_response_issuer({"code": "x"}, common)
    check_response_issuer({"iss": f"https://login.microsoftonline.com/{TID}/v2.0"}, common)
    for wrong in (f"https://login.microsoftonline.com/{TID}/v2.01",
                  f"https://evil.example/{TID}/v2.0", "https://login.microsoftonline.com/x/v2.0",
                  f"https://login.microsoftonline.com/{TID}/v2.0/",
                  "https://login.microsoftonline.com/{tenantid}/v2.0", ""):
        with pytest.raises(AuthError, match="another issuer"):
            check_response_issuer({"iss": wrong}, common)
    check_response_issuer({"code": "x"}, pending(iss_required=False))


@pytest.mark.parametrize(("value", "expected"), [
    ("/graph", "/graph"), ("/claims?x=1", "/claims?x=1"), ("/a/b#c", "/a/b#c"),
    (None, "/"), ("", "/"), ("graph", "/"), ("//evil.example", "/"), ("/\\evil.example", "/"),
    ("/%2F%2Fevil.example", "/"), ("/%252F%252Fevil.example", "/"), ("/%09/evil.example", "/"),
    ("/\t/evil.example", "/"), ("https://evil.example/", "/"), ("javascript:alert(1)", "/"),
    ("/%5Cevil.example", "/"), ("/" + "a" * 3000, "/"),
])
def test_safe_next_path_keeps_a_sign_in_on_this_site(value, expected):
    """RFC 9700 4.11.1: after sign-in, only a path on this site; anything else is "/"."""
    assert safe_next_path(value) == expected
