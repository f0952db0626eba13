"""What the TLS role's tests share: the Python its modules run with, and a key's or a
certificate's identity, to tell a re-issued key or certificate from a kept one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization


def host_python() -> str:
    """The interpreter the modules run with: Debian's, like on a channel host, if present.

    community.crypto 3.0.5 cannot create EC keys with cryptography >= 46.0.5 (its curve
    lookup misses them), which a controller venv may well have; Debian 12's 38.0 works.
    """
    system = Path("/usr/bin/python3")
    if system.exists():
        probe = subprocess.run([system, "-c", "import cryptography"], check=False)
        if probe.returncode == 0:
            return str(system)
    return sys.executable


def public_key_of(path: Path) -> bytes:
    """The public half (DER) of the private key at `path`."""
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def serial_of(path: Path) -> int:
    """The serial number of the (first) certificate at `path`."""
    return x509.load_pem_x509_certificate(path.read_bytes()).serial_number
