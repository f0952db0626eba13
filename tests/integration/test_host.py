"""Host-side promises, checked inside the container with testinfra's podman backend."""

from __future__ import annotations

import json

import pytest

AUTH_DIR = "/etc/nginx/condaport"


def _verifier_mode(host) -> bool:
    return host.file("/etc/nginx/conf.d/condaport.conf").contains("access_by_lua")


def _reader_group(host) -> str:
    """Who reads the htpasswd files: the verifier service, or NGINX's auth_basic."""
    return "condaport-verifier" if _verifier_mode(host) else "www-data"


def test_htpasswd_files_are_private_to_root_and_their_reader(host) -> None:
    for channel in ("main", "partner"):
        htpasswd = host.file(f"{AUTH_DIR}/{channel}.htpasswd")
        assert htpasswd.is_file
        assert htpasswd.user == "root"
        assert htpasswd.group == _reader_group(host)
        assert htpasswd.mode == 0o640
    # Anonymous channels need none; the old single-file layout is gone.
    assert not host.file(f"{AUTH_DIR}/public.htpasswd").exists
    assert not host.file(f"{AUTH_DIR}/users.htpasswd").exists


def test_each_htpasswd_holds_exactly_the_channels_password_users(host) -> None:
    expected = {"main": ["ci", "reader"], "partner": ["partner"]}  # robot has a token only
    for channel, names in expected.items():
        content = host.file(f"{AUTH_DIR}/{channel}.htpasswd").content_string
        lines = [line for line in content.splitlines() if line.strip()]
        assert [line.split(":", 1)[0] for line in lines] == names
        # bcrypt cost 12 with the verifier, sha512_crypt with auth_basic (the defaults).
        prefix = "$2b$12$" if _verifier_mode(host) else "$6$"
        assert all(line.split(":", 1)[1].startswith(prefix) for line in lines)
        assert "molecule-" not in content  # hashes only


def test_token_map_is_readable_by_root_only(host) -> None:
    tokens = host.file(f"{AUTH_DIR}/tokens.map")
    assert (tokens.user, tokens.group, tokens.mode) == ("root", "root", 0o600)
    # An anchored regular expression: NGINX compares plain map strings ignoring case.
    assert r'"~^robot\-token\-only\-0123456789$" "robot";' in tokens.content_string


def test_nginx_config_tests_clean_and_the_service_runs(host) -> None:
    tested = host.run("nginx -t")
    assert tested.rc == 0
    # Clean also means no warning: syntax one NGINX release deprecates (Debian 13's 1.26
    # warns about `listen ... http2`) must follow the release the host runs.
    assert "[warn]" not in tested.stderr, tested.stderr
    nginx = host.service("nginx")
    assert nginx.is_running
    assert nginx.is_enabled
    assert host.socket("tcp://0.0.0.0:18443").is_listening


@pytest.mark.parametrize("path", ["/srv/condaport/channels/main/noarch"])
def test_published_packages_are_world_readable(host, path: str) -> None:
    packages = host.run(f"find {path} -maxdepth 1 -name '*.conda' -printf '%m %f\\n'").stdout
    assert packages.strip(), f"no package in {path}"
    assert all(line.startswith("644 ") for line in packages.strip().splitlines())


def test_staging_is_left_empty(host) -> None:
    leftovers = host.run("find /srv/condaport/staging -type f").stdout.strip()
    assert leftovers == ""


def test_the_host_configuration_describes_the_channels(host) -> None:
    config = host.file("/etc/condaport/condaport.json")
    assert (config.user, config.group, config.mode) == ("root", "root", 0o644)
    data = json.loads(config.content_string)
    assert [c["name"] for c in data["channels"]] == ["main", "partner", "public"]
    assert data["channels"][1]["subdirs"] == ["noarch", "linux-64"]
    assert data["channels_root"] == "/srv/condaport/channels"
    assert "molecule-" not in config.content_string  # no password in it


@pytest.mark.parametrize(
    "command",
    ["condaport-index status", "condaport-publish inventory --channel main"],
)
def test_operator_commands_work_without_path_arguments(host, command: str) -> None:
    result = host.run(command)
    assert result.rc == 0, result.stderr
    assert isinstance(json.loads(result.stdout), dict)


def test_the_host_tools_are_one_installed_package(host) -> None:
    show = host.run("/opt/condaport/venv/bin/pip show condaport")
    assert show.rc == 0 and "Name: condaport" in show.stdout
    # The loose files of earlier versions are gone.
    assert not host.file("/opt/condaport/lib").exists
    assert not host.file("/opt/condaport/verifier").exists
