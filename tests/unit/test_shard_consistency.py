"""After every kind of change a subdir goes through, each shard holds exactly the records
repodata.json lists for its package name, the shard index names no missing shard, and
repodata.json.zst says what repodata.json says: uploads, overwrites, deletes, quarantine,
retention, patches, broken marks, files copied in by hand, and a writer killed between
the monolithic files and the shards."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import pytest

from condaport import index, intake, manage, publish, repodata, shards
from condaport.config import ChannelConfig
from condaport.index_backends import RattlerBackend
from condaport.locking import channel_lock
from condaport.subdir_index import Indexes
from tests.support.channel_tree import ChannelTree
from tests.support.pkgbuild import build_conda, build_tar_bz2
from tests.support.shards import mismatches

pytestmark = pytest.mark.channels(main=("noarch",))


class Subdir:
    def __init__(self, tree: ChannelTree, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.host = tree.host
        self.folder = tree.subdir("noarch")
        self.channel = ChannelConfig("main", ("noarch",))
        self.guard = intake.ChannelGuard()
        self.indexes = Indexes(self.host.state_dir, RattlerBackend(), in_child=False)
        self.uploads = 0

    def upload(
        self, name: str, version: str = "1.0", *, overwrite: bool = False, salt: str = ""
    ) -> None:
        self.uploads += 1
        staged = build_conda(self.tmp / f"staged{self.uploads}", name, version, salt=salt)
        intake.accept(
            self.host, self.channel, staged, md5="0" * 32, url_subdir="noarch",
            overwrite=overwrite, guard=self.guard, lock_timeout=5.0, indexes=self.indexes,
        )  # fmt: skip

    def hold(self, channel: str) -> contextlib.AbstractContextManager[None]:
        return channel_lock(self.host.state_dir, channel)

    def problems(self) -> list[str]:
        def get(name: str) -> bytes | None:
            path = self.folder / name
            return path.read_bytes() if path.is_file() else None

        found = mismatches(get)
        monolithic = json.loads((self.folder / repodata.REPODATA).read_bytes())
        compressed = repodata.decode_compressed((self.folder / repodata.COMPRESSED).read_bytes())
        if compressed != monolithic:
            found.append("repodata.json.zst differs from repodata.json")
        return found

    def listed(self) -> set[str]:
        data = json.loads((self.folder / repodata.REPODATA).read_bytes())
        return {*data["packages"], *data["packages.conda"]}


@pytest.fixture
def subdir(tree: ChannelTree, tmp_path: Path) -> Subdir:
    made = Subdir(tree, tmp_path)
    index.run(made.host.channels_root, made.host.state_dir, None)
    return made


def test_every_kind_of_change_keeps_the_shards_equal_to_the_records(subdir: Subdir) -> None:
    host = subdir.host
    steps = []

    def check(step: str) -> None:
        steps.append((step, subdir.problems()))

    subdir.upload("alpha")
    subdir.upload("alpha", "2.0")
    subdir.upload("beta")
    check("uploads")
    subdir.upload("alpha", "2.0", overwrite=True, salt="other bytes")
    check("overwrite")
    intake.remove(
        host, subdir.channel, "noarch", "beta-1.0-0.conda",
        guard=subdir.guard, lock_timeout=5.0, indexes=subdir.indexes,
    )  # fmt: skip
    check("delete")
    build_tar_bz2(subdir.folder, "by-hand")
    (subdir.folder / "garbage-1.0-0.conda").write_bytes(b"not a package")
    moved: list[dict[str, str]] = []
    index.run(host.channels_root, host.state_dir, None, quarantined=moved)
    assert [m["file"] for m in moved] == ["main/noarch/garbage-1.0-0.conda"]
    check("copied by hand, quarantine")
    publish.prune(host.channels_root, host.state_dir, "main", [], 1)
    index.run(host.channels_root, host.state_dir, None)
    assert "alpha-1.0-0.conda" not in subdir.listed()
    check("retention")
    manage.set_patch(
        host, "main", "noarch/alpha-2.0-0.conda", {"depends": ["python >=3.12"]},
        who="user:a", hold=subdir.hold, indexes=subdir.indexes,
    )  # fmt: skip
    check("patch")
    manage.set_broken(
        host, "main", "noarch/by-hand-1.0-0.tar.bz2", True,
        who="user:a", hold=subdir.hold, indexes=subdir.indexes,
    )  # fmt: skip
    check("broken")
    index.run(host.channels_root, host.state_dir, None, force=True)
    check("forced full index")
    assert steps == [(step, []) for step, _ in steps]


def test_a_writer_killed_between_the_monolithic_files_and_the_shards_is_healed(
    subdir: Subdir, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shards are written after repodata.json: a writer that dies in between leaves
    them behind the monolithic files, and the subdir stale; the next run repairs both."""
    subdir.upload("alpha")

    def killed(*_: object, **__: object) -> None:
        raise KeyboardInterrupt  # as abrupt as it gets inside the process

    monkeypatch.setattr(shards, "sync", killed)
    with pytest.raises(KeyboardInterrupt):
        subdir.upload("gamma")
    monkeypatch.undo()
    assert index.stale_subdirs(subdir.host.channels_root, subdir.host.state_dir, "main") == [
        "noarch"
    ]
    index.run(subdir.host.channels_root, subdir.host.state_dir, None)
    assert subdir.problems() == []
    assert "gamma-1.0-0.conda" in subdir.listed()


def test_a_lost_shard_is_written_again_by_the_next_full_index(subdir: Subdir) -> None:
    subdir.upload("alpha")
    shutil.rmtree(subdir.folder / shards.SHARDS_FOLDER)
    index.run(subdir.host.channels_root, subdir.host.state_dir, None, force=True)
    assert subdir.problems() == []


@pytest.mark.parametrize("dies_in", ["repodata", "shards"])
def test_a_patch_killed_midway_is_published_whole_by_the_next_run(
    subdir: Subdir, monkeypatch: pytest.MonkeyPatch, dies_in: str
) -> None:
    """A patch changes no package file, so the files alone cannot tell that its write
    never finished: the open write itself must (the fingerprint is taken away first)."""
    subdir.upload("alpha")
    subdir.upload("beta")

    def killed(*_: object, **__: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(
        repodata if dies_in == "repodata" else shards,
        "write_bytes" if dies_in == "repodata" else "sync",
        killed,
    )
    with pytest.raises(KeyboardInterrupt):
        manage.set_patch(
            subdir.host, "main", "noarch/alpha-1.0-0.conda", {"license": "MIT"},
            who="user:a", hold=subdir.hold, indexes=subdir.indexes,
        )  # fmt: skip
    monkeypatch.undo()
    assert index.stale_subdirs(subdir.host.channels_root, subdir.host.state_dir, "main") == [
        "noarch"
    ]
    index.run(subdir.host.channels_root, subdir.host.state_dir, None)
    assert subdir.problems() == []
    data = json.loads((subdir.folder / repodata.REPODATA).read_bytes())
    assert data["packages.conda"]["alpha-1.0-0.conda"]["license"] == "MIT"
