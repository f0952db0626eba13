"""A consumer machine set up only by the client role installs from the channels.

Runs from molecule's `clients` scenario: commands execute inside the client container
(podman exec) as the accounts the role configured, with nothing but the role's files:
no RATTLER_AUTH_FILE, no SSL_CERT_FILE, no credentials in any URL.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import _require as _env

CLIENT_SCRIPT = Path(__file__).resolve().parents[1] / "support" / "client.py"
RATTLER_PYTHON = "/opt/rattler/bin/python"
SAMPLE = "hello-condaport"


@pytest.fixture(scope="session")
def container() -> str:
    name = _env("CONDAPORT_CLIENT_CONTAINER")
    subprocess.run(
        ["podman", "cp", str(CLIENT_SCRIPT), f"{name}:/usr/local/lib/condaport-client-test.py"],
        check=True,
    )
    return name


@pytest.fixture(scope="session")
def server() -> str:
    return _env("CONDAPORT_SERVER_URL").rstrip("/")


def _exec(container: str, user: str, *argv: str, env: dict[str, str] | None = None):
    home = "/root" if user == "root" else f"/home/{user}"
    options = ["--user", user, "--env", f"HOME={home}", "--workdir", "/tmp"]
    for key, value in (env or {}).items():
        options += ["--env", f"{key}={value}"]
    return subprocess.run(
        ["podman", "exec", *options, container, *argv],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def _install(container: str, user: str, channel: str, prefix: str, **env: str):
    return _exec(
        container,
        user,
        RATTLER_PYTHON,
        "/usr/local/lib/condaport-client-test.py",
        "install",
        "--channel",
        channel,
        "--prefix",
        prefix,
        SAMPLE,
        env={"RATTLER_CACHE_DIR": f"{prefix}.cache", **env},
    )


@pytest.mark.parametrize("user", ["analyst", "root"])
def test_private_channel_installs_with_the_roles_credentials(
    container: str, server: str, user: str
) -> None:
    prefix = f"/tmp/{user}-private-env"
    result = _install(container, user, f"{server}/private", prefix)
    assert result.returncode == 0, result.stderr
    assert SAMPLE in json.loads(result.stdout)["installed"][0]
    meta = _exec(container, user, "sh", "-c", f"cat {prefix}/conda-meta/{SAMPLE}-*.json")
    assert meta.returncode == 0
    assert "molecule-alice-password" not in meta.stdout  # no credentials in the records


def test_public_channel_installs_without_credentials(container: str, server: str) -> None:
    # A HOME without the role's files: no netrc, no rattler auth file.
    _exec(container, "analyst", "mkdir", "-p", "/tmp/empty-home")
    result = _install(
        container, "analyst", f"{server}/public", "/tmp/public-env", HOME="/tmp/empty-home"
    )
    assert result.returncode == 0, result.stderr


def test_private_channel_refuses_a_client_without_the_roles_credentials(
    container: str, server: str
) -> None:
    _exec(container, "analyst", "mkdir", "-p", "/tmp/empty-home")
    result = _install(
        container, "analyst", f"{server}/private", "/tmp/refused-env", HOME="/tmp/empty-home"
    )
    assert result.returncode != 0
    assert "401" in result.stderr


def test_role_files_have_safe_modes_and_no_url_credentials(container: str, server: str) -> None:
    stat = _exec(
        container,
        "root",
        "stat",
        "-c",
        "%n %a %U",
        "/home/analyst/.netrc",
        "/home/analyst/.rattler",
        "/home/analyst/.rattler/credentials.json",
        "/home/analyst/.condarc",
    )
    assert stat.returncode == 0, stat.stderr
    assert stat.stdout.split("\n")[:4] == [
        "/home/analyst/.netrc 600 analyst",
        "/home/analyst/.rattler 700 analyst",
        "/home/analyst/.rattler/credentials.json 600 analyst",
        "/home/analyst/.condarc 644 analyst",
    ]
    condarc = _exec(container, "analyst", "cat", "/home/analyst/.condarc").stdout
    assert f"- {server}/private" in condarc
    assert f"- {server}/public" in condarc
    assert "ssl_verify: /etc/ssl/certs/ca-certificates.crt" in condarc
    assert "password" not in condarc and "@" not in condarc


def test_the_ca_is_in_the_system_store(container: str, server: str) -> None:
    # Python on the client, trusting only the system store, accepts the private CA.
    result = _exec(
        container,
        "root",
        "python3",
        "-c",
        "import ssl, urllib.request, sys; "
        f"urllib.request.urlopen('{server}/public/noarch/repodata.json', "
        "context=ssl.create_default_context()); print('ok')",
    )
    assert result.stdout.strip() == "ok", result.stderr


def test_logins_for_other_hosts_are_kept(container: str) -> None:
    netrc = _exec(container, "analyst", "cat", "/home/analyst/.netrc").stdout
    assert "machine git.example.org login analyst password other-secret" in netrc
    assert "machine condaport-clients-server login alice password" in netrc
    auth = json.loads(
        _exec(container, "analyst", "cat", "/home/analyst/.rattler/credentials.json").stdout
    )
    assert auth["prefix.dev"] == {"BearerToken": "other-token"}
    assert auth["condaport-clients-server"]["BasicHTTP"]["username"] == "alice"


def test_netrc_gives_conda_the_channel_login(container: str) -> None:
    # conda's HTTP stack (requests) looks logins up with Python's own netrc parser.
    lookup = _exec(
        container,
        "analyst",
        "python3",
        "-c",
        "import json, netrc; "
        "print(json.dumps(netrc.netrc().authenticators('condaport-clients-server')))",
    )
    assert lookup.returncode == 0, lookup.stderr
    assert json.loads(lookup.stdout) == ["alice", "", "molecule-alice-password"]


# Accounts that planted links in their homes (prepare.yml). The role runs against each in
# a run of its own and must refuse, naming the path and why, before writing or reading
# anything. These tests come last: against a role that follows the links, the run hands
# /etc to an account, and the tests above must not depend on that.
PROJECT = Path(__file__).resolve().parents[2]
PLANTED_PASSWORD = "planted-run-channel-password"
ROOT_SECRETS = ("planted-root-secret", "planted-root-netrc")
ROOT_NETRC = "machine root-only.example login root password planted-root-netrc\n"
PLANTED_REFUSALS = {
    "planted-etc": "/home/planted-etc/.rattler is a symbolic link (to /etc)",
    "planted-secret": (
        "/home/planted-secret/.rattler/credentials.json is a symbolic link (to /root/secret)"
    ),
    "planted-netrc": "/home/planted-netrc/.netrc is a symbolic link (to /root/netrc-target)",
    "planted-home": "/home/planted-home is a symbolic link to /root, which is owned by root",
}


def _etc_state(container: str) -> str:
    return _exec(container, "root", "stat", "-c", "%U %G %a", "/etc").stdout.strip()


@pytest.fixture(scope="session")
def planted_runs(container: str, server: str, tmp_path_factory) -> dict:
    """The client playbook run once per planted account, all at once; output by account."""
    before = {"etc": _etc_state(container)}
    workdir = tmp_path_factory.mktemp("planted")
    env = {key: value for key, value in os.environ.items() if not key.startswith("ANSIBLE_")}
    env |= {
        "ANSIBLE_CONFIG": str(PROJECT / "ansible.cfg"),
        "ANSIBLE_ROLES_PATH": str(PROJECT / "roles"),
    }
    runs = {}
    for account in PLANTED_REFUSALS:
        inventory = workdir / f"{account}.json"
        host = {
            "ansible_connection": "containers.podman.podman",
            "ansible_python_interpreter": "/usr/bin/python3",
            "condaport_client_users": [account],
            "condaport_client_channels": [
                {"url": f"{server}/private", "username": "alice", "password": PLANTED_PASSWORD},
                {"url": f"{server}/public"},
            ],
        }
        inventory.write_text(json.dumps({"channel_clients": {"hosts": {container: host}}}))
        runs[account] = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("ansible-playbook")),
                "-v",
                "-i",
                str(inventory),
                str(PROJECT / "playbooks" / "clients.yml"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
    results = {}
    for account, run in runs.items():
        output, _ = run.communicate(timeout=600)
        # The callback wraps long messages: compare with white space runs made single spaces.
        results[account] = (run.returncode, " ".join(output.split()))
    return {"before": before, "runs": results}


@pytest.mark.parametrize("account", sorted(PLANTED_REFUSALS))
def test_client_role_refuses_a_planted_link_and_names_it(planted_runs: dict, account: str) -> None:
    returncode, output = planted_runs["runs"][account]
    assert returncode != 0, output[-3000:]
    assert PLANTED_REFUSALS[account] in output, output[-3000:]
    assert f"account {account}" in output


def test_planted_rattler_link_leaves_etc_alone(container: str, planted_runs: dict) -> None:
    assert _etc_state(container) == planted_runs["before"]["etc"] == "root root 755"
    leftover = _exec(container, "root", "test", "-e", "/etc/credentials.json")
    assert leftover.returncode != 0, "the role wrote an auth file into /etc"


def test_planted_credentials_link_does_not_copy_roots_secret(
    container: str, planted_runs: dict
) -> None:
    assert planted_runs["runs"]["planted-secret"][0] != 0
    found = _exec(container, "root", "grep", "-rl", "planted-root-secret", "/home/planted-secret")
    assert found.stdout == "", f"root's secret was copied to {found.stdout}"
    link = _exec(container, "root", "readlink", "/home/planted-secret/.rattler/credentials.json")
    assert link.stdout.strip() == "/root/secret"


def test_planted_netrc_link_leaves_the_target_unchanged(container: str, planted_runs: dict) -> None:
    assert planted_runs["runs"]["planted-netrc"][0] != 0
    target = _exec(container, "root", "cat", "/root/netrc-target")
    assert target.stdout == ROOT_NETRC
    mode = _exec(container, "root", "stat", "-c", "%U %a", "/root/netrc-target")
    assert mode.stdout.strip() == "root 600"


def test_planted_home_link_leaves_roots_files_to_root(container: str, planted_runs: dict) -> None:
    assert planted_runs["runs"]["planted-home"][0] != 0
    owners = _exec(container, "root", "stat", "-c", "%n %U", "/root/.condarc", "/root/.netrc")
    assert owners.stdout.split("\n")[:2] == ["/root/.condarc root", "/root/.netrc root"]


def test_refused_runs_print_no_password_or_secret(planted_runs: dict) -> None:
    for account, (_, output) in planted_runs["runs"].items():
        for secret in (PLANTED_PASSWORD, "molecule-alice-password", *ROOT_SECRETS):
            assert secret not in output, f"{secret!r} in the output of the run for {account}"
