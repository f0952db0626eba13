"""What a client of the publishing scenario's channel sees, for the publishing suites."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.support.client import run_install, write_auth_file
from tests.support.live import Channel, fetch
from tests.support.shards import mismatches

TREE = "/srv/condaport/channels/main"
# Package names unique to this run, so the suites can run again against the same host.
RUN = os.urandom(3).hex()


def listed(channel: Channel, subdir: str = "noarch") -> dict[str, dict]:
    """The subdir's repodata records by file name, as served."""
    answer = fetch(
        f"{channel.url}/{subdir}/repodata.json",
        ca_file=channel.ca_file,
        auth=(channel.user, channel.password),
    )
    assert answer.status == 200
    repodata = json.loads(answer.body)
    return {**repodata["packages"], **repodata["packages.conda"]}


def shard_mismatches(channel: Channel, subdir: str = "noarch") -> list[str]:
    """The subdir's shards against its repodata.json, fetched as a client would."""

    def get(path: str) -> bytes | None:
        status, body = download(channel, f"{subdir}/{path}")
        assert status in (200, 404), (path, status)
        return body if status == 200 else None

    return mismatches(get)


def download(channel: Channel, path: str) -> tuple[int, bytes]:
    answer = fetch(
        f"{channel.url}/{path}", ca_file=channel.ca_file, auth=(channel.user, channel.password)
    )
    return answer.status, answer.body


def installs(channel: Channel, tmp_path: Path, spec: str) -> None:
    """A real client (py-rattler) solves and installs `spec` from the channel."""
    auth = write_auth_file(tmp_path / "auth.json", channel.url, channel.user, channel.password)
    prefix = tmp_path / f"env-{len(list(tmp_path.iterdir()))}"
    result = run_install(
        channel.url,
        [spec],
        prefix,
        auth_file=auth,
        ca_file=channel.ca_file,
        cache_dir=tmp_path / "cache",
    )
    assert result.returncode == 0, result.stderr


def assert_every_listed_file_downloads(channel: Channel) -> None:
    for subdir in ("noarch", "linux-64"):
        for filename in listed(channel, subdir):
            status, _ = download(channel, f"{subdir}/{filename}")
            assert status == 200, f"{subdir}/{filename} is listed but answers {status}"
