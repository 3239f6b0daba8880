"""The emulator's TLS: a local CA and a server certificate for localhost, made once and reused.

MSAL requires https for the authority and the token endpoint. On first start we create a CA
and a server certificate signed by it (ECDSA P-256: quick to generate, so first start stays
fast) in the state folder, and a CA bundle = our CA + certifi's public roots, because
REQUESTS_CA_BUNDLE replaces the default roots rather than adding to them.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

import certifi
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from entra_emulator.keys import ensure_private_dir, make_private, write_private_file

CA_NAME = "Entra Emulator Local CA"
DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")
# Renew the server certificate this long before it expires.
RENEW_BEFORE = dt.timedelta(days=30)


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    ca_bundle: Path


def ensure_tls_files(state_dir: str | Path, hosts: tuple[str, ...] = DEFAULT_HOSTS) -> TlsFiles:
    """Create (or reuse) the CA, a server certificate covering `hosts`, and the CA bundle."""
    folder = Path(state_dir) / "tls"
    files = TlsFiles(ca_cert=folder / "ca.pem", ca_key=folder / "ca-key.pem",
                     server_cert=folder / "server.pem", server_key=folder / "server-key.pem",
                     ca_bundle=folder / "ca-bundle.pem")
    wanted_hosts = tuple(dict.fromkeys((*DEFAULT_HOSTS, *hosts)))
    # Owner-only, like the rest of the state folder: the folder 0700, every file 0600.
    ensure_private_dir(folder)
    for path in (files.ca_cert, files.ca_key, files.server_cert, files.server_key,
                 files.ca_bundle):
        make_private(path)
    ca_key, ca_cert = _load_or_create_ca(files)
    if not _server_certificate_usable(files, ca_cert, wanted_hosts):
        _create_server_certificate(files, ca_key, ca_cert, wanted_hosts)
    _write_ca_bundle(files)
    return files


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _load_or_create_ca(files: TlsFiles) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    if files.ca_cert.is_file() and files.ca_key.is_file():
        key = serialization.load_pem_private_key(files.ca_key.read_bytes(), None)
        cert = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
        if isinstance(key, ec.EllipticCurvePrivateKey) and cert.not_valid_after_utc > _now():
            return key, cert
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "entra_emulator (dev only)")])
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - dt.timedelta(days=1))
            .not_valid_after(_now() + dt.timedelta(days=10 * 365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    write_private_file(files.ca_key, _private_pem(key))
    write_private_file(files.ca_cert, cert.public_bytes(serialization.Encoding.PEM).decode())
    # A new CA invalidates any server certificate signed by an old one.
    files.server_cert.unlink(missing_ok=True)
    return key, cert


def _subject_alternative_names(hosts: tuple[str, ...]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _server_certificate_usable(files: TlsFiles, ca_cert: x509.Certificate,
                               hosts: tuple[str, ...]) -> bool:
    if not (files.server_cert.is_file() and files.server_key.is_file()):
        return False
    try:
        cert = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    covered = set(san)
    return (cert.issuer == ca_cert.subject
            and cert.not_valid_after_utc - RENEW_BEFORE > _now()
            and all(name in covered for name in _subject_alternative_names(hosts)))


def _create_server_certificate(files: TlsFiles, ca_key: ec.EllipticCurvePrivateKey,
                               ca_cert: x509.Certificate, hosts: tuple[str, ...]) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - dt.timedelta(days=1))
            # Browsers refuse server certificates valid for more than 398 days.
            .not_valid_after(_now() + dt.timedelta(days=397))
            .add_extension(x509.SubjectAlternativeName(_subject_alternative_names(hosts)),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    write_private_file(files.server_key, _private_pem(key))
    write_private_file(files.server_cert,
                       cert.public_bytes(serialization.Encoding.PEM).decode())


def _write_ca_bundle(files: TlsFiles) -> None:
    bundle = files.ca_cert.read_text() + "\n" + Path(certifi.where()).read_text()
    if not files.ca_bundle.is_file() or files.ca_bundle.read_text() != bundle:
        write_private_file(files.ca_bundle, bundle)


def _private_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode("ascii")
