"""The generated CA may sign only for the host's own names (issue 11, item 8).

Clients put the generated CA in their system store, so its key must not be able to vouch
for any other site. These tests run the role's generated-CA tasks with ansible-playbook on
the controller (connection local, a temporary TLS directory), then sign certificates with
the CA's key the way an attacker holding it would, and ask `openssl verify`.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.certs import name_constraints, openssl_verify, sign_leaf
from tests.support.pki import host_python, public_key_of, serial_of
from tests.support.playbook import ansible_playbook_path

REPO = Path(__file__).resolve().parents[2]
PLAYBOOK = """\
- name: The TLS role's generated CA, on the controller
  hosts: localhost
  connection: local
  gather_facts: false
  handlers:
    - name: Stand in for the NGINX handlers
      ansible.builtin.debug:
        msg: NGINX would reload here
      listen: condaport nginx config changed
  tasks:
    - name: Create the CA and the server certificate
      ansible.builtin.include_role:
        name: condaport_tls
        tasks_from: generated.yml
"""

pytestmark = [
    # The role makes its files root-owned, as on a real host.
    pytest.mark.skipif(os.geteuid() != 0, reason="the role chowns its files to root"),
    pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI"),
]


def run_role(tls_dir: Path, names: list[str], ips: list[str], *, check: bool = False) -> int:
    """Run generated.yml against `tls_dir`; return the play recap's changed count."""
    tls_dir.mkdir(exist_ok=True)
    playbook = tls_dir.parent / "generated.yml"
    playbook.write_text(PLAYBOOK)
    extra = {
        "ansible_python_interpreter": host_python(),
        "condaport_tls_dir": str(tls_dir),
        "condaport_tls_server_names": names,
        "condaport_tls_server_ips": ips,
        "condaport_tls_ca_fetch_dir": "",
    }
    argv = [ansible_playbook_path(), "-i", "localhost,", "-e", json.dumps(extra), str(playbook)]
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"))
    env["ANSIBLE_ROLES_PATH"] = str(REPO / "roles")
    result = subprocess.run(
        [*argv, "--check"] if check else argv,
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        check=False,
    )
    recap = re.search(
        r"localhost\s*:\s*ok=\d+\s+changed=(\d+)\s+unreachable=0\s+failed=0", result.stdout
    )
    assert result.returncode == 0 and recap, result.stdout + result.stderr
    return int(recap.group(1))


def _write_unconstrained_ca(tls_dir: Path, names: list[str]) -> None:
    """What an older version of the role left behind: a CA that may sign for any name."""
    tls_dir.mkdir()
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "condaport private CA (old)")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    (tls_dir / "ca.key").write_bytes(
        ca_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (tls_dir / "ca.crt").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    # The signing requests were kept beside them, and check mode reads them.
    ca_csr = (
        x509.CertificateSigningRequestBuilder().subject_name(ca_name).sign(ca_key, hashes.SHA256())
    )
    (tls_dir / "ca.csr").write_bytes(ca_csr.public_bytes(serialization.Encoding.PEM))
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .sign(server_key, hashes.SHA256())
    )
    (tls_dir / "server.csr").write_bytes(server_csr.public_bytes(serialization.Encoding.PEM))
    (tls_dir / "server.key").write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    sign_leaf(tls_dir / "ca.crt", tls_dir / "ca.key", names, tls_dir / "server.fullchain.pem")
    assert openssl_verify(tls_dir / "ca.crt", tls_dir / "server.fullchain.pem").returncode == 0


def _assert_refused(tls_dir: Path, names: list[str], tmp_path: Path, reason: str) -> None:
    leaf = sign_leaf(tls_dir / "ca.crt", tls_dir / "ca.key", names, tmp_path / "leaf.pem")
    verdict = openssl_verify(tls_dir / "ca.crt", leaf)
    assert verdict.returncode != 0, f"a certificate for {names} verified: {verdict.stdout}"
    assert reason in verdict.stdout + verdict.stderr


def _assert_accepted(tls_dir: Path, leaf: Path) -> None:
    verdict = openssl_verify(tls_dir / "ca.crt", leaf)
    assert verdict.returncode == 0, verdict.stdout + verdict.stderr


NAMES = ["channel.example.org"]
IPS = ["192.0.2.10", "2001:db8::10"]


