"""The site CA of molecule/edges (issue 19, part 3): one CA on the controller issued the
primary's and the edges' certificates, the edges' also for the balancer's own name (TLS
passes through the balancer), and its key is on no host of the scenario.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import time

from cryptography import x509
from cryptography.x509.oid import NameOID

from tests.support.certs import name_constraints
from tests.support.live import Tiers

from .test_edges import podman

# Both edges back in the balancer after the suite's stops: checks every second, two to rise.
BOTH_EDGES_SECONDS = 30


def served_certificate(port: int, server_name: str, ca_file: str) -> x509.Certificate:
    """The certificate answering for `server_name` on the loopback port, checked against
    the site CA alone (the handshake fails on any other issuer or a missing name)."""
    context = ssl.create_default_context(cafile=ca_file)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def test_every_edge_answers_for_the_balancers_name(tiers: Tiers) -> None:
    seen: set[str] = set()
    deadline = time.monotonic() + BOTH_EDGES_SECONDS
    while seen != set(tiers.edges) and time.monotonic() < deadline:
        cert = served_certificate(tiers.balancer_port, tiers.balancer, str(tiers.ca_file))
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        seen.add(str(names[0].value))
        time.sleep(0.2)
    assert seen == set(tiers.edges), f"through the balancer by its name, only {seen} answered"
    print(f"site CA: {len(seen)} edges answer for {tiers.balancer}")


def test_site_ca_is_name_constrained(tiers: Tiers) -> None:
    extension = name_constraints(tiers.ca_file)
    assert extension is not None and extension.critical
    permitted = extension.value.permitted_subtrees or []
    assert x509.DNSName(tiers.balancer) in permitted
    assert all(x509.DNSName(edge) in permitted for edge in tiers.edges)


def test_site_ca_key_is_on_no_host(tiers: Tiers) -> None:
    key_text = (tiers.ca_file.parent / "ca.key").read_text()
    # A line from the middle of the key's base64: on stdin, never in a process argument.
    marker = key_text.splitlines()[5]
    for host in [tiers.primary, *tiers.edges, tiers.balancer]:
        found = subprocess.run(
            ["podman", "exec", "-i", host,
             "grep", "-rlsF", "-f", "-", "/etc", "/root", "/tmp", "/var/lib", "/srv"],
            input=marker, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert found.stdout == "", f"{host} holds the site CA key: {found.stdout}"
        listing = podman("exec", host, "ls", "/etc/condaport/tls", check=False).stdout.split()
        assert "ca.key" not in listing, f"{host} has a CA key of its own"
