"""condaport.intake without HTTP: what an upload does to a channel when the index fails."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from condaport import index, intake, repodata
from condaport.config import ChannelConfig, HostConfig
from condaport.packages import Rejected
from tests.support.pkgbuild import build_conda


def test_a_package_the_index_cannot_read_is_quarantined_and_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An index failure after placing used to answer 500 and leave the file placed and
    unlisted, failing every later upload to that subdir. The file now leaves the served
    tree, the subdir is indexed without it, and the uploader gets the reason (422)."""
    root, state = tmp_path / "channels", tmp_path / "state"
    subdir = root / "main" / "noarch"
    subdir.mkdir(parents=True)
    real_index = index.index_subdir_apart

    def backend_that_cannot_read_poison(
        channel_dir: Path, name: str, backend: str, conda_python: str | None, **kwargs: bool
    ) -> None:
        if any(p.name.startswith("poison-") for p in (channel_dir / name).iterdir()):
            raise index.IndexFailed("the backend cannot read poison-1.0-0.conda")
        real_index(channel_dir, name, "rattler", None, **kwargs)

    monkeypatch.setattr(intake, "index_subdir_apart", backend_that_cannot_read_poison)
    # A backend other than rattler's always indexes fully after placing.
    host = HostConfig(root, state, index_backend="conda-index", conda_python="python3")
    channel = ChannelConfig("main", ("noarch",))
    arguments = {
        "md5": "0" * 32,
        "url_subdir": "noarch",
        "overwrite": False,
        "guard": intake.ChannelGuard(),
        "lock_timeout": 5.0,
        "editor": repodata.SubdirIndex(),
    }
    fine = build_conda(tmp_path / "staged1", "fine")
    assert intake.accept(host, channel, fine, **arguments).status == "added"
    poison = build_conda(tmp_path / "staged2", "poison")
    with pytest.raises(Rejected, match="cannot read poison"):
        intake.accept(host, channel, poison, **arguments)
    assert not (subdir / poison.name).exists()
    assert (root / "main" / index.QUARANTINE / "noarch" / poison.name).is_file()
    listed = json.loads((subdir / "repodata.json").read_text())["packages.conda"]
    assert sorted(listed) == ["fine-1.0-0.conda"]
    # The next upload to the subdir is not blocked by the one before.
    later = build_conda(tmp_path / "staged3", "later")
    assert intake.accept(host, channel, later, **arguments).status == "added"
    assert index.stale_subdirs(root, state, "main") == []
