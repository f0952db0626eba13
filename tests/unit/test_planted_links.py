"""The writer account's own code never follows what sits at a name it writes: locks,
fingerprints, quarantine, placing, the publish inbox (issue 17). Each test plants a link
(or a folder) where the code writes and checks that the place it points to is untouched."""

from __future__ import annotations

import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from condaport import batch, index, locking, publish
from condaport.channel_files import QUARANTINE, ChannelFiles, NotAFolder, move_into_place
from condaport.subdir_index import SubdirIndex, rows_digest
from tests.support.channel_tree import ChannelTree
from tests.support.pkgbuild import build_conda


@pytest.fixture
def canary(tmp_path: Path) -> Path:
    """A file outside every tree: content and mode must survive."""
    path = tmp_path / "outside" / "canary"
    path.parent.mkdir()
    path.write_text("untouched\n")
    path.chmod(0o600)
    return path


def _intact(canary: Path) -> bool:
    folder = canary.parent
    return (
        canary.read_text() == "untouched\n"
        and canary.stat().st_mode & 0o777 == 0o600
        and sorted(p.name for p in folder.iterdir()) == ["canary"]
    )


def test_a_link_at_the_lock_file_is_refused_not_followed(tmp_path: Path, canary: Path) -> None:
    state = tmp_path / "state"
    (state / "locks").mkdir(parents=True)
    (state / "locks" / "main.lock").symlink_to(canary.parent / "created-by-lock")
    with pytest.raises(OSError), locking.channel_lock(state, "main", timeout=1):
        pass
    assert _intact(canary)


def test_fingerprints_are_written_by_fresh_temp_names(tmp_path: Path, canary: Path) -> None:
    state = tmp_path / "state"
    folder = state / "fingerprints" / "main"
    folder.mkdir(parents=True)
    # The fixed temp names earlier versions wrote through.
    for name in ("noarch.sha256", "noarch.files.json"):
        (folder / f".{name}.partial").symlink_to(canary)
    channel = tmp_path / "channels" / "main"
    (channel / "noarch").mkdir(parents=True)
    (channel / "noarch" / "repodata.json").write_text('{"packages": {}, "packages.conda": {}}')
    owner = SubdirIndex.at(channel, "noarch", state)
    owner.apply({}, {"x.conda": (1, 2, 3, 4)})
    assert _intact(canary)
    assert (folder / "noarch.sha256").read_text().strip() == rows_digest({"x.conda": (1, 2, 3, 4)})


def test_a_planted_quarantine_link_is_refused(tmp_path: Path, canary: Path) -> None:
    channel = tmp_path / "channels" / "main"
    (channel / "noarch").mkdir(parents=True)
    broken = channel / "noarch" / "broken-1.0-0.conda"
    broken.write_bytes(b"not a package")
    (channel / QUARANTINE).symlink_to(canary.parent, target_is_directory=True)
    with pytest.raises(NotAFolder, match="not a folder"):
        ChannelFiles(channel).screen("noarch", [broken.name])
    assert _intact(canary)
    assert broken.exists()  # nothing lost: it stays where it was


def test_placing_sets_the_mode_on_the_file_and_leaves_links_alone(
    tmp_path: Path, canary: Path
) -> None:
    subdir = tmp_path / "channels" / "main" / "noarch"
    subdir.mkdir(parents=True)
    staged = build_conda(tmp_path / "staging", "placed")
    staged.chmod(0o600)
    (subdir / f".{staged.name}.partial").symlink_to(canary)
    move_into_place(staged, subdir / staged.name)
    assert (subdir / staged.name).stat().st_mode & 0o777 == 0o644
    assert _intact(canary)


def _bundle(inbox: Path, package: Path) -> Path:
    bundle = inbox / f"{batch.BUNDLE_PREFIX}main-run.tar"
    with tarfile.open(bundle, "w") as archive:
        archive.add(package, arcname=package.name)
    return bundle


def test_the_bundle_is_taken_only_from_a_private_inbox(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir(mode=0o700)
    bundle = _bundle(inbox, build_conda(tmp_path / "dist", "bundled"))
    opened, _ = batch.take_bundle(bundle, "main", 3600)
    with opened:
        assert not bundle.exists()  # the name goes as soon as it is open
        with tarfile.open(fileobj=opened, mode="r:") as archive:
            assert archive.getnames() == ["bundled-1.0-0.conda"]
    bundle = _bundle(inbox, build_conda(tmp_path / "dist", "bundled"))
    inbox.chmod(0o770)  # another account could have put it there
    with pytest.raises(PermissionError, match="not a private folder"):
        batch.take_bundle(bundle, "main", 3600)
    assert bundle.exists()


def test_a_bundle_link_is_refused_and_its_target_kept(tmp_path: Path, canary: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir(mode=0o700)
    link = inbox / f"{batch.BUNDLE_PREFIX}main-run.tar"
    link.symlink_to(canary)
    with pytest.raises(OSError, match="cannot open the bundle"):
        batch.take_bundle(link, "main", 3600)
    assert _intact(canary)


def test_partials_are_swept_only_in_real_subdirs(tmp_path: Path, canary: Path) -> None:
    channel = tmp_path / "channels" / "main"
    channel.mkdir(parents=True)
    (canary.parent / ".kept.partial").write_text("outside\n")
    (channel / "noarch").symlink_to(canary.parent, target_is_directory=True)
    ChannelFiles(channel).sweep_partials()
    assert (canary.parent / ".kept.partial").exists()


@pytest.mark.channels(main=("noarch",))
def test_a_publish_holds_the_channel_lock_from_placing_to_indexing(
    tree: ChannelTree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No other writer (an upload's catch-up index) gets in between placing a replaced
    file and indexing it: while the publish indexes, the lock is still its own."""
    state, host = tree.state, tree.host
    seen: list[int] = []
    real_run = index.run

    def run_and_probe(*args: object, **kwargs: object) -> dict[str, list[str]]:
        lock = locking.lock_path(state, "main")
        probe = subprocess.run(["flock", "--nonblock", str(lock), "true"], check=False)
        seen.append(probe.returncode)
        return real_run(*args, **kwargs)

    monkeypatch.setattr(index, "run", run_and_probe)
    inbox = tmp_path / "inbox"
    inbox.mkdir(mode=0o700)
    bundle, _ = batch.take_bundle(_bundle(inbox, build_conda(tmp_path / "d", "held")), "main", 60)
    report = batch.publish(host, "main", bundle=bundle)
    assert report.errors == []
    assert report.outcome.added == ["noarch/held-1.0-0.conda"]
    assert seen == [1], "another process could take the lock between placing and indexing"


@pytest.mark.channels(main=("noarch",))
def test_a_catch_up_index_reads_a_replaced_file_again(tree: ChannelTree, tmp_path: Path) -> None:
    """A file replaced under its name (a publish with overwrite) while the subdir's index
    still lists the old record: the upload's catch-up must not keep the old sha256."""
    root, state, subdir = tree.root, tree.state, tree.subdir("noarch")
    first = build_conda(tmp_path / "v1", "swapped")
    second = build_conda(tmp_path / "v2", "swapped", salt="other bytes")
    move_into_place(first, subdir / first.name)
    index.run(root, state, None)
    move_into_place(second, subdir / second.name)
    expected = publish.sha256_of(subdir / second.name)
    SubdirIndex.at(root / "main", "noarch", state).rebuild()  # an upload's catch-up
    import json

    record = json.loads((subdir / "repodata.json").read_text())["packages.conda"][second.name]
    assert record["sha256"] == expected
    assert os.path.exists(subdir / second.name)
