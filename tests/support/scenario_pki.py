"""A CA and server certificates made outside condaport, for molecule/operations.

That scenario first converges the previous release (0.11.0), which has no site CA: its
hosts get PEM certificates from this CA, as an operator's own PKI would hand them over, and
the upgraded release keeps serving them (the other scenarios use the TLS role's site CA).
Existing files are kept, so a second run (idempotence) changes nothing.

Usage: python -m tests.support.scenario_pki DIR HOST [HOST...]   (from the project's root)
writes DIR/ca.crt, DIR/ca.key and DIR/HOST.crt + DIR/HOST.key for each HOST, valid for
HOST, localhost and 127.0.0.1.
"""

from __future__ import annotations

import datetime
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from tests.support.certs import new_key, sign_leaf

DAYS = 30


def _name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def make_ca(folder: Path) -> None:
    key = new_key(folder / "ca.key")
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
    sign_leaf(
        folder / "ca.crt",
        folder / "ca.key",
        [host, "localhost", "127.0.0.1"],
        folder / f"{host}.crt",
        key_out=folder / f"{host}.key",
        days=DAYS,
    )


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
