"""The site CA (issue 19, part 3): one CA on the controller issues every host's certificate.

Two hosts, a primary and an edge, run the TLS role's site-CA tasks with a local connection
(each its own TLS directory) while a balancer with a public name of its own sits in the
inventory, as in a site with edges. The tests check what the operator relies on: the CA's
key stays in the controller's directory, every certificate verifies against the one CA
(the edge's for the balancer's name too), the CA cannot vouch for names outside the site,
and a second run, a --check run and a name change do only what they should.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509

from tests.support.certs import name_constraints, openssl_verify, sign_leaf
from tests.support.pki import host_python, public_key_of, serial_of
from tests.support.playbook import ansible_playbook_path

REPO = Path(__file__).resolve().parents[2]
PLAYBOOK = """\
- name: The TLS role's site CA, for hosts reached locally
  hosts: channel_hosts:channel_edges
  gather_facts: false
  tasks:
    - name: Check the settings, then issue from the site CA
      ansible.builtin.include_role:
        name: condaport_tls
        tasks_from: "{{ item }}"
      loop: [preflight.yml, site.yml]
"""
PRIMARY = "primary.site.test"
EDGE = "edge1.site.test"
BALANCER = "balancer.site.test"
PUBLIC_NAME = "conda.site.test"

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the role chowns its files to root"),
    pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI"),
]


class Site:
    """A temporary site: the controller's CA directory and one TLS directory per host."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ca_dir = root / "controller" / "site-ca"
        self.tls = {PRIMARY: root / "primary-tls", EDGE: root / "edge-tls"}
        self.primary_names = [PRIMARY]

    def inventory(self, **extra: object) -> Path:
        local = {"ansible_connection": "local", "ansible_python_interpreter": host_python()}
        shared = {
            "condaport_tls_site_ca_dir": str(self.ca_dir),
            "condaport_tls_site_names": ["site.test"],
            "condaport_tls_site_ips": ["192.0.2.0/24", "2001:db8::10"],
            **extra,
        }
        inventory = {
            "all": {
                "vars": shared,
                "children": {
                    "channel_hosts": {
                        "hosts": {
                            PRIMARY: {
                                **local,
                                "condaport_tls_dir": str(self.tls[PRIMARY]),
                                "condaport_tls_server_names": self.primary_names,
                            }
                        }
                    },
                    "channel_edges": {
                        "hosts": {EDGE: {**local, "condaport_tls_dir": str(self.tls[EDGE])}}
                    },
                    "channel_balancers": {
                        "hosts": {BALANCER: {"condaport_balancer_server_names": [PUBLIC_NAME]}}
                    },
                },
            }
        }
        path = self.root / "inventory.json"
        path.write_text(json.dumps(inventory))
        return path

    def run(self, *, check: bool = False, **extra: object) -> tuple[int, str]:
        """Run the role; return the changed count over both hosts and the output."""
        for folder in self.tls.values():
            folder.mkdir(exist_ok=True)
        playbook = self.root / "site-ca.yml"
        playbook.write_text(PLAYBOOK)
        argv = [ansible_playbook_path(), "-i", str(self.inventory(**extra)), str(playbook)]
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
        output = result.stdout + result.stderr
        recap = r"(\S+)\s*:\s*ok=\d+\s+changed=(\d+)\s+unreachable=0\s+failed=(\d+)"
        recaps = re.findall(recap, output)
        failed = result.returncode != 0 or any(int(f) for _, _, f in recaps)
        return (-1 if failed else sum(int(c) for _, c, _ in recaps)), output

    def converge(self, *, check: bool = False, **extra: object) -> int:
        changed, output = self.run(check=check, **extra)
        assert changed >= 0, output
        return changed

    def certificate(self, host: str) -> Path:
        return self.tls[host] / "server.fullchain.pem"


def _dns_names(path: Path) -> list[str]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return sans.get_values_for_type(x509.DNSName)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    site = Site(tmp_path_factory.mktemp("site"))
    assert site.converge() > 0
    return site


