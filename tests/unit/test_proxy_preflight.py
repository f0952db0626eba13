"""The preflights of the shared role and the proxy role refuse a proxy channel's bad upstream
with a message naming the channel, and never show an upstream password (item 4 of issue 13,
item 4 of issue 17).

One ansible-playbook run applies roles/condaport_proxy and the roles it depends on, their
preflight tasks only (--tags preflight; nothing runs on a host), to one local host per
case, each with its own condaport_channels.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.support.playbook import ansible_playbook_path

REPO = Path(__file__).resolve().parents[2]
SECRET = "Upstream-TopSecret-4711"
CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"

PLAYBOOK = """\
- name: Check the channel list
  hosts: all
  gather_facts: false
  roles:
    - role: condaport_proxy
"""


def _cases(ca: Path) -> dict[str, tuple[dict, str | None]]:
    """host -> (its proxy channel, a phrase of the expected refusal or None for accepted)."""
    return {
        "accepted": (
            {
                "upstream": "https://conda.example.org/conda-forge",
                "upstream_user": "mirror",
                "upstream_password": SECRET,
                "upstream_ca": str(ca),
            },
            None,
        ),
        "plain_http_allowed": (
            {"upstream": "http://mirror.internal:8080/forge/", "upstream_allow_http": True},
            None,
        ),
        "plain_http": ({"upstream": "http://mirror.internal/forge"}, "must be an https:// URL"),
        # Basic auth is base64: over plain HTTP the upstream's credential is in clear text.
        "plain_http_with_credentials": (
            {
                "upstream": "http://mirror.internal:8080/forge/",
                "upstream_allow_http": True,
                "upstream_user": "mirror",
                "upstream_password": SECRET,
            },
            "would send them in clear text",
        ),
        "credentials_in_url": (
            {"upstream": f"https://mirror:{SECRET}@conda.example.org/forge"},
            "credentials never go in the URL",
        ),
        "query": ({"upstream": "https://conda.example.org/forge?token=x"}, "with no query"),
        "other_scheme": ({"upstream": "ftp://conda.example.org/forge"}, "must be an https:// URL"),
        "password_alone": (
            {"upstream": "https://conda.example.org/forge", "upstream_password": SECRET},
            "give both (the password from vault) or neither",
        ),
        "missing_ca": (
            {"upstream": "https://conda.example.org/forge", "upstream_ca": str(ca) + ".missing"},
            "is a PEM file on the controller",
        ),
        "uploaders": (
            {"upstream": "https://conda.example.org/forge", "uploaders": ["reader"]},
            "takes no uploads",
        ),
    }


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, tuple[dict, str | None]]]:
    scratch = tmp_path_factory.mktemp("preflight")
    ca = scratch / "ca.pem"
    ca.write_text(CA_PEM)
    cases = _cases(ca)
    hosts = {
        name: {
            "ansible_connection": "local",
            # The shared preflight reads /etc/os-release with a module: run it with the
            # Python running the tests, not whatever interpreter discovery finds first.
            "ansible_python_interpreter": "{{ ansible_playbook_python }}",
            "condaport_channels": [{"name": "main"}, {"name": f"proxy-{name}", **channel}],
            "condaport_nginx_users": [{"name": "reader", "password": "reader-password"}],
        }
        for name, (channel, _) in cases.items()
    }
    # An upload token may not name a proxy channel either.
    hosts["accepted_token"] = {
        **hosts["accepted"],
        "condaport_upload_tokens": [
            {"name": "ci", "token": "upload-token-0123456789abcdef", "channels": ["proxy-accepted"]}
        ],
    }
    cases["accepted_token"] = (cases["accepted"][0], "not proxy channels")
    inventory = scratch / "inventory.json"
    inventory.write_text(json.dumps({"all": {"hosts": hosts}}))
    playbook = scratch / "preflight.yml"
    playbook.write_text(PLAYBOOK)
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    env["ANSIBLE_ROLES_PATH"] = str(REPO / "roles")
    env.pop("ANSIBLE_FORCE_COLOR", None)
    result = subprocess.run(
        [
            ansible_playbook_path(),
            "-i",
            str(inventory),
            "--forks",
            "10",
            "--tags",
            "preflight",
            str(playbook),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        check=False,
        timeout=300,
    )
    return result.stdout + result.stderr, cases


def _failure(output: str, host: str) -> str | None:
    """The message of the host's failed task, or None if it passed."""
    recap = re.search(rf"^{host}\s*:.*failed=(\d+)", output, re.M)
    assert recap, f"no recap for {host}:\n{output}"
    if recap.group(1) == "0":
        return None
    # Ansible prints the task's message, then which host (and loop item) it failed on.
    message = None
    for line in output.splitlines():
        if line.startswith("[ERROR]: "):
            message = line
        elif re.match(rf"^(fatal|failed): \[{host}\]", line):
            return message
    raise AssertionError(f"no failure message for {host}:\n{output}")


def test_each_bad_upstream_is_refused_naming_its_channel(run: tuple) -> None:
    output, cases = run
    for host, (_, phrase) in cases.items():
        message = _failure(output, host)
        if phrase is None:
            assert message is None, f"{host} was refused: {message}"
        else:
            assert message is not None, f"{host} was accepted"
            assert phrase in message, f"{host}: {message}"
            if host != "accepted_token":
                assert f"proxy-{host}" in message, f"{host}: {message}"


def test_no_upstream_password_is_ever_shown(run: tuple) -> None:
    output, _ = run
    assert SECRET not in output
