"""condaport runs on Debian 12 (bookworm) and 13 (trixie) only: the shared preflight reads
the host's /etc/os-release before anything is installed, refuses any other system naming
what it found, and gives the roles the release whose vars/debian-<release>.yml they load
(issue 19, part 2).

One ansible-playbook run applies roles/condaport_nginx (which brings the shared role and
its preflight) to one local host per os-release text, with --tags preflight; a task after
the role reports the release and a per-release setting each accepted host ended up with.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.playbook import ansible_playbook_path
from tests.support.render import Renderer, directives

REPO = Path(__file__).resolve().parents[2]

# The fields Ansible's release detection also reads; texts as each system ships them.
OS_RELEASES = {
    "debian11": (
        'PRETTY_NAME="Debian GNU/Linux 11 (bullseye)"\nNAME="Debian GNU/Linux"\n'
        'VERSION_ID="11"\nVERSION="11 (bullseye)"\nVERSION_CODENAME=bullseye\nID=debian\n'
    ),
    "ubuntu2404": (
        'PRETTY_NAME="Ubuntu 24.04.1 LTS"\nNAME="Ubuntu"\nVERSION_ID="24.04"\n'
        'VERSION="24.04.1 LTS (Noble Numbat)"\nVERSION_CODENAME=noble\nID=ubuntu\nID_LIKE=debian\n'
    ),
    # Testing and unstable name no VERSION_ID.
    "debiansid": 'PRETTY_NAME="Debian GNU/Linux trixie/sid"\nNAME="Debian GNU/Linux"\nID=debian\n',
    # A derivative that copies Debian's number is still not Debian.
    "derivative12": (
        'PRETTY_NAME="Other OS 12"\nNAME="Other OS"\nVERSION_ID="12"\nID=other\nID_LIKE=debian\n'
    ),
    "debian12": (
        'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\n'
        'VERSION_ID="12"\nVERSION="12 (bookworm)"\nVERSION_CODENAME=bookworm\nID=debian\n'
    ),
    "debian13": (
        'PRETTY_NAME="Debian GNU/Linux 13 (trixie)"\nNAME="Debian GNU/Linux"\n'
        'VERSION_ID="13"\nVERSION="13 (trixie)"\nVERSION_CODENAME=trixie\n'
        "DEBIAN_VERSION_FULL=13.2\nID=debian\n"
    ),
}
CHECK = "Check that the host runs a supported Debian release"
SUPPORTED = "condaport supports Debian 12 (bookworm) and Debian 13 (trixie)"

PLAYBOOK = """\
- name: Check the host's release
  hosts: all:!publishing
  gather_facts: false
  roles:
    - role: condaport_nginx
  tasks:
    - name: Report the release and its NGINX settings
      ansible.builtin.debug:
        msg:
          release: "{{ condaport_debian_release }}"
          http2_directive: "{{ __condaport_nginx_http2_directive }}"
      tags: [preflight]

- name: Publish on a converged host
  hosts: publishing
  gather_facts: false
  roles:
    - role: condaport_publish
  tasks:
    - name: Report that the preflight let the host through
      ansible.builtin.debug:
        msg: {release: "not read"}
      tags: [preflight]
