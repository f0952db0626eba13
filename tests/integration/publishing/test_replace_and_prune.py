"""Replacing and pruning packages through playbooks/publish.yml, with the variables given
as `-e key=value` strings, as the README's commands give them."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from publishing.channel import RUN, download, installs, listed, shard_mismatches
from tests.support.live import Channel
from tests.support.pkgbuild import build_conda, build_same_size_twins, build_tar_bz2
from tests.support.playbook import playbook, said


def test_an_overwrite_keeping_size_and_mtime_is_served_and_indexed(
    channel: Channel, baseline: set[str], tmp_path: Path
) -> None:
    """Issue 11 item 13: the index fingerprint saw no change, so repodata kept the old
    sha256 and clients refused the new file."""
    first, second = build_same_size_twins(tmp_path / "twins", f"twin{RUN}")
    mtime = first.stat().st_mtime_ns
    os.utime(second, ns=(mtime, mtime))  # the upload keeps the source's mtime
    result = playbook("publish.yml", {"condaport_publish_source_dir": str(first.parent)})
    assert result.returncode == 0, result.stdout[-3000:]
    old = hashlib.sha256(first.read_bytes()).hexdigest()
    assert listed(channel)[first.name]["sha256"] == old

    result = playbook(
        "publish.yml",
        {"condaport_publish_source_dir": str(second.parent), "condaport_publish_overwrite": "true"},
        as_strings=True,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert f"noarch/{first.name}" in said(result)  # reported as replaced
    new = hashlib.sha256(second.read_bytes()).hexdigest()
    assert new != old
    status, body = download(channel, f"noarch/{first.name}")
    assert status == 200 and hashlib.sha256(body).hexdigest() == new
    assert listed(channel)[first.name]["sha256"] == new
    installs(channel, tmp_path, f"twin{RUN}")
    assert shard_mismatches(channel) == []


def test_retention_keeps_the_newest_versions_with_every_build_and_format(
    channel: Channel, baseline: set[str], tmp_path: Path
) -> None:
    """Issue 11 items 2 and 7: the README's `-e condaport_publish_keep_builds=3` failed
    ("'>' not supported between str and int"), and keep 1 deleted the py311 and py312
    builds of the kept version and the .conda twin of a kept .tar.bz2."""
    name = f"tool{RUN}"
    folder = tmp_path / "release"
    build_tar_bz2(folder, name, version="1.0")
    build_tar_bz2(folder, name, version="1.9", build="py310_0")
    newest = [
        build_tar_bz2(folder, name, version="1.10", build="py310_0").name,
        build_tar_bz2(folder, name, version="1.10", build="py311_0").name,
        build_conda(folder, name, version="1.10", build="py312_0").name,
        build_conda(folder, name, version="1.10", build="0").name,
        build_tar_bz2(folder, name, version="1.10", build="0").name,
    ]
    result = playbook("publish.yml", {"condaport_publish_source_dir": str(folder)})
    assert result.returncode == 0, result.stdout[-3000:]
    before = listed(channel)

    pruned = playbook("publish.yml", {"condaport_publish_keep_versions": "1"}, as_strings=True)
    assert pruned.returncode == 0, pruned.stdout[-3000:]
    gone = {f"{name}-1.0-0.tar.bz2", f"{name}-1.9-py310_0.tar.bz2"}
    assert set(listed(channel)) == set(before) - gone
    assert all(kept in listed(channel) for kept in newest)
    assert all(f"noarch/{g}" in said(pruned) for g in gone)  # reported as removed
    installs(channel, tmp_path, f"{name} ==1.10")
    installs(channel, tmp_path, "base-tool")
    assert shard_mismatches(channel) == []

    again = playbook("publish.yml", {"condaport_publish_keep_versions": "1"}, as_strings=True)
    assert again.returncode == 0 and "changed=0" in said(again)