def test_every_host_certificate_verifies_against_the_one_site_ca(site: Site) -> None:
    ca = site.ca_dir / "ca.crt"
    for host in (PRIMARY, EDGE):
        verdict = openssl_verify(ca, site.certificate(host))
        assert verdict.returncode == 0, verdict.stdout + verdict.stderr
        # What the host gives its clients and its edge's upstream checks is the site CA.
        assert (site.tls[host] / "ca.crt").read_bytes() == ca.read_bytes()


def test_edge_certificate_carries_the_balancer_public_name(site: Site) -> None:
    assert set(_dns_names(site.certificate(EDGE))) == {EDGE, PUBLIC_NAME}
    # A primary is not behind the balancer: its names are its own.
    assert _dns_names(site.certificate(PRIMARY)) == [PRIMARY]


def test_ca_key_stays_on_the_controller(site: Site) -> None:
    assert (site.ca_dir.stat().st_mode & 0o777) == 0o700
    assert ((site.ca_dir / "ca.key").stat().st_mode & 0o777) == 0o600
    ca_key = (site.ca_dir / "ca.key").read_bytes()
    for folder in site.tls.values():
        assert not (folder / "ca.key").exists()
        assert all(ca_key != f.read_bytes() for f in folder.iterdir())


def test_site_ca_cannot_sign_outside_the_site(site: Site, tmp_path: Path) -> None:
    ca = site.ca_dir / "ca.crt"
    extension = name_constraints(ca)
    assert extension is not None and extension.critical
    assert extension.value.permitted_subtrees == [
        x509.DNSName("site.test"),
        x509.IPAddress(ipaddress.ip_network("192.0.2.0/24")),
        x509.IPAddress(ipaddress.ip_network("2001:db8::10/128")),
    ]
    for names in (["evil.example.com"], ["site.test.example.com"], ["198.51.100.7"]):
        leaf = sign_leaf(ca, site.ca_dir / "ca.key", names, tmp_path / "leaf.pem")
        assert openssl_verify(ca, leaf).returncode != 0, names
    own = ["new.site.test", "192.0.2.7", "2001:db8::10"]
    inside = sign_leaf(ca, site.ca_dir / "ca.key", own, tmp_path / "in.pem")
    assert openssl_verify(ca, inside).returncode == 0


def test_second_run_and_check_mode_change_nothing(site: Site) -> None:
    assert site.converge() == 0
    assert site.converge(check=True) == 0


# The two tests below change the module's site in turn (an ansible-playbook run costs
# seconds): each leaves it converged for the next.
def test_added_name_reissues_that_host_only(site: Site) -> None:
    ca_key = public_key_of(site.ca_dir / "ca.key")
    edge_serial = serial_of(site.certificate(EDGE))
    primary_serial = serial_of(site.certificate(PRIMARY))

    site.primary_names = [PRIMARY, "upload.site.test"]
    assert site.converge(check=True) > 0
    assert serial_of(site.certificate(PRIMARY)) == primary_serial, "check mode re-issued"
    assert site.converge() > 0

    assert serial_of(site.certificate(PRIMARY)) != primary_serial
    assert "upload.site.test" in _dns_names(site.certificate(PRIMARY))
    assert serial_of(site.certificate(EDGE)) == edge_serial
    assert public_key_of(site.ca_dir / "ca.key") == ca_key


def test_certificate_is_renewed_before_it_expires(site: Site) -> None:
    serials = {host: serial_of(site.certificate(host)) for host in (PRIMARY, EDGE)}
    # Renewal wanted 400 days ahead of certificates valid for 365: both re-issued, for the
    # same names; then the usual 30 days, and nothing more to do.
    assert site.converge(condaport_tls_renew_before_days=400) > 0
    assert all(serial_of(site.certificate(host)) != serials[host] for host in serials)
    assert set(_dns_names(site.certificate(EDGE))) == {EDGE, PUBLIC_NAME}
    assert site.converge() == 0


def test_name_outside_the_site_is_refused_before_anything_is_made(tmp_path: Path) -> None:
    site = Site(tmp_path)
    changed, output = site.run(condaport_tls_site_names=["example.org"])
    assert changed == -1
    assert "outside them" in output and PRIMARY in output
    assert not site.ca_dir.exists()