"""


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """host -> {"failed": message, "task": the failed task} or {"reported": the report
    task's message}: the first task a host failed is the one named."""
    scratch = tmp_path_factory.mktemp("release")
    hosts = {}
    for host, text in OS_RELEASES.items():
        sample = scratch / f"{host}.os-release"
        sample.write_text(text)
        hosts[host] = {
            "ansible_connection": "local",
            "ansible_python_interpreter": "{{ ansible_playbook_python }}",
            "sample_os_release": str(sample),
            "condaport_channels": [{"name": "main"}],
            "condaport_nginx_users": [{"name": "ci", "password": "unit-test-password"}],
        }
    # Publishing runs on converged hosts only (their condaport version is checked instead),
    # so it spends no round trip on the release: even this text does not stop it.
    hosts["publishing"] = {
        **hosts["ubuntu2404"],
        "condaport_publish_source_dir": str(scratch),
    }
    (scratch / "inventory.json").write_text(json.dumps({"all": {"hosts": hosts}}))
    # Extra variables outrank the role's vars/main.yml, where the path is fixed; each host
    # then reads its own sample.
    (scratch / "extra.json").write_text(
        json.dumps({"__condaport_os_release_path": "{{ sample_os_release }}"})
    )
    (scratch / "release.yml").write_text(PLAYBOOK)
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    env.update(ANSIBLE_ROLES_PATH=str(REPO / "roles"), ANSIBLE_STDOUT_CALLBACK="ansible.posix.json")
    env.pop("ANSIBLE_FORCE_COLOR", None)
    result = subprocess.run(
        [
            ansible_playbook_path(),
            "-i",
            str(scratch / "inventory.json"),
            "-e",
            f"@{scratch / 'extra.json'}",
            "--forks",
            "10",
            "--tags",
            "preflight",
            str(scratch / "release.yml"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        check=False,
        timeout=300,
    )
    report = json.loads(result.stdout)
    seen: dict[str, dict] = {}
    for play in report["plays"]:
        for task in play["tasks"]:
            for host, answer in task["hosts"].items():
                if host in seen:
                    continue
                if answer.get("failed"):
                    seen[host] = {"failed": answer.get("msg", ""), "task": task["task"]["name"]}
                elif task["task"]["name"].startswith("Report "):
                    seen[host] = {"reported": answer["msg"]}
    return seen


@pytest.mark.parametrize(
    ("host", "found"),
    [
        ("debian11", "this host runs Debian GNU/Linux 11 (bullseye)."),
        ("ubuntu2404", "this host runs Ubuntu 24.04.1 LTS."),
        ("debiansid", "this host runs Debian GNU/Linux trixie/sid."),
        ("derivative12", "this host runs Other OS 12."),
    ],
)
def test_other_systems_are_refused_by_name(outcome: dict[str, dict], host: str, found: str) -> None:
    assert "failed" in outcome[host], outcome[host]
    assert outcome[host]["task"] == f"condaport.channels.condaport : {CHECK}"
    assert outcome[host]["failed"] == f"{SUPPORTED}; {found}"


@pytest.mark.parametrize(
    ("host", "release", "http2_directive"), [("debian12", "12", False), ("debian13", "13", True)]
)
def test_supported_releases_pass_and_load_their_settings(
    outcome: dict[str, dict], host: str, release: str, http2_directive: bool
) -> None:
    assert "reported" in outcome[host], outcome[host]
    assert outcome[host]["reported"]["release"] == release
    assert outcome[host]["reported"]["http2_directive"] == http2_directive


def _vhost(release: str) -> list[str]:
    """The channel vhost's directives with the release's vars loaded over vars/main.yml."""
    renderer = Renderer(
        ["condaport", "condaport_tools", "condaport_nginx"],
        {"condaport_channels": [{"name": "main"}], "condaport_nginx_users": []},
    )
    release_vars = REPO / "roles" / "condaport_nginx" / "vars" / f"debian-{release}.yml"
    extra = yaml.safe_load(release_vars.read_text()) if release_vars.exists() else {}
    text = renderer.render("condaport_nginx", "etc/nginx/conf.d/condaport.conf.j2", **extra)
    return directives(text)


def test_http2_follows_the_nginx_of_each_release() -> None:
    """NGINX 1.22 (Debian 12) has no `http2` directive; 1.26 (Debian 13) warns about
    `listen ... http2` on every test and reload."""
    bookworm, trixie = _vhost("12"), _vhost("13")
    assert any(line.startswith("listen ") and " http2" in line for line in bookworm)
    assert "http2 on;" not in bookworm
    assert not [line for line in trixie if line.startswith("listen ") and " http2" in line]
    assert "http2 on;" in trixie


def test_publishing_reads_no_release(outcome: dict[str, dict]) -> None:
    assert outcome["publishing"] == {"reported": {"release": "not read"}}
