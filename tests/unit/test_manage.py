"""Channel management without HTTP: patches and broken marks published by the subdir's
index owner in the monolithic and the sharded repodata, reversible and recorded, kept
through full index runs; the inventory's declared list converged; promotion."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

from condaport import adjustments, index, intake, manage, repodata, shards
from condaport.config import ChannelConfig, HostConfig
from condaport.index_backends import RattlerBackend
from condaport.locking import channel_lock
from condaport.subdir_index import Indexes
from tests.support.channel_tree import ChannelTree
from tests.support.pkgbuild import build_conda, build_tar_bz2
from tests.support.shards import mismatches

pytestmark = pytest.mark.channels(staging=("noarch",), stable=("noarch",))


@pytest.fixture
def site(tree: ChannelTree) -> HostConfig:
    build_tar_bz2(
        tree.subdir("noarch", "staging"), "tool", index_overrides={"depends": ["python >=3.8"]}
    )
    build_conda(tree.subdir("noarch", "staging"), "other")
    index.run(tree.root, tree.state, None)
    return tree.host


def _hold(host: HostConfig) -> manage.Hold:
    return functools.partial(channel_lock, host.state_dir)


def _indexes(host: HostConfig) -> Indexes:
    return Indexes(host.state_dir, RattlerBackend(), in_child=False)


def _listed(host: HostConfig, channel: str = "staging") -> dict[str, dict]:
    subdir = host.channels_root / channel / "noarch"
    data = json.loads((subdir / "repodata.json").read_bytes())
    compressed = repodata.decode_compressed((subdir / "repodata.json.zst").read_bytes())
    assert compressed == data
    assert mismatches(lambda name: _get(subdir / name)) == []
    return {**data["packages"], **data["packages.conda"]}


def _get(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None


def _shard_record(host: HostConfig, name: str, filename: str) -> dict:
    subdir = host.channels_root / "staging" / "noarch"
    digest = shards.read_index(subdir)[name]  # type: ignore[index]
    shard = shards.decode(shards.shard_path(subdir, digest).read_bytes())
    return shard["packages"][filename]


TOOL = "noarch/tool-1.0-0.tar.bz2"


def test_a_patch_is_published_in_both_forms_reversible_and_recorded(site: HostConfig) -> None:
    hold, indexes = _hold(site), _indexes(site)
    change = manage.set_patch(
        site, "staging", TOOL, {"depends": ["python >=3.10"]}, who="user:ann", hold=hold,
        indexes=indexes,
    )  # fmt: skip
    assert change.result == "patched"
    assert _listed(site)["tool-1.0-0.tar.bz2"]["depends"] == ["python >=3.10"]
    assert _shard_record(site, "tool", "tool-1.0-0.tar.bz2")["depends"] == ["python >=3.10"]
    # The package file itself is untouched, and the same patch again changes nothing.
    again = manage.set_patch(
        site, "staging", TOOL, {"depends": ["python >=3.10"]}, who="user:ann", hold=hold,
        indexes=indexes,
    )  # fmt: skip
    assert again.result == "unchanged"
    # A full index run keeps it.
    index.run(site.channels_root, site.state_dir, None, force=True)
    assert _listed(site)["tool-1.0-0.tar.bz2"]["depends"] == ["python >=3.10"]
    # Taken back: the package's own record again, in both forms.
    back = manage.set_patch(site, "staging", TOOL, None, who="user:bo", hold=hold, indexes=indexes)
    assert back.result == "unpatched"
    assert _listed(site)["tool-1.0-0.tar.bz2"]["depends"] == ["python >=3.8"]
    assert _shard_record(site, "tool", "tool-1.0-0.tar.bz2")["depends"] == ["python >=3.8"]
    logged = adjustments.history(site.state_dir, "staging")
    assert [(e["action"], e["by"], e["after"]) for e in logged] == [
        ("patched", "user:ann", {"depends": ["python >=3.10"]}),
        ("unpatched", "user:bo", None),
    ]


def test_a_broken_package_leaves_the_index_and_stays_downloadable(site: HostConfig) -> None:
    hold, indexes = _hold(site), _indexes(site)
    manage.set_broken(
        site, "staging", TOOL, True, reason="segfaults", who="user:ann", hold=hold,
        indexes=indexes,
    )  # fmt: skip
    assert "tool-1.0-0.tar.bz2" not in _listed(site)
    assert "tool" not in (shards.read_index(site.channels_root / "staging" / "noarch") or {})
    assert (site.channels_root / "staging" / TOOL).is_file()
    data = json.loads((site.channels_root / "staging/noarch/repodata.json").read_bytes())
    assert data["removed"] == ["tool-1.0-0.tar.bz2"]
    # An index run, forced or not, does not bring it back.
    index.run(site.channels_root, site.state_dir, None, force=True)
    assert "tool-1.0-0.tar.bz2" not in _listed(site)
    manage.set_broken(site, "staging", TOOL, False, who="user:ann", hold=hold, indexes=indexes)
    assert _listed(site)["tool-1.0-0.tar.bz2"]["depends"] == ["python >=3.8"]


@pytest.mark.parametrize(
    ("patch", "says"),
    [
        ({"version": "2.0"}, "cannot be patched"),
        ({"depends": "python"}, "list of match specs"),
        ({"depends": ["python >=>= 3"]}, "not a valid match spec"),
        ({}, "an object of fields"),
    ],
)
def test_a_bad_patch_is_refused_and_changes_nothing(
    site: HostConfig, patch: dict, says: str
) -> None:
    before = (site.channels_root / "staging/noarch/repodata.json").read_bytes()
    with pytest.raises(adjustments.BadAdjustment, match=says):
        manage.set_patch(
            site, "staging", TOOL, patch, who="user:ann", hold=_hold(site), indexes=_indexes(site)
        )
    assert (site.channels_root / "staging/noarch/repodata.json").read_bytes() == before


@pytest.mark.parametrize("where", ["noarch/../x-1.0-0.conda", "../noarch/tool-1.0-0.tar.bz2"])
def test_a_path_trick_is_refused(site: HostConfig, where: str) -> None:
    with pytest.raises(adjustments.BadAdjustment):
        manage.set_broken(
            site, "staging", where, True, who="user:a", hold=_hold(site), indexes=_indexes(site)
        )


def test_the_inventory_list_is_converged_and_api_marks_are_kept(site: HostConfig) -> None:
    hold, indexes = _hold(site), _indexes(site)
    other = "noarch/other-1.0-0.conda"
    manage.set_broken(site, "staging", other, True, who="user:ann", hold=hold, indexes=indexes)
    declared = {TOOL: {"license": "MIT"}}
    done = manage.converge(site, "staging", declared, {}, hold=hold, indexes=indexes)
    assert [c.result for c in done] == ["patched"]
    assert manage.converge(site, "staging", declared, {}, hold=hold, indexes=indexes) == []
    assert _listed(site)["tool-1.0-0.tar.bz2"]["license"] == "MIT"
    # Declared no more: the inventory's patch goes, the mark set over HTTPS stays.
    done = manage.converge(site, "staging", {}, {}, hold=hold, indexes=indexes)
    assert [c.result for c in done] == ["unpatched"]
    assert "license" not in _listed(site)["tool-1.0-0.tar.bz2"]
    assert "other-1.0-0.conda" not in _listed(site)


def test_promotion_copies_or_moves_without_an_upload(site: HostConfig) -> None:
    guard, indexes = intake.ChannelGuard(), _indexes(site)
    staging, stable = ChannelConfig("staging", ("noarch",)), ChannelConfig("stable", ("noarch",))
    arguments = {
        "staging": site.staging_root,
        "overwrite": False,
        "guard": guard,
        "lock_timeout": 5.0,
        "indexes": indexes,
    }
    copied = manage.promote(site, staging, stable, TOOL, move=False, **arguments)
    assert copied.status == "added"
    assert "tool-1.0-0.tar.bz2" in _listed(site, "stable")
    assert "tool-1.0-0.tar.bz2" in _listed(site, "staging")
    assert (site.channels_root / "stable" / TOOL).read_bytes() == (
        site.channels_root / "staging" / TOOL
    ).read_bytes()
    moved = manage.promote(
        site, staging, stable, "noarch/other-1.0-0.conda", move=True, **arguments
    )
    assert moved.status == "added"
    assert "other-1.0-0.conda" in _listed(site, "stable")
    assert "other-1.0-0.conda" not in _listed(site, "staging")
    assert not (site.channels_root / "staging/noarch/other-1.0-0.conda").exists()
    assert list(site.staging_root.iterdir()) == []  # nothing staged is left behind
    with pytest.raises(intake.Missing):
        manage.promote(site, staging, stable, "noarch/none-1.0-0.conda", move=False, **arguments)
