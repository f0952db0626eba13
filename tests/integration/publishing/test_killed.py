"""Writers killed with SIGKILL midway: the last good index stays served, nothing half
written is listed, and the next run of a playbook finishes the job."""

from __future__ import annotations

import subprocess
from pathlib import Path

from publishing.channel import (
    RUN,
    TREE,
    assert_every_listed_file_downloads,
    listed,
    shard_mismatches,
)
from tests.support.live import Channel
from tests.support.pkgbuild import build_tar_bz2
from tests.support.playbook import copy_to_host, kill_when_seen, on_host, playbook, start_playbook


def test_a_killed_index_run_keeps_the_last_index_and_the_playbook_heals(
    channel: Channel, baseline: set[str], tmp_path: Path
) -> None:
    for n in range(1500):
        build_tar_bz2(tmp_path / "bulk", f"synced{RUN}-{n:04d}")
    copy_to_host(channel.container, tmp_path / "bulk", f"{TREE}/noarch")
    before = listed(channel)
    watcher = kill_when_seen(channel.container, "condaport-index run", timeout=60)
    indexer = subprocess.Popen(["podman", "exec", channel.container, "condaport-index", "run"])
    indexer.wait(timeout=120)
    killed = int(watcher.communicate(timeout=120)[0].strip() or 0)
    assert killed, "the index run finished before it could be killed"
    now = listed(channel)
    assert set(now) in (set(before), set(before) | {p.name for p in (tmp_path / "bulk").iterdir()})
    assert_every_listed_file_downloads(channel)
    healed = playbook("index.yml")
    assert healed.returncode == 0, healed.stdout[-2000:]
    assert f"synced{RUN}-1499-1.0-0.tar.bz2" in listed(channel)
    assert shard_mismatches(channel) == []


def test_a_killed_publish_leaves_a_valid_channel_and_a_rerun_completes_it(
    channel: Channel, baseline: set[str], tmp_path: Path
) -> None:
    for n in range(300):
        build_tar_bz2(tmp_path, f"late{RUN}-{n:03d}")
    # Watched for up to 10 minutes: on a loaded machine the play takes minutes to get there.
    watcher = kill_when_seen(channel.container, "condaport-publish publish", timeout=600)
    job = start_playbook("publish.yml", {"condaport_publish_source_dir": str(tmp_path)})
    job.communicate(timeout=900)
    killed = int(watcher.communicate(timeout=900)[0].strip() or 0)
    assert killed, "the publish finished before it could be killed"
    assert job.returncode != 0
    assert_every_listed_file_downloads(channel)
    rerun = playbook("publish.yml", {"condaport_publish_source_dir": str(tmp_path)})
    assert rerun.returncode == 0, rerun.stdout[-2000:]
    names = listed(channel)
    assert all(f"late{RUN}-{n:03d}-1.0-0.tar.bz2" in names for n in range(300))
    leftovers = on_host(channel.container, "find", TREE, "-name", ".*.partial").stdout
    assert leftovers.strip() == ""
    assert shard_mismatches(channel) == []