@pytest.fixture(scope="module")
def converged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TLS directory the role created for NAMES and IPS."""
    tls = tmp_path_factory.mktemp("converged") / "tls"
    assert run_role(tls, NAMES, IPS) > 0
    return tls


def test_generated_ca_is_constrained_critically_to_the_host_names(converged: Path) -> None:
    extension = name_constraints(converged / "ca.crt")
    assert extension is not None, "the CA certificate has no NameConstraints"
    assert extension.critical
    assert set(extension.value.permitted_subtrees or []) == {
        x509.DNSName("channel.example.org"),
        x509.IPAddress(ipaddress.ip_network("192.0.2.10/32")),
        x509.IPAddress(ipaddress.ip_network("2001:db8::10/128")),
    }
    assert not extension.value.excluded_subtrees
    _assert_accepted(converged, converged / "server.fullchain.pem")


@pytest.mark.parametrize(
    "names",
    [
        ["evil.example.com"],
        ["channel.example.org", "evil.example.com"],
        ["example.org"],
        ["198.51.100.7"],
        ["2001:db8::7"],
    ],
    ids=["other-name", "other-name-beside-own", "parent-domain", "other-ipv4", "other-ipv6"],
)
def test_ca_key_cannot_sign_for_other_names(
    converged: Path, tmp_path: Path, names: list[str]
) -> None:
    _assert_refused(converged, names, tmp_path, "permitted subtree violation")


def test_ca_key_still_signs_for_the_host_names(converged: Path, tmp_path: Path) -> None:
    own = ["channel.example.org", "192.0.2.10", "2001:db8::10"]
    _assert_accepted(
        converged, sign_leaf(converged / "ca.crt", converged / "ca.key", own, tmp_path / "own.pem")
    )


def test_second_run_and_check_mode_change_nothing(converged: Path) -> None:
    assert run_role(converged, NAMES, IPS) == 0
    assert run_role(converged, NAMES, IPS, check=True) == 0


def test_ca_without_addresses_cannot_sign_for_any_address(tmp_path: Path) -> None:
    # With no IP entry among the permitted subtrees, RFC 5280 would leave addresses
    # unconstrained; the role excludes them instead.
    tls = tmp_path / "tls"
    run_role(tls, ["channel.example.org"], [])
    for address in ("198.51.100.7", "2001:db8::7"):
        _assert_refused(tls, [address], tmp_path, "excluded subtree violation")


@pytest.mark.parametrize("ips", [["192.0.2.10"], ["2001:db8::10"]], ids=["ipv4", "ipv6"])
def test_ca_without_names_cannot_sign_for_any_name(tmp_path: Path, ips: list[str]) -> None:
    tls = tmp_path / "tls"
    run_role(tls, [], ips)
    for name in ("evil.example.com", "localhost"):
        _assert_refused(tls, [name], tmp_path, "subtree violation")
    # The server certificate's common name is then its address: that must still pass.
    _assert_accepted(tls, tls / "server.fullchain.pem")


def test_unconstrained_ca_is_replaced_with_a_new_key(tmp_path: Path) -> None:
    # A host set up by an older version: the CA must be re-issued, and with a new key, or
    # every client still trusting the old certificate keeps trusting that key for any name.
    tls = tmp_path / "tls"
    _write_unconstrained_ca(tls, ["channel.example.org"])
    old_ca_key = public_key_of(tls / "ca.key")
    old_server_serial = serial_of(tls / "server.fullchain.pem")

    assert run_role(tls, ["channel.example.org"], [], check=True) > 0
    assert public_key_of(tls / "ca.key") == old_ca_key, "check mode changed the CA key"
    assert run_role(tls, ["channel.example.org"], []) > 0

    assert public_key_of(tls / "ca.key") != old_ca_key
    extension = name_constraints(tls / "ca.crt")
    assert extension is not None and extension.critical
    assert serial_of(tls / "server.fullchain.pem") != old_server_serial
    _assert_accepted(tls, tls / "server.fullchain.pem")
    _assert_refused(tls, ["evil.example.com"], tmp_path, "permitted subtree violation")
    assert run_role(tls, ["channel.example.org"], []) == 0
    assert run_role(tls, ["channel.example.org"], [], check=True) == 0


def test_added_name_reissues_the_ca_and_the_server_certificate(tmp_path: Path) -> None:
    tls = tmp_path / "tls"
    run_role(tls, ["channel.example.org"], [])
    ca_key = public_key_of(tls / "ca.key")
    ca_serial = serial_of(tls / "ca.crt")

    assert run_role(tls, ["channel.example.org", "conda.example.org"], []) > 0

    # Same key: a name change is routine, the old certificate was constrained already.
    assert public_key_of(tls / "ca.key") == ca_key
    assert serial_of(tls / "ca.crt") != ca_serial
    extension = name_constraints(tls / "ca.crt")
    assert extension is not None
    assert x509.DNSName("conda.example.org") in (extension.value.permitted_subtrees or [])
    server = x509.load_pem_x509_certificate((tls / "server.fullchain.pem").read_bytes())
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "conda.example.org" in sans.get_values_for_type(x509.DNSName)
    _assert_accepted(tls, tls / "server.fullchain.pem")
    assert run_role(tls, ["channel.example.org", "conda.example.org"], []) == 0
