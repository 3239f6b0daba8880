"""Signing keys, the local CA and server certificate, and what survives a restart."""

from __future__ import annotations

from pathlib import Path

import certifi
import jwt
import pytest
import requests
from cryptography import x509

from entra_emulator.keys import PUBLISHED_KEY_COUNT, KeyStore
from entra_emulator.server import EmulatorServer
from entra_emulator.tls import ensure_tls_files
from tests.support import ADELE, DEFAULT_PASSWORD, authorize_url, browser_sign_in


def test_sign_and_verify_with_published_key(tmp_path):
    keys = KeyStore(tmp_path)
    token = keys.sign({"sub": "x"}, headers={"x5t": keys.current.x5t, "nonce": "n"})
    header = jwt.get_unverified_header(token)
    assert list(header) == ["typ", "alg", "kid", "x5t", "nonce"]
    assert header["kid"] == keys.current.kid
    assert jwt.decode(token, keys.public_key_for(header["kid"]), algorithms=["RS256"]) == \
        {"sub": "x"}
    assert keys.public_key_for("unknown") is None


def test_rotation_keeps_the_old_key_published(tmp_path):
    keys = KeyStore(tmp_path)
    old = keys.current
    new = keys.rotate()
    assert keys.current == new and new.kid != old.kid
    kids = [key["kid"] for key in keys.jwks()["keys"]]
    assert kids[0] == new.kid and old.kid in kids
    assert keys.public_key_for(old.kid) is not None
    for _ in range(PUBLISHED_KEY_COUNT):
        keys.publish_new_key()
    kids = [key["kid"] for key in keys.jwks()["keys"]]
    assert len(kids) == PUBLISHED_KEY_COUNT == len(set(kids))
    assert old.kid not in kids


def test_unpublished_key_is_never_in_the_jwks(tmp_path):
    keys = KeyStore(tmp_path)
    hidden = keys.unpublished_key()
    assert keys.unpublished_key() is hidden
    assert hidden.kid not in [key["kid"] for key in keys.jwks()["keys"]]
    assert keys.public_key_for(hidden.kid) is None
    token = keys.sign({"sub": "x"}, key=hidden)
    assert jwt.get_unverified_header(token)["kid"] == hidden.kid


def test_keys_persist_in_the_state_folder(tmp_path):
    first = KeyStore(tmp_path)
    rotated = first.rotate()
    again = KeyStore(tmp_path)
    assert again.current.kid == rotated.kid
    assert [k.kid for k in again.published] == [k.kid for k in first.published]
    assert (tmp_path / "state.sqlite3").stat().st_mode & 0o077 == 0


def test_tls_files_are_made_once_and_reused(tmp_path):
    files = ensure_tls_files(tmp_path)
    first = {path: path.read_bytes() for path in (files.ca_cert, files.server_cert)}
    again = ensure_tls_files(tmp_path)
    assert {path: path.read_bytes() for path in (again.ca_cert, again.server_cert)} == first
    cert = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert "127.0.0.1" in [str(ip) for ip in names.get_values_for_type(x509.IPAddress)]
    bundle = files.ca_bundle.read_text()
    assert bundle.startswith(files.ca_cert.read_text())
    assert Path(certifi.where()).read_text() in bundle
    assert files.ca_key.stat().st_mode & 0o077 == 0


def test_a_new_host_name_gets_a_new_server_certificate_from_the_same_ca(tmp_path):
    files = ensure_tls_files(tmp_path)
    ca = files.ca_cert.read_bytes()
    ensure_tls_files(tmp_path, hosts=("emulator.test",))
    assert files.ca_cert.read_bytes() == ca
    cert = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "emulator.test" in names.get_values_for_type(x509.DNSName)


def test_server_certificate_verifies_against_the_ca_alone(emulator):
    response = requests.get(f"{emulator.authority}/v2.0/.well-known/openid-configuration",
                            verify=emulator.ca_cert)
    assert response.status_code == 200
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{emulator.authority}/v2.0/.well-known/openid-configuration",
                     verify=certifi.where())


def test_restart_keeps_keys_ca_and_consent(tmp_path, default_app):
    state = tmp_path / "state"
    with EmulatorServer(state_dir=state, https_port=0, http_port=0) as emu:
        ca = Path(emu.ca_cert).read_bytes()
        kids = [k["kid"] for k in requests.get(f"{emu.authority}/discovery/v2.0/keys",
                                               verify=emu.ca_bundle).json()["keys"]]
        url = authorize_url(emu, default_app.client_id, redirect_uri=default_app.redirect_uri)
        # First sign-in: the consent page appears (cancel would return access_denied).
        assert browser_sign_in(url, ADELE, DEFAULT_PASSWORD, consent="cancel").params[
            "error"] == "access_denied"
        assert "code" in browser_sign_in(url, ADELE, DEFAULT_PASSWORD).params
    with EmulatorServer(state_dir=state, https_port=0, http_port=0) as emu:
        assert Path(emu.ca_cert).read_bytes() == ca
        again = [k["kid"] for k in requests.get(f"{emu.authority}/discovery/v2.0/keys",
                                                verify=emu.ca_bundle).json()["keys"]]
        assert again == kids
        url = authorize_url(emu, default_app.client_id, redirect_uri=default_app.redirect_uri)
        # Consent was remembered: "cancel" is never asked, the sign-in ends with a code.
        assert "code" in browser_sign_in(url, ADELE, DEFAULT_PASSWORD, consent="cancel").params
