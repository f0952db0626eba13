"""Host-side promises, checked inside the container with testinfra's podman backend."""

from __future__ import annotations

import pytest

HTPASSWD = "/etc/nginx/condaport/users.htpasswd"


def test_htpasswd_is_private_to_root_and_the_nginx_group(host) -> None:
    htpasswd = host.file(HTPASSWD)
    assert htpasswd.is_file
    assert htpasswd.user == "root"
    assert htpasswd.group == "www-data"
    assert htpasswd.mode == 0o640
    assert not htpasswd.path.startswith("/srv/")


def test_htpasswd_holds_exactly_the_inventory_users(host) -> None:
    lines = host.file(HTPASSWD).content_string.splitlines()
    users = [line.split(":", 1)[0] for line in lines if line.strip()]
    assert users == ["ci", "reader"]
    assert all(line.split(":", 1)[1].startswith("$6$") for line in lines if line.strip())
    assert "molecule-reader-password" not in host.file(HTPASSWD).content_string


def test_nginx_config_tests_clean_and_the_service_runs(host) -> None:
    assert host.run("nginx -t").rc == 0
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
