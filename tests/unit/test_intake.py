"""condaport.intake without HTTP: what an upload does to a channel when the index fails."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from condaport import index, intake
from condaport.channel_files import QUARANTINE
from condaport.config import ChannelConfig, HostConfig
from condaport.index_backends import CondaIndexBackend, IndexFailed, RattlerBackend
from condaport.packages import Rejected
from condaport.subdir_index import Indexes, SubdirIndex, render_with_backend
from tests.support.channel_tree import ChannelTree
from tests.support.pkgbuild import build_conda


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
