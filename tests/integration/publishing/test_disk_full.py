"""A full disk (the channel tree is a 64 MB tmpfs) while placing and while indexing: nothing
in the channel is lost, the last good index stays served, and a rerun heals."""

from __future__ import annotations

from pathlib import Path

from publishing.channel import RUN, TREE, assert_every_listed_file_downloads, installs, listed
from tests.support.live import Channel
from tests.support.pkgbuild import build_large_tar_bz2, build_tar_bz2
from tests.support.playbook import on_host, playbook, said


def _fill_disk(channel: Channel, leave_bytes: int) -> None:
    free = int(on_host(channel.container, "df", "--output=avail", "-B1", TREE).stdout.split()[-1])
    on_host(
        channel.container, "fallocate", "-l", str(max(free - leave_bytes, 0)), f"{TREE}/.filler"
    )


def test_disk_full_while_placing_loses_nothing_and_a_rerun_heals(
    channel: Channel, baseline: set[str], tmp_path: Path
) -> None:
    before = listed(channel)
    payload = tmp_path / "dist"
    build_large_tar_bz2(payload, size=3 * 1024 * 1024, name=f"blob{RUN}")
    _fill_disk(channel, leave_bytes=1024 * 1024)
    try:
        result = playbook("publish.yml", {"condaport_publish_source_dir": str(payload)})
        assert result.returncode != 0
        assert "No space left on device" in said(result), result.stdout[-3000:]
        assert set(before) <= set(listed(channel))
        assert_every_listed_file_downloads(channel)
        leftovers = on_host(channel.container, "find", TREE, "-name", ".*.partial").stdout
        assert leftovers.strip() == ""
    finally:
        on_host(channel.container, "rm", "-f", f"{TREE}/.filler")
    rerun = playbook("publish.yml", {"condaport_publish_source_dir": str(payload)})
    assert rerun.returncode == 0, rerun.stdout[-3000:]
    assert f"blob{RUN}-1.0-0.tar.bz2" in listed(channel)


def test_disk_full_while_indexing_keeps_the_last_index_and_index_yml_heals(
    channel: Channel, baseline: set[str], tmp_path: Path
) -> None:
    before = listed(channel)
    build_tar_bz2(tmp_path, f"squeezed{RUN}")
    _fill_disk(channel, leave_bytes=16 * 1024)
    try:
        result = playbook("publish.yml", {"condaport_publish_source_dir": str(tmp_path)})
        assert result.returncode != 0
        assert "index of main/noarch failed" in said(result), result.stdout[-3000:]
        assert listed(channel) == before
        assert_every_listed_file_downloads(channel)
        # A full disk is no bad package: the file stays where it was placed.
        on_host(channel.container, "test", "-f", f"{TREE}/noarch/squeezed{RUN}-1.0-0.tar.bz2")
    finally:
        on_host(channel.container, "rm", "-f", f"{TREE}/.filler")
    healed = playbook("index.yml")
    assert healed.returncode == 0, healed.stdout[-2000:]
    assert f"squeezed{RUN}-1.0-0.tar.bz2" in listed(channel)
    installs(channel, tmp_path, "base-tool")
