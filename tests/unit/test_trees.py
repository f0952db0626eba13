"""condaport-channels sync: the writer account makes each channel's folders, refuses links
and foreign folders instead of following them, and purges removed channels on request."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from condaport import trees
from condaport.config import ChannelConfig, HostConfig


@pytest.fixture
def host(tmp_path: Path) -> HostConfig:
    (tmp_path / "channels").mkdir()
    (tmp_path / "state").mkdir()
    return HostConfig(
        channels_root=tmp_path / "channels",
        state_dir=tmp_path / "state",
        channels=(ChannelConfig("main", ("linux-64",)), ChannelConfig("public", ())),
    )


def test_sync_makes_every_folder_once_and_reports_no_change_after(host: HostConfig) -> None:
    first = trees.sync(host)
    made = {Path(p).relative_to(host.channels_root.parent).as_posix() for p in first.created}
    assert {
        "channels/main",
        "channels/main/linux-64",
        "channels/main/noarch",
        "channels/public/noarch",
        "state/locks/main.lock",
        "state/fingerprints/main",
    } <= made
    assert oct((host.channels_root / "main" / "noarch").stat().st_mode & 0o7777) == "0o755"
    assert oct((host.state_dir / "locks").stat().st_mode & 0o7777) == "0o700"
    assert not trees.sync(host).changed


def test_dry_run_changes_nothing(host: HostConfig) -> None:
    report = trees.sync(host, dry_run=True)
    assert report.changed
    assert list(host.channels_root.iterdir()) == []
    assert list(host.state_dir.iterdir()) == []


def test_modes_of_earlier_versions_are_set_right(host: HostConfig) -> None:
    trees.sync(host)
    shared = host.channels_root / "main" / "noarch"
    shared.chmod(0o2775)  # group-writable and setgid, as earlier versions made them
    report = trees.sync(host)
    assert report.fixed == [str(shared)]
    assert shared.stat().st_mode & 0o7777 == 0o755


@pytest.mark.parametrize(
    "planted",
    ["channels/main/noarch", "state/locks/main.lock", "state/fingerprints/main", "state/locks"],
)
def test_a_planted_link_is_refused_and_never_followed(
    host: HostConfig, tmp_path: Path, planted: str
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o750)
    trees.sync(host)
    target = tmp_path / planted
    if target.is_dir():
        shutil.rmtree(target)
    else:
        target.unlink()
    target.symlink_to(elsewhere)
    with pytest.raises(trees.TreeError, match="not a"):
        trees.sync(host)
    assert list(elsewhere.iterdir()) == []
    assert elsewhere.stat().st_mode & 0o7777 == 0o750


def test_removed_channels_are_listed_and_purged_only_on_request(host: HostConfig) -> None:
    trees.sync(host)
    gone = host.channels_root / "retired"
    (gone / "noarch").mkdir(parents=True)
    (host.state_dir / "fingerprints" / "retired").mkdir()
    assert trees.sync(host).removed == ["retired"]
    assert gone.is_dir()
    report = trees.sync(host, purge_removed=True)
    assert report.purged == ["retired"]
    assert not gone.exists()
    assert not (host.state_dir / "fingerprints" / "retired").exists()


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A temp folder other accounts can traverse (pytest's own is root's, 0700)."""
    folder = Path(tempfile.mkdtemp(prefix="condaport-trees-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


@pytest.mark.skipif(os.geteuid() != 0, reason="switching accounts needs root")
def test_started_as_root_it_works_as_the_writer_account(open_tmp: Path) -> None:
    """The command switches to the configured writer before touching anything: what it
    makes belongs to that account, and where only root may write it fails."""
    tmp_path = open_tmp
    nobody = pwd.getpwnam("nobody")
    for folder in ("channels", "state"):
        (tmp_path / folder).mkdir()
        os.chown(tmp_path / folder, nobody.pw_uid, nobody.pw_gid)
    config = tmp_path / "condaport.json"
    config.write_text(
        json.dumps(
            {
                "channels_root": str(tmp_path / "channels"),
                "state_dir": str(tmp_path / "state"),
                "writer": "nobody",
                "channels": [{"name": "main", "subdirs": ["noarch"]}],
            }
        )
    )
    config.chmod(0o644)
    run = [sys.executable, "-m", "condaport.channels_command", "sync", "--config", str(config)]
    result = subprocess.run(run, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    made = tmp_path / "channels" / "main" / "noarch"
    assert made.stat().st_uid == nobody.pw_uid
    # A root-owned state folder: the writer may not write there, so the run fails.
    shutil.rmtree(tmp_path / "state" / "locks")
    os.chown(tmp_path / "state", 0, 0)
    result = subprocess.run(run, capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert "Permission denied" in result.stderr
    assert not (tmp_path / "state" / "locks").exists()
