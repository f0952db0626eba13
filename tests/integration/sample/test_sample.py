"""The sample inventory builds every tier (issue 19, part 4).

molecule/sample converged a primary, an edge and a balancer from a copy of
inventories/production with only its "EDIT:" changes (edit_inventory.py). Here a CI job
publishes the sample package with the same inventory, and a real client (py-rattler)
installs it through the balancer, trusting only the site CA the run left on the controller,
as alice with her password from the vault. Outside the scenario the suite is skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.support.build_sample import build_sample
from tests.support.client import run_install, write_auth_file

from .edit_inventory import EDGE, PRIMARY

PACKAGE = "hello-condaport"


@pytest.fixture(scope="module")
def sample() -> dict:
    raw = os.environ.get("CONDAPORT_SAMPLE")
    if not raw:
        pytest.skip("CONDAPORT_SAMPLE is not set: these tests run from molecule/sample verify")
    return json.loads(raw)


def test_client_installs_through_the_balancer(sample: dict, tmp_path: Path) -> None:
    sample_dir = Path(sample["sample_dir"])
    dist = tmp_path / "dist"
    build_sample(dist)
    published = subprocess.run(
        [
            *sample["ansible_playbook"],
            "condaport.channels.publish",
            "-e",
            json.dumps({"condaport_publish_source_dir": str(dist)}),
        ],
        cwd=sample_dir,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert published.returncode == 0, published.stdout[-3000:] + published.stderr[-2000:]

    url = f"{sample['balancer_url']}/main"
    password = json.loads((sample_dir / "secrets.json").read_text())[
        "vault_condaport_password_alice"
    ]
    result = run_install(
        url,
        [PACKAGE],
        tmp_path / "env",
        auth_file=write_auth_file(tmp_path / "auth.json", url, "alice", password),
        ca_file=sample_dir / "inventory" / "site-ca" / "ca.crt",
        cache_dir=tmp_path / "cache",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "env" / "share" / PACKAGE / "hello.txt").exists()
    # The balancer has no channel of its own: the package came from the edge.
    log = subprocess.run(
        ["podman", "exec", EDGE, "cat", "/var/log/nginx/access.log"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert f"/main/noarch/{PACKAGE}-" in log
    print(f"installed {PACKAGE} from {url} through the balancer")


def test_the_hosts_reach_no_package_index_and_run_the_shipped_wheel(sample: dict) -> None:
    """The converge installed condaport and its dependencies with no index: the hosts' pip
    cannot reach one, and what runs is the wheel the collection artifact shipped."""
    for host in (PRIMARY, EDGE):
        tried = subprocess.run(
            [
                "podman",
                "exec",
                host,
                "/opt/condaport/venv/bin/pip",
                "download",
                "--no-deps",
                "--dest",
                "/tmp/probe",
                "zstandard",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert tried.returncode != 0, tried.stdout
        build = subprocess.run(
            [
                "podman",
                "exec",
                host,
                "/opt/condaport/venv/bin/python",
                "-c",
                "from condaport import release; print(release.installed_build())",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.strip()
        (shipped,) = Path(sample["sample_dir"]).glob(
            "collections/ansible_collections/condaport/channels/roles/condaport_tools/files/wheels/*.whl"
        )
        assert build == hashlib.sha256(shipped.read_bytes()).hexdigest(), host
