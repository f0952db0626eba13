"""A CA and server certificates for scenarios with several hosts (molecule/edges).

An operator's PKI issues every channel host and edge a certificate from one CA, so
clients trust one CA whichever edge a balancer picks; the scenario plays that PKI on the
controller. Existing files are kept, so a second run (idempotence) changes nothing.

Usage: python tests/support/pki.py DIR HOST [HOST...]
writes DIR/ca.crt, DIR/ca.key and DIR/HOST.crt + DIR/HOST.key for each HOST, valid for
HOST, localhost and 127.0.0.1.
"""

from __future__ import annotations

import datetime
import ipaddress
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DAYS = 30


def _write_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.write_bytes(pem)
    path.chmod(0o600)
    return key


def _name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def make_ca(folder: Path) -> None:
    key = _write_key(folder / "ca.key")
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("condaport scenario CA"))
        .issuer_name(_name("condaport scenario CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    (folder / "ca.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def make_leaf(folder: Path, host: str) -> None:
    ca_cert = x509.load_pem_x509_certificate((folder / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((folder / "ca.key").read_bytes(), password=None)
    key = _write_key(folder / f"{host}.key")
    now = datetime.datetime.now(datetime.UTC)
    names = [host, "localhost", "127.0.0.1"]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(host))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=DAYS))
        .add_extension(x509.SubjectAlternativeName([_san(n) for n in names]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    (folder / f"{host}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    folder = Path(argv[1])
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "ca.crt").exists():
        make_ca(folder)
    for host in argv[2:]:
        if not (folder / f"{host}.crt").exists():
            make_leaf(folder, host)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
