"""condaport.intake without HTTP: what an upload does to a channel when the index fails."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from condaport import index, intake, repodata, shards
from condaport.channel_files import QUARANTINE
from condaport.config import ChannelConfig, HostConfig
from condaport.index_backends import CondaIndexBackend, IndexFailed, RattlerBackend
from condaport.packages import Rejected
from condaport.subdir_index import Indexes, SubdirIndex, render_with_backend
from tests.support.channel_tree import ChannelTree
from tests.support.pkgbuild import build_conda, build_tar_bz2
from tests.support.shards import mismatches


@pytest.mark.channels(main=("noarch",))
def test_a_package_the_index_cannot_read_is_quarantined_and_refused(
    tree: ChannelTree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An index failure after placing used to answer 500 and leave the file placed and
    unlisted, failing every later upload to that subdir. The file now leaves the served
    tree, the subdir is indexed without it, and the uploader gets the reason (422)."""
    root, state, subdir = tree.root, tree.state, tree.subdir("noarch")

    def backend_that_cannot_read_poison(owner: SubdirIndex, force: bool) -> None:
        if any(p.name.startswith("poison-") for p in owner.folder.iterdir()):
            raise IndexFailed("the backend cannot read poison-1.0-0.conda")
        render_with_backend(owner.files.channel_dir, owner.subdir, RattlerBackend(), force)

    monkeypatch.setattr(SubdirIndex, "_rebuild_in_child", backend_that_cannot_read_poison)
    # A backend other than rattler's always indexes fully after placing.
    host = HostConfig(root, state, index_backend="conda-index", conda_python="python3")
    channel = ChannelConfig("main", ("noarch",))
    arguments = {
        "md5": "0" * 32,
        "url_subdir": "noarch",
        "overwrite": False,
        "guard": intake.ChannelGuard(),
        "lock_timeout": 5.0,
        "indexes": Indexes(state, CondaIndexBackend("python3")),
    }
    fine = build_conda(tmp_path / "staged1", "fine")
    assert intake.accept(host, channel, fine, **arguments).status == "added"
    poison = build_conda(tmp_path / "staged2", "poison")
    with pytest.raises(Rejected, match="cannot read poison"):
        intake.accept(host, channel, poison, **arguments)
    assert not (subdir / poison.name).exists()
    assert (root / "main" / QUARANTINE / "noarch" / poison.name).is_file()
    listed = json.loads((subdir / "repodata.json").read_text())["packages.conda"]
    assert sorted(listed) == ["fine-1.0-0.conda"]
    # The next upload to the subdir is not blocked by the one before.
    later = build_conda(tmp_path / "staged3", "later")
    assert intake.accept(host, channel, later, **arguments).status == "added"
    assert index.stale_subdirs(root, state, "main") == []


@pytest.mark.channels(main=("noarch",))
def test_after_every_upload_and_removal_every_index_file_equals_the_records(
    tree: ChannelTree, tmp_path: Path
) -> None:
    """Shards, shard index and repodata.json.zst are exact after each change, not only
    eventually: each upload edits them from the owner's records kept between requests."""
    root, state, subdir = tree.root, tree.state, tree.subdir("noarch")
    host, channel = tree.host, ChannelConfig("main", ("noarch",))
    guard, indexes = intake.ChannelGuard(), Indexes(state, RattlerBackend(), in_child=False)

    def served(path: str) -> bytes | None:
        target = subdir / path
        return target.read_bytes() if target.is_file() else None

    def upload(package: Path, overwrite: bool = False) -> str:
        result = intake.accept(
            host,
            channel,
            package,
            md5="0" * 32,
            url_subdir="noarch",
            overwrite=overwrite,
            guard=guard,
            lock_timeout=5.0,
            indexes=indexes,
        )
        return result.status

    def remove(filename: str) -> str:
        return intake.remove(
            host, channel, "noarch", filename, guard=guard, lock_timeout=5.0, indexes=indexes
        ).status

    steps = [
        lambda: upload(build_conda(tmp_path / "1", "alpha")),
        lambda: upload(build_tar_bz2(tmp_path / "2", "alpha", "2.0")),
        lambda: upload(build_tar_bz2(tmp_path / "3", "beta")),
        lambda: upload(build_tar_bz2(tmp_path / "4", "beta", salt="rebuilt"), overwrite=True),
        lambda: remove("alpha-1.0-0.conda"),
        lambda: remove("beta-1.0-0.tar.bz2"),  # the last file of its name
    ]
    outcomes = []
    for step in steps:
        outcomes.append(step())
        assert mismatches(served) == []
        listed = json.loads((subdir / "repodata.json").read_bytes())
        assert repodata.decode_compressed((subdir / "repodata.json.zst").read_bytes()) == listed
        assert index.stale_subdirs(root, state, "main") == []
    assert outcomes == ["added", "added", "added", "replaced", "deleted", "deleted"]
    assert sorted(shards.read_index(subdir) or {}) == ["alpha"]
