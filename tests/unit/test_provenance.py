"""Retention never deletes through files an uploader without the delete right placed."""

from __future__ import annotations

from pathlib import Path

import pytest

from condaport import index, intake, provenance, publish
from condaport.config import ChannelConfig
from condaport.index_backends import RattlerBackend
from condaport.subdir_index import Indexes
from tests.support.channel_tree import ChannelTree
from tests.support.pkgbuild import build_conda


def _files(subdir: Path) -> list[str]:
    return sorted(p.name for p in subdir.iterdir() if p.name.endswith(".conda"))


@pytest.mark.channels(main=("noarch",))
def test_an_uploads_higher_version_does_not_make_retention_delete_releases(
    tree: ChannelTree, tmp_path: Path
) -> None:
    root, state, subdir, host = tree.root, tree.state, tree.subdir("noarch"), tree.host

    def maintainer_publishes(version: str) -> None:
        staging = tmp_path / f"staging-{version}"
        build_conda(staging, "tool", version)
        publish.place(root, state, "main", staging, ["noarch"])

    maintainer_publishes("1.0")
    maintainer_publishes("2.0")
    index.run(root, state, None)
    upload = build_conda(tmp_path / "upload", "tool", "99.0")
    intake.accept(
        host,
        ChannelConfig("main", ("noarch",)),
        upload,
        md5="0" * 32,
        url_subdir="noarch",
        overwrite=False,
        guard=intake.ChannelGuard(),
        lock_timeout=5.0,
        indexes=Indexes(state, RattlerBackend()),
        uploader_without_delete_right="user:alice",
    )
    assert provenance.placed_by_uploaders(state, "main") == {
        "noarch/tool-99.0-0.conda": "user:alice"
    }
    # Before: 99.0 counted as the newest, and keep 2 deleted the maintainers' 1.0.
    assert publish.prune(root, state, "main", [], 2)["removed"] == []
    assert _files(subdir) == ["tool-1.0-0.conda", "tool-2.0-0.conda", "tool-99.0-0.conda"]
    # The maintainers' own releases still age out among themselves; the upload stays.
    maintainer_publishes("3.0")
    assert publish.prune(root, state, "main", [], 2)["removed"] == ["noarch/tool-1.0-0.conda"]
    assert "tool-99.0-0.conda" in _files(subdir)
    # A maintainer removes it by name; the record goes with it.
    publish.prune(root, state, "main", ["tool-99.0-0.conda"], 0)
    assert provenance.placed_by_uploaders(state, "main") == {}


@pytest.mark.channels(main=("noarch",))
def test_a_maintainer_replacing_an_uploaders_file_makes_it_theirs(tree: ChannelTree) -> None:
    root, state, staging = tree.root, tree.state, tree.staging
    provenance.record_placement(state, "main", ["noarch/tool-1.0-0.conda"], "user:alice")
    build_conda(staging, "tool", "1.0")
    outcome = publish.place(root, state, "main", staging, ["noarch"], overwrite=True)
    assert outcome.added == ["noarch/tool-1.0-0.conda"]
    assert provenance.placed_by_uploaders(state, "main") == {}
