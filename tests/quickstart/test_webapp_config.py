"""Configuration, deployment and transport: clear pages for bad settings, the provider being
unreachable or untrusted, security headers, 127.0.0.1, the proxy setting, /healthz."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from tests.quickstart.webapp_support import (
    Browser,
    CallRecorder,
    stored_sessions,
    webapp_config,
)
from tests.support import default_directory_document
from webapp import create_app
from webapp.config import DEFAULTS, load_settings, read_environment

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("overrides", "key", "text"), [
    ({"CLIENT_ID": None}, "CLIENT_ID", "Application (client) ID"),
    ({"AUTHORITY": None}, "AUTHORITY", "login.microsoftonline.com"),
    ({"AUTHORITY": "http://localhost/tenant"}, "AUTHORITY", "Must be an https URL"),
    ({"AUTHORITY": "https://login.microsoftonline.com"}, "AUTHORITY", "tenant in its path"),
    ({"CLIENT_SECRET": None}, "CLIENT_SECRET", "client secret&#39;s Value"),
    ({"REDIRECT_URI": "http://example.com/getAToken"}, "REDIRECT_URI", "Must be https"),
    ({"REDIRECT_URI": "localhost:5000/getAToken"}, "REDIRECT_URI", "absolute URL"),
    ({"REDIRECT_URI": "http://localhost:5000/login"}, "REDIRECT_URI", "app&#39;s own pages"),
    ({"ENDPOINT": "http://graph.example/v1.0/me"}, "ENDPOINT", "https URL"),
    ({"SESSION_TYPE": "memcached"}, "SESSION_TYPE", "filesystem or redis"),
    ({"SESSION_TYPE": "redis"}, "REDIS_URL", "SESSION_TYPE=redis"),
    ({"RESPONSE_MODE": "fragment"}, "RESPONSE_MODE", "form_post or query"),
    ({"TRUSTED_PROXY_HOPS": "two"}, "TRUSTED_PROXY_HOPS", "Must be a number"),
    ({"SESSION_IDLE_TIMEOUT": "60"}, "SESSION_IDLE_TIMEOUT", "from 120"),
    ({"CA_BUNDLE": "/nonexistent/ca.pem"}, "CA_BUNDLE", "No such file"),
    ({"SECRET_KEY": "short"}, "SECRET_KEY", "16 random characters"),
    ({"CLIENT_SECRET": None, "CLIENT_CERTIFICATE_PATH": "/nonexistent/cert.pem"},
     "CLIENT_PRIVATE_KEY_PATH", "Set both"),
])
def test_bad_setting_gives_a_clear_page_and_a_log_line(emulator, tmp_path, caplog, overrides,
                                                       key, text):
    caplog.set_level(logging.ERROR, logger="webapp")
    app = create_app(webapp_config(emulator, tmp_path, **overrides))
    for path in ("/", "/login", "/getAToken?code=x&state=y", "/graph"):
        response = app.test_client().get(path)
        body = response.get_data(as_text=True)
        assert response.status_code == 503
        assert "not configured yet" in body and f"<code>{key}</code>" in body and text in body
        assert "Traceback" not in body
    health = app.test_client().get("/healthz")
    assert health.status_code == 503 and key in health.get_json()["settings"]
    assert any(key in r.getMessage() and "not configured" in r.getMessage()
               for r in caplog.records)


def test_env_sample_documents_every_setting():
    sample = (ROOT / ".env.sample").read_text()
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", sample, re.MULTILINE))
    # The web app's settings, and the To-do API's (the same .env serves both).
    source = (ROOT / "webapp" / "config.py").read_text() + (
        ROOT / "todo_api" / "__init__.py").read_text()
    read = set(re.findall(r'get\("([A-Z][A-Z0-9_]+)"[,)]', source)) | set(
        re.findall(r'raw\.get\("([A-Z][A-Z0-9_]+)"', source)) | set(DEFAULTS)
    assert read <= documented, read - documented
    assert documented <= read, documented - read  # no setting the app no longer reads


def test_settings_come_from_dotenv_without_touching_os_environ(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("CLIENT_ID=from-dotenv\nSCOPE=Mail.Read\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SCOPE", "User.Read")
    monkeypatch.delenv("CLIENT_ID", raising=False)
    values = read_environment()
    assert values["CLIENT_ID"] == "from-dotenv"
    assert values["SCOPE"] == "User.Read"  # the real environment wins
    import os

    assert "CLIENT_ID" not in os.environ


@pytest.mark.parametrize(("key", "placeholder"), [
    ("CLIENT_ID", "<Enter_your_client_id>"),
    ("CLIENT_SECRET", "<Enter_your_client_secret>"),
    ("AUTHORITY", "https://login.microsoftonline.com/<Enter_your_tenant_id>"),
    ("SECRET_KEY", "<python -c 'import secrets; print(secrets.token_hex(32))'>"),
])
def test_a_setting_left_at_its_env_sample_placeholder_is_named(emulator, tmp_path, key,
                                                               placeholder):
    """Issue 9: a value copied from .env.sample unchanged is a problem to fix, not a setting."""
    app = create_app(webapp_config(emulator, tmp_path, **{key: placeholder}))
    client = app.test_client()
    for path in ("/", "/login"):
        response = client.get(path)
        body = response.get_data(as_text=True)
        assert response.status_code == 503
        assert "not configured yet" in body and f"<code>{key}</code>" in body
        assert "placeholder" in body and ".env.sample" in body
        assert placeholder not in body  # shown escaped, never as markup
    health = client.get("/healthz")
    assert health.status_code == 503
    assert health.get_json() == {"status": "misconfigured", "settings": [key]}
    assert "flask_entra" not in app.extensions  # nothing started with the placeholder


def test_env_sample_copied_unchanged_names_the_three_required_settings(tmp_path, monkeypatch):
    """A newcomer's first run: .env is .env.sample, nothing filled in."""
    (tmp_path / ".env").write_text((ROOT / ".env.sample").read_text())
    for key in ("CLIENT_ID", "CLIENT_SECRET", "AUTHORITY", "OIDC_AUTHORITY", "SECRET_KEY",
                "CLIENT_CERTIFICATE_PATH", "CLIENT_PRIVATE_KEY_PATH", "REDIRECT_URI", "ENDPOINT",
                "SCOPE", "SESSION_TYPE", "CA_BUNDLE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)
    response = create_app().test_client().get("/healthz")
    assert response.status_code == 503
    assert response.get_json() == {"status": "misconfigured",
                                   "settings": ["AUTHORITY", "CLIENT_ID", "CLIENT_SECRET"]}


def test_ca_settings_in_dotenv_win_over_the_environment(tmp_path, monkeypatch):
    """Issue 9: machines that set REQUESTS_CA_BUNDLE (or CA_BUNDLE) for everything must not
    override the emulator's bundle written to .env; other settings keep the environment first."""
    (tmp_path / ".env").write_text("CA_BUNDLE=/from/dotenv/ca.pem\n"
                                   "REQUESTS_CA_BUNDLE=/from/dotenv/requests.pem\n"
                                   "CLIENT_ID=from-dotenv\nSCOPE=Mail.Read\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CA_BUNDLE", "/from/environment/ca.pem")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/from/environment/requests.pem")
    monkeypatch.setenv("CLIENT_ID", "from-environment")
    monkeypatch.setenv("SCOPE", "User.Read")
    values = read_environment()
    assert values["CA_BUNDLE"] == "/from/dotenv/ca.pem"
    assert values["REQUESTS_CA_BUNDLE"] == "/from/dotenv/requests.pem"
    assert values["CLIENT_ID"] == "from-environment"
    assert values["SCOPE"] == "User.Read"
    import os

    assert os.environ["REQUESTS_CA_BUNDLE"] == "/from/environment/requests.pem"  # untouched
    assert load_settings(values).ca_bundle == "/from/dotenv/ca.pem"


def test_ca_settings_from_the_environment_stay_when_dotenv_has_none(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("CA_BUNDLE=\nCLIENT_ID=from-dotenv\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CA_BUNDLE", "/from/environment/ca.pem")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/from/environment/requests.pem")
    values = read_environment()
    assert values["CA_BUNDLE"] == "/from/environment/ca.pem"  # an empty .env value is unset
    assert values["REQUESTS_CA_BUNDLE"] == "/from/environment/requests.pem"


def test_reserved_scopes_are_dropped_from_scope():
    settings = load_settings({"SCOPE": "openid User.Read offline_access profile Mail.Read"})
    assert settings.scopes == ("User.Read", "Mail.Read")


def test_provider_down_gives_a_502_page_naming_it(make_app, closed_port):
    app = make_app(AUTHORITY=f"https://localhost:{closed_port}/tenant-id", HTTP_TIMEOUT="2")
    client = app.test_client()
    response = client.get("/login")
    body = response.get_data(as_text=True)
    assert response.status_code == 502
    assert f"Could not reach the identity provider at https://localhost:{closed_port}" in body
    assert "Check that AUTHORITY is right" in body
    assert client.get_cookie("session") is None and stored_sessions(app) == {}
    # No sign-in was started: no pending sign-in cookie either.
    assert response.headers.getlist("Set-Cookie") == []


def test_untrusted_provider_certificate_names_ca_bundle(make_app, monkeypatch):
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    app = make_app(CA_BUNDLE=None)
    response = app.test_client().get("/login")
    body = response.get_data(as_text=True)
    assert response.status_code == 502
    assert "TLS certificate is not trusted" in body and "CA_BUNDLE" in body


def test_unknown_tenant_is_a_clear_page(make_app, emulator):
    app = make_app(AUTHORITY=f"{emulator.https_base}/00000000-0000-0000-0000-000000000000")
    response = app.test_client().get("/login")
    body = response.get_data(as_text=True)
    assert response.status_code == 503
    assert "identity provider setting is wrong" in body
    assert "configuration problem in the app&#39;s authority setting" in body
    assert "The tenant in the authority does not exist" in body  # the AADSTS90002 hint


def test_discovery_issuer_must_match_the_authority(make_app, emulator):
    # Configured as a generic OpenID provider at the tenant's v1 address, whose document names
    # the v1 issuer (https://sts.windows.net/...): not the configured one (Discovery 4.3).
    app = make_app(AUTHORITY=None, OIDC_AUTHORITY=emulator.authority)
    response = app.test_client().get("/login")
    body = response.get_data(as_text=True)
    assert response.status_code == 503
    assert "does not belong to the configured authority" in body
    assert stored_sessions(app) == {}


def test_generic_oidc_authority_signs_in(make_app, emulator, browser_sign_in_fn):
    app = make_app(AUTHORITY=None, OIDC_AUTHORITY=f"{emulator.authority}/v2.0")
    browser = Browser(app, emulator, browser_sign_in_fn)
    assert browser.sign_in().status_code == 303
    assert "Adele Vance" in browser.client.get("/").get_data(as_text=True)


def test_security_headers_on_every_page(app, browser, emulator):
    responses = [browser.client.get("/"), browser.client.get("/nope"),
                 browser.client.get("/getAToken")]
    browser.sign_in()
    responses += [browser.client.get(p) for p in ("/", "/graph", "/claims", "/logout")]
    for response in responses:
        csp = response.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
        assert "script-src" not in csp  # no scripts at all
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Cache-Control"] == "no-store"
        assert "Strict-Transport-Security" not in response.headers  # plain http here
    # The sign-out form's redirect goes to the provider: allowed by form-action.
    assert emulator.http_base in responses[-1].headers["Content-Security-Policy"]
    assert responses[1].status_code == 404 and "Not Found" in responses[1].get_data(as_text=True)


@pytest.mark.parametrize("script_root", ["", "/mounted/below"])
def test_page_links_are_what_url_for_builds(app, browser, script_root):
    """Every link of a page is built per request with url_for(), so they stay right for an app
    mounted below a path (SCRIPT_NAME)."""
    from flask import url_for

    environ = {"SCRIPT_NAME": script_root}
    with app.test_request_context("/", environ_overrides=environ):
        expected = {"home": url_for("views.index"), "graph": url_for("views.call_graph"),
                    "claims": url_for("views.claims"), "sign_in": url_for("identity.login"),
                    "sign_out": url_for("identity.logout"),
                    "stylesheet": url_for("static", filename="style.css")}
    assert expected["graph"] == f"{script_root}/graph"
    assert expected["sign_in"] == f"{script_root}/login"
    signed_out = browser.client.get("/", environ_overrides=environ).get_data(as_text=True)
    for name in ("stylesheet", "home", "sign_in"):
        assert f'="{expected[name]}"' in signed_out, name
    browser.sign_in()
    page = browser.client.get("/", environ_overrides=environ).get_data(as_text=True)
    for name in ("stylesheet", "home", "graph", "claims", "sign_out"):
        assert f'="{expected[name]}"' in page, name


def test_csp_lists_the_provider_once_its_metadata_is_known(make_app, emulator):
    app = make_app()
    calls = CallRecorder(app)
    client = app.test_client()
    before = client.get("/").headers["Content-Security-Policy"]
    assert "form-action 'self';" in before  # nothing fetched yet for a signed-out page
    assert client.get("/healthz").status_code == 200
    assert client.get("/static/style.css").status_code == 200
    assert calls.calls == []  # pages without a sign-out form never wait on the provider
    assert client.get("/login").status_code == 302  # reads the provider's metadata
    after = client.get("/").headers["Content-Security-Policy"]
    assert f"form-action 'self' {emulator.http_base};" in after
    assert client.get("/static/style.css").headers["Content-Security-Policy"] == after


def test_a_signed_in_page_lists_the_provider_after_a_restart(make_app, emulator,
                                                             browser_sign_in_fn):
    """A process that never read the provider's metadata (restarted, or another instance) reads
    it for a signed-in page, whose sign-out form goes to the provider."""
    browser = Browser(make_app(), emulator, browser_sign_in_fn)
    assert browser.sign_in().status_code == 303
    restarted = make_app()  # the same session folder and SECRET_KEY
    client = restarted.test_client()
    cookie = browser.cookie()
    client.set_cookie(cookie.key, cookie.value, domain=cookie.domain, path=cookie.path)
    page = client.get("/")
    assert "Sign out" in page.get_data(as_text=True)
    assert f"form-action 'self' {emulator.http_base};" in page.headers["Content-Security-Policy"]


def test_static_css_is_local(app):
    page = app.test_client().get("/").get_data(as_text=True)
    assert '<link rel="stylesheet" href="/static/style.css">' in page
    assert "http" not in re.sub(r'https?://(localhost|127\.0\.0\.1)', "", " ".join(
        re.findall(r'(?:href|src)="([^"]+)"', page)))
    css = app.test_client().get("/static/style.css")
    assert css.status_code == 200 and "@media (max-width" in css.get_data(as_text=True)
    assert 'name="viewport" content="width=device-width, initial-scale=1"' in page


def test_loopback_ip_is_redirected_to_the_configured_host(app):
    client = app.test_client()
    response = client.get("/claims?x=1", base_url="http://127.0.0.1:5000")
    assert response.status_code == 302
    assert response.headers["Location"] == "http://localhost:5000/claims?x=1"
    assert client.get("/healthz", base_url="http://127.0.0.1:5000").status_code == 200
    assert client.get("/", base_url="http://localhost:5000").status_code == 200


def test_proxy_headers_are_trusted_only_when_configured(make_app):
    headers = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "app.example.com"}
    plain = make_app().test_client().get("/", headers=headers)
    assert "Strict-Transport-Security" not in plain.headers  # forwarded headers ignored
    proxied_app = make_app(TRUSTED_PROXY_HOPS="1", REDIRECT_URI="https://app.example.com/getAToken")
    proxied = proxied_app.test_client().get("/", headers=headers)
    assert proxied.headers["Strict-Transport-Security"] == "max-age=31536000"
    spoofed = proxied_app.test_client().get("/", headers={
        "X-Forwarded-Proto": "http, https", "X-Forwarded-Host": "evil.example, app.example.com"})
    assert spoofed.headers["Strict-Transport-Security"]  # only the last (our proxy's) hop counts


def test_redirect_uri_path_is_where_the_callback_lives(make_app):
    app = make_app(REDIRECT_URI="http://localhost:5000/auth/callback")
    client = app.test_client()
    assert client.get("/auth/callback?state=x&code=y").status_code == 400
    assert client.get("/getAToken").status_code == 404


def test_healthz(app):
    response = app.test_client().get("/healthz")
    assert response.status_code == 200 and response.get_json() == {"status": "ok"}


def test_unexpected_error_is_a_plain_500_page(app):
    def boom():
        raise RuntimeError("secret internals")

    app.view_functions["views.index"] = boom
    response = app.test_client().get("/")
    body = response.get_data(as_text=True)
    assert response.status_code == 500
    assert "Something went wrong" in body and "secret internals" not in body
    assert "Traceback" not in body


def test_certificate_credential_signs_in(make_app, start_emulator, browser_sign_in_fn, tmp_path):
    import base64
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "python-webapp")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30)).sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    directory = default_directory_document()
    directory["applications"][0]["keyCredentials"] = [{
        "keyId": "0f0e0d0c-0b0a-0908-0706-050403020100", "type": "AsymmetricX509Cert",
        "usage": "Verify", "key": base64.b64encode(
            cert.public_bytes(serialization.Encoding.DER)).decode()}]
    emu = start_emulator(directory=directory)
    app = make_app(emu, CLIENT_SECRET=None, CLIENT_CERTIFICATE_PATH=str(cert_path),
                   CLIENT_PRIVATE_KEY_PATH=str(key_path))
    assert isinstance(app.extensions["webapp"].settings.client_credential, dict)
    browser = Browser(app, emu, browser_sign_in_fn)
    assert browser.sign_in().status_code == 303
    assert browser.client.get("/graph").status_code == 200
