"""The generated CA a converged host hands to clients may sign only for that host.

Clients add the CA to their system store; if its key leaks, the damage must stop at this
host's own names. The CA certificate is the one fetched to the controller (what clients
get); the key comes from the container, as an attacker who took it would use it.
"""

from __future__ import annotations

import ipaddress
import subprocess
from pathlib import Path

import pytest
from cryptography import x509

from tests.support.certs import name_constraints, openssl_verify, sign_leaf
from tests.support.live import Channel

# molecule.yml's condaport_tls_server_names and condaport_tls_server_ips.
HOST_NAMES = {
    x509.DNSName("localhost"),
    x509.IPAddress(ipaddress.ip_network("127.0.0.1/32")),
}


@pytest.fixture(scope="module")
def ca_key(channel: Channel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    key = tmp_path_factory.mktemp("ca") / "ca.key"
    key.touch(mode=0o600)
    key.write_bytes(
        subprocess.run(
            ["podman", "exec", channel.container, "cat", "/etc/condaport/tls/ca.key"],
            capture_output=True,
            check=True,
        ).stdout
    )
    return key


def test_ca_is_constrained_critically_to_the_host_names(channel: Channel) -> None:
    extension = name_constraints(channel.ca_file)
    assert extension is not None, "the CA clients trust has no NameConstraints"
    assert extension.critical, "non-critical constraints are ignored by some clients"
    assert set(extension.value.permitted_subtrees or []) == HOST_NAMES


@pytest.mark.parametrize(
    "names",
    [["evil.example.com"], ["localhost", "evil.example.com"], ["192.0.2.1"]],
    ids=["other-name", "other-name-beside-own", "other-address"],
)
def test_ca_key_cannot_sign_for_other_names(
    channel: Channel, ca_key: Path, tmp_path: Path, names: list[str]
) -> None:
    leaf = sign_leaf(channel.ca_file, ca_key, names, tmp_path / "leaf.pem")
    verdict = openssl_verify(channel.ca_file, leaf)
    assert verdict.returncode != 0, f"a certificate for {names} verified: {verdict.stdout}"
    assert "permitted subtree violation" in verdict.stdout + verdict.stderr


def test_ca_key_still_signs_for_the_host_names(
    channel: Channel, ca_key: Path, tmp_path: Path
) -> None:
    leaf = sign_leaf(channel.ca_file, ca_key, ["localhost", "127.0.0.1"], tmp_path / "leaf.pem")
    verdict = openssl_verify(channel.ca_file, leaf)
    assert verdict.returncode == 0, verdict.stdout + verdict.stderr
