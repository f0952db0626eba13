"""The collection artifact, as a team installs it: built by scripts/build-collection.sh,
installed into an empty collections path, and used from a folder outside the checkout by
the two-line playbook the README shows. The converge of hosts from it runs in the `sample`
Molecule scenario; here: what the artifact holds, and that Ansible resolves every role,
module and playbook of it by FQCN without the checkout.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from tests.unit.test_release import build_wheel

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("collection")
    subprocess.run(
        [ROOT / "scripts/build-collection.sh", out],
        env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "PYTHON": sys.executable},
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("condaport-channels-*.tar.gz")
    return built


def members(artifact: Path) -> dict[str, bytes]:
    with tarfile.open(artifact) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def test_the_artifact_ships_the_wheel_the_checkout_builds_and_no_source(
    artifact: Path, tmp_path: Path
) -> None:
    files = members(artifact)
    version = yaml.safe_load((ROOT / "galaxy.yml").read_text())["version"]
    shipped = files[f"roles/condaport_tools/files/wheels/condaport-{version}-py3-none-any.whl"]
    built = build_wheel(tmp_path).read_bytes()
    assert hashlib.sha256(shipped).hexdigest() == hashlib.sha256(built).hexdigest()
    assert "roles/condaport_tools/files/constraints.txt" in files
    assert "plugins/modules/condaport_htpasswd.py" in files
    for playbook in ("site", "channel", "balancer", "publish", "clients", "index"):
        assert f"playbooks/{playbook}.yml" in files
    assert "inventories/production/hosts.yml" in files
    leaked = [
        n for n in files if n.split("/")[0] in {"host", "tests", "molecule", ".git", "collections"}
    ]
    assert not leaked, leaked


def test_an_installed_artifact_resolves_from_outside_the_checkout(
    artifact: Path, tmp_path: Path
) -> None:
    collections = tmp_path / "collections"
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith("ANSIBLE_")
    }
    environment |= {
        "PATH": f"{BIN}:{environment['PATH']}",
        "ANSIBLE_COLLECTIONS_PATH": str(collections),
        "HOME": str(tmp_path),
    }
    subprocess.run(
        [BIN / "ansible-galaxy", "collection", "install", "--no-deps", "-p", collections, artifact],
        cwd=tmp_path,
        env=environment,
        check=True,
        capture_output=True,
    )
    team = tmp_path / "team-repo"
    team.mkdir()
    (team / "site.yml").write_text(
        "---\n- name: Our channels\n  ansible.builtin.import_playbook: condaport.channels.site\n"
    )
    (team / "hosts.yml").write_text(
        "all:\n  children:\n    channel_hosts:\n      hosts:\n        conda.example.org:\n"
    )
    listed = subprocess.run(
        [BIN / "ansible-playbook", "-i", "hosts.yml", "site.yml", "--list-tasks"],
        cwd=team,
        env=environment,
        capture_output=True,
        text=True,
    )
    assert listed.returncode == 0, listed.stderr
    for role in ("condaport_tls", "condaport_tools", "condaport_nginx", "condaport_balancer"):
        assert f"condaport.channels.{role} : " in listed.stdout or f"{role} : " in listed.stdout
    assert str(ROOT) not in listed.stdout + listed.stderr
