"""A channel in ACME mode: certificate from the ACME CA, renewed by the host itself.

Molecule's `acme` scenario runs Debian's pebble on the channel host; the converge ordered
the certificate with HTTP-01 through port 80. Everything here runs inside the container
(`podman exec`), where the channel's name resolves: what a client there would see.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

CONTAINER = os.environ.get("CONDAPORT_CONTAINER", "")
NAME = os.environ.get("CONDAPORT_ACME_NAME", "")
CERTIFICATE = "/etc/condaport/tls/server.fullchain.pem"
KEY = "/etc/condaport/tls/server.key"
SERVICE = "condaport-acme-renew.service"
FORCE_DROP_IN = f"/run/systemd/system/{SERVICE}.d/molecule-force.conf"

pytestmark = pytest.mark.skipif(
    not CONTAINER or not NAME,
    reason="needs the host of Molecule's acme scenario (CONDAPORT_CONTAINER, CONDAPORT_ACME_NAME)",
)


def run(
    *argv: str, check: bool = True, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command in the channel host's container."""
    return subprocess.run(
        ["podman", "exec", "-i", CONTAINER, *argv],
        capture_output=True,
        text=True,
        check=check,
        input=stdin,
    )


def pem_certificates(text: str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(text.encode())


def served_chain() -> list[x509.Certificate]:
    """The chain NGINX sends to a client asking for the channel's name."""
    answer = run(
        "sh",
        "-c",
        f"openssl s_client -connect 127.0.0.1:443 -servername {NAME} -showcerts"
        " </dev/null 2>/dev/null",
    )
    return pem_certificates(answer.stdout)


def fingerprint(certificate: x509.Certificate) -> str:
    return certificate.fingerprint(hashes.SHA256()).hex()


@pytest.fixture(scope="module")
def pebble_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pebble's issuing root (made at pebble's start, given out by its management API)."""
    root = tmp_path_factory.mktemp("pebble") / "root.pem"
    root.write_text(run("curl", "-sSk", "https://localhost:15000/roots/0").stdout)
    return root


def verify_chain(
    chain: list[x509.Certificate], root: Path, work: Path
) -> subprocess.CompletedProcess[str]:
    """openssl's verdict on the chain for the channel's name, trusting pebble's root only."""
    leaf, intermediates = work / "leaf.pem", work / "intermediates.pem"
    leaf.write_bytes(chain[0].public_bytes(Encoding.PEM))
    intermediates.write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in chain[1:]))
    return subprocess.run(
        [
            "openssl",
            "verify",
            "-CAfile",
            str(root),
            "-untrusted",
            str(intermediates),
            "-verify_hostname",
            NAME,
            str(leaf),
        ],
        capture_output=True,
        text=True,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
    )


def test_served_certificate_chains_to_the_acme_root(pebble_root: Path, tmp_path: Path) -> None:
    chain = served_chain()
    verdict = verify_chain(chain, pebble_root, tmp_path)
    assert verdict.returncode == 0, verdict.stdout + verdict.stderr
    installed = pem_certificates(run("cat", CERTIFICATE).stdout)
    assert fingerprint(chain[0]) == fingerprint(installed[0])


def test_port_80_serves_challenges_and_redirects_everything_else() -> None:
    token = "molecule-probe-token"
    path = f"/var/lib/condaport-acme/challenge/.well-known/acme-challenge/{token}"
    run("sh", "-c", f"printf probe-value > {path}")
    try:
        served = run("curl", "-sS", f"http://{NAME}/.well-known/acme-challenge/{token}")
        assert served.stdout == "probe-value"
        other = run(
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{redirect_url}",
            f"http://{NAME}/public/noarch/repodata.json",
        )
        assert other.stdout == f"301 https://{NAME}/public/noarch/repodata.json"
    finally:
        run("rm", "-f", path)
    mode = run(
        "stat", "-c", "%U %a", "/var/lib/condaport-acme/challenge/.well-known/acme-challenge"
    )
    assert mode.stdout.split() == ["root", "755"]


def test_renewal_timer_is_active() -> None:
    assert run("systemctl", "is-enabled", "condaport-acme-renew.timer").stdout.strip() == "enabled"
    assert run("systemctl", "is-active", "condaport-acme-renew.timer").stdout.strip() == "active"


def test_renewal_is_a_no_op_while_the_certificate_is_fresh() -> None:
    before = run("sha256sum", CERTIFICATE).stdout
    run("systemctl", "start", SERVICE)
    assert run("sha256sum", CERTIFICATE).stdout == before


@pytest.fixture
def client_loop(pebble_root: Path) -> Iterator[subprocess.Popen[str]]:
    """A client fetching over HTTPS without pause, trusting pebble's root only."""
    run("sh", "-c", "cat > /run/molecule-pebble-root.pem", stdin=pebble_root.read_text())
    script = (
        "while [ ! -e /run/molecule-stop ]; do "
        f"curl -sS -o /dev/null --cacert /run/molecule-pebble-root.pem https://{NAME}/public/noarch/repodata.json"
        ' -w "%{http_code} %{exitcode}\\n" 2>&1; done'
    )
    run("rm", "-f", "/run/molecule-stop")
    loop = subprocess.Popen(
        ["podman", "exec", CONTAINER, "sh", "-c", script],
        stdout=subprocess.PIPE,
        text=True,
    )
    yield loop
    run("touch", "/run/molecule-stop")
    loop.wait(timeout=30)


def test_forced_renewal_serves_a_new_certificate_without_a_failed_request(
    pebble_root: Path, tmp_path: Path, client_loop: subprocess.Popen[str]
) -> None:
    old = served_chain()[0]
    key_before = run("sha256sum", KEY).stdout
    run("mkdir", "-p", os.path.dirname(FORCE_DROP_IN))
    # Any certificate has fewer than 100,000 days left: the service must renew now.
    run(
        "sh",
        "-c",
        "printf '[Service]\\nEnvironment=CONDAPORT_ACME_RENEW_BEFORE_DAYS=100000\\n'"
        f" > {FORCE_DROP_IN}",
    )
    run("systemctl", "daemon-reload")
    try:
        time.sleep(1)
        renewal = run("systemctl", "start", SERVICE, check=False)
        journal = run("journalctl", "-u", SERVICE, "-n", "20", "--no-pager").stdout
        assert renewal.returncode == 0, journal
    finally:
        run("rm", "-f", FORCE_DROP_IN)
        run("systemctl", "daemon-reload")
    time.sleep(1)
    run("touch", "/run/molecule-stop")
    outcomes, _ = client_loop.communicate(timeout=30)

    new_chain = served_chain()
    assert fingerprint(new_chain[0]) != fingerprint(old), "NGINX still serves the old certificate"
    installed = pem_certificates(run("cat", CERTIFICATE).stdout)
    assert fingerprint(new_chain[0]) == fingerprint(installed[0])
    verdict = verify_chain(new_chain, pebble_root, tmp_path)
    assert verdict.returncode == 0, verdict.stdout + verdict.stderr
    assert run("sha256sum", KEY).stdout == key_before, "the renewal must keep the key NGINX uses"

    lines = outcomes.splitlines()
    assert len(lines) > 5, f"the client made too few requests to tell: {lines}"
    failed = [line for line in lines if not line.endswith(" 0")]
    assert not failed, (
        f"{len(failed)} of {len(lines)} requests failed during the renewal: {failed[:5]}"
    )
