"""Certificates signed by a CA's key outside the role, checked with the OpenSSL CLI.

Whoever holds a generated CA's key can sign anything; what limits the damage is whether
clients accept it. So the tests sign leaves themselves and ask `openssl verify`, the
verifier most clients on a Debian host share, rather than re-implementing the checks.
"""

from __future__ import annotations

import datetime
import ipaddress
import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def new_key(path: Path | None = None) -> ec.EllipticCurvePrivateKey:
    """A P-256 key, written to `path` (PKCS#8 PEM, 0600) when one is given."""
    key = ec.generate_private_key(ec.SECP256R1())
    if path is not None:
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        path.write_bytes(pem)
        path.chmod(0o600)
    return key


def sign_leaf(
    ca_cert_path: Path,
    ca_key_path: Path,
    names: list[str],
    out: Path,
    *,
    key_out: Path | None = None,
    days: int = 1,
) -> Path:
    """Write to `out` a TLS server certificate for `names` (DNS names or IP addresses),
    and its key to `key_out` when a host is to serve it (tests of trust need no key)."""
    ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
    ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(new_key(key_out).public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    out.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return out


def openssl_verify(ca_cert_path: Path, leaf_path: Path) -> subprocess.CompletedProcess[str]:
    """`openssl verify` of `leaf_path` against `ca_cert_path` alone (no system store)."""
    return subprocess.run(
        [
            "openssl",
            "verify",
            "-no-CApath",
            "-no-CAstore",
            "-purpose",
            "sslserver",
            "-CAfile",
            str(ca_cert_path),
            str(leaf_path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )


def name_constraints(ca_cert_path: Path) -> x509.Extension[x509.NameConstraints] | None:
    """The CA certificate's NameConstraints extension, or None."""
    cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
    try:
        return cert.extensions.get_extension_for_class(x509.NameConstraints)
    except x509.ExtensionNotFound:
        return None
