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
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.support.live import require

CLIENT_SCRIPT = Path(__file__).resolve().parents[1] / "support" / "client.py"
RATTLER_PYTHON = "/opt/rattler/bin/python"
SAMPLE = "hello-condaport"
TOKEN = "molecule-alice-token-0123456789"  # alice's, given to the account `tokenholder`
SYSTEM_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
PIXI_CONFIG = "/etc/pixi/config.toml"
UPSTREAM = "https://upstream.invalid/public"  # pixi mirrors it to the public channel


def _drop_in(user: str) -> str:
    home = "/root" if user == "root" else f"/home/{user}"
    return f"{home}/.config/conda/condarc.d/condaport.yml"


@pytest.fixture(scope="session")
def container() -> str:
    name = require("CONDAPORT_CLIENT_CONTAINER")
    subprocess.run(
        ["podman", "cp", str(CLIENT_SCRIPT), f"{name}:/usr/local/lib/condaport-client-test.py"],
        check=True,
    )
    return name


@pytest.fixture(scope="session")
def server() -> str:
    return require("CONDAPORT_SERVER_URL").rstrip("/")


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


def _install(container: str, user: str, channel: str, prefix: str, *options: str, **env: str):
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
        *options,
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


def test_token_channel_installs_with_the_roles_conda_token(container: str, server: str) -> None:
    # The account has no ~/.netrc and no URL holds the token: the auth file's CondaToken
    # entry is all py-rattler gets, and it opens the private channel and the public one.
    assert _exec(container, "tokenholder", "test", "-e", "/home/tokenholder/.netrc").returncode
    auth = _exec(container, "tokenholder", "cat", "/home/tokenholder/.rattler/credentials.json")
    assert json.loads(auth.stdout) == {"condaport-clients-server": {"CondaToken": TOKEN}}
    for channel in ("private", "public"):
        prefix = f"/tmp/tokenholder-{channel}-env"
        result = _install(container, "tokenholder", f"{server}/{channel}", prefix)
        assert result.returncode == 0, result.stderr
        meta = _exec(container, "tokenholder", "sh", "-c", f"cat {prefix}/conda-meta/*.json")
        assert meta.returncode == 0
        assert TOKEN not in meta.stdout  # the client inserts it per request, never records it


def test_role_files_have_safe_modes_and_no_url_credentials(container: str, server: str) -> None:
    files = [
        "/home/analyst/.netrc",
        "/home/analyst/.rattler",
        "/home/analyst/.rattler/credentials.json",
        _drop_in("analyst"),
        "/home/tokenholder/.rattler/credentials.json",
        _drop_in("tokenholder"),
        PIXI_CONFIG,
    ]
    stat = _exec(container, "root", "stat", "-c", "%n %a %U", *files)
    assert stat.returncode == 0, stat.stderr
    assert stat.stdout.split("\n")[: len(files)] == [
        "/home/analyst/.netrc 600 analyst",
        "/home/analyst/.rattler 700 analyst",
        "/home/analyst/.rattler/credentials.json 600 analyst",
        f"{_drop_in('analyst')} 600 analyst",
        "/home/tokenholder/.rattler/credentials.json 600 tokenholder",
        f"{_drop_in('tokenholder')} 600 tokenholder",
        f"{PIXI_CONFIG} 644 root",
    ]
    drop_in = _exec(container, "analyst", "cat", _drop_in("analyst")).stdout
    assert "password" not in drop_in and "@" not in drop_in


def test_conda_drop_in_holds_the_channels_in_condas_keys(container: str, server: str) -> None:
    for user, private in (
        ("analyst", f"{server}/private"),
        ("root", f"{server}/private"),
        ("tokenholder", f"{server}/t/{TOKEN}/private"),  # conda's own token form
    ):
        settings = yaml.safe_load(_exec(container, user, "cat", _drop_in(user)).stdout)
        assert settings == {"channels": [private, f"{server}/public"], "ssl_verify": SYSTEM_BUNDLE}


def test_the_roles_old_condarc_goes_and_the_accounts_own_stays(container: str) -> None:
    # prepare.yml gave analyst a ~/.condarc as earlier versions of the role wrote it, and
    # root one of its own.
    assert _exec(container, "root", "test", "-e", "/home/analyst/.condarc").returncode != 0
    own = _exec(container, "root", "stat", "-c", "%U %a", "/root/.condarc")
    assert own.stdout.strip() == "root 644"
    assert _exec(container, "root", "cat", "/root/.condarc").stdout == "always_yes: true\n"


def test_pixi_config_trusts_the_system_store_and_has_the_mirrors(
    container: str, server: str
) -> None:
    config = tomllib.loads(_exec(container, "root", "cat", PIXI_CONFIG).stdout)
    assert config == {
        "tls-root-certs": "native",
        "mirrors": {UPSTREAM: [f"{server}/public"]},
    }


def test_pixi_mirror_serves_the_upstream_channel(container: str) -> None:
    # The upstream host does not exist: the package can only come through the mirror the
    # role wrote, applied by rattler's mirror middleware from the file as pixi reads it.
    prefix = "/tmp/analyst-mirror-env"
    result = _install(container, "analyst", UPSTREAM, prefix, "--pixi-config", PIXI_CONFIG)
    assert result.returncode == 0, result.stderr
    assert SAMPLE in json.loads(result.stdout)["installed"][0]


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
    owners = _exec(container, "root", "stat", "-c", "%n %U", _drop_in("root"), "/root/.netrc")
    assert owners.stdout.split("\n")[:2] == [f"{_drop_in('root')} root", "/root/.netrc root"]


def test_refused_runs_print_no_password_or_secret(planted_runs: dict) -> None:
    for account, (_, output) in planted_runs["runs"].items():
        for secret in (PLANTED_PASSWORD, "molecule-alice-password", *ROOT_SECRETS):
            assert secret not in output, f"{secret!r} in the output of the run for {account}"
