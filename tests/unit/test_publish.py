"""Placing staged packages: validation first, atomic placement, nothing in the channel lost."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from condaport import index, publish, publish_command
from condaport.packages import Rejected
from tests.support.channel_tree import ChannelTree
from tests.support.pkgbuild import build_conda, build_same_size_twins, build_tar_bz2

SUBDIRS = ["noarch", "linux-64"]


def place(tree: ChannelTree, **kwargs) -> publish.Outcome:
    return publish.place(tree.root, tree.state, "main", tree.staging, SUBDIRS, **kwargs)


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_packages_land_in_the_subdir_their_index_json_names_with_mode_0644(tree) -> None:
    # A linux-64 package staged with rattler-build's 0600 mode, from a "noarch" folder.
    package = build_conda(tree.staging, "native", subdir="linux-64")
    package.chmod(0o600)
    outcome = place(tree)
    assert outcome.added == [f"linux-64/{package.name}"]
    placed = tree.root / "main" / "linux-64" / package.name
    assert stat.S_IMODE(placed.stat().st_mode) == 0o644
    assert list(tree.staging.iterdir()) == []


def test_identical_content_is_a_no_op_and_different_content_is_refused(tree) -> None:
    first = build_tar_bz2(tree.staging, "pinned")
    kept = first.read_bytes()
    place(tree)
    again = build_tar_bz2(tree.staging, "pinned")
    shutil.copy(tree.root / "main" / "noarch" / again.name, again)
    assert place(tree).unchanged == [f"noarch/{again.name}"]
    build_tar_bz2(tree.staging, "pinned", index_overrides={"build_number": 7})
    outcome = place(tree)
    assert outcome.rejected and "different content" in outcome.rejected[0]["reason"]
    assert (tree.root / "main" / "noarch" / first.name).read_bytes() == kept


def test_overwrite_replaces_a_file_of_the_same_name(tree) -> None:
    build_tar_bz2(tree.staging, "mutable")
    place(tree)
    replacement = build_tar_bz2(tree.staging, "mutable", index_overrides={"build_number": 3})
    wanted = replacement.read_bytes()
    outcome = place(tree, overwrite=True)
    assert outcome.replaced == [f"noarch/{replacement.name}"]
    assert (tree.root / "main" / "noarch" / replacement.name).read_bytes() == wanted


def test_valid_files_land_and_refused_ones_touch_nothing(tree) -> None:
    build_tar_bz2(tree.staging, "existing")
    place(tree)
    before = snapshot(tree.root)
    good = build_tar_bz2(tree.staging, "good")
    (tree.staging / "bad-1.0-0.conda").write_bytes(b"garbage")
    outcome = place(tree)
    assert outcome.added == [f"noarch/{good.name}"]
    assert [r["file"] for r in outcome.rejected] == ["bad-1.0-0.conda"]
    after = snapshot(tree.root)
    assert {k: v for k, v in after.items() if k in before} == before
    assert list(tree.staging.iterdir()) == []


def test_all_or_nothing_places_nothing_when_one_file_is_refused(tree) -> None:
    build_tar_bz2(tree.staging, "good")
    (tree.staging / "bad-1.0-0.conda").write_bytes(b"")
    before = snapshot(tree.root)
    outcome = place(tree, all_or_nothing=True)
    assert outcome.added == []
    assert snapshot(tree.root) == before


def test_staging_on_another_filesystem_is_copied_then_renamed(tree, tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on a filesystem other than the test's tmp dir")
    staging = Path(tempfile.mkdtemp(dir=shm, prefix="condaport-test-"))
    try:
        package = build_tar_bz2(staging, "crossing")
        data = package.read_bytes()
        outcome = publish.place(tree.root, tree.state, "main", staging, SUBDIRS)
        assert outcome.added == [f"noarch/{package.name}"]
        assert (tree.root / "main" / "noarch" / package.name).read_bytes() == data
        assert not package.exists()
        assert not list((tree.root / "main" / "noarch").glob(".*"))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def test_inventory_reports_every_package_with_its_sha256(tree) -> None:
    build_tar_bz2(tree.staging, "listed")
    build_conda(tree.staging, "native", subdir="linux-64")
    place(tree)
    held = publish.inventory(tree.root, "main")
    assert sorted(held) == ["listed-1.0-0.tar.bz2", "native-1.0-0.conda"]
    assert held["native-1.0-0.conda"]["subdir"] == "linux-64"
    assert len(held["listed-1.0-0.tar.bz2"]["sha256"]) == 64


def _cli(tree: ChannelTree, staging: Path) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "condaport.publish_command", "place"]
    argv += ["--channels-root", str(tree.root), "--state-dir", str(tree.state)]
    argv += ["--channel", "main", "--staging", str(staging)]
    argv += [f"--subdir={s}" for s in SUBDIRS]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_concurrent_publishers_both_land_completely(tree, tmp_path: Path) -> None:
    batches = []
    for batch in range(2):
        staging = tmp_path / f"staging-{batch}"
        for n in range(10):
            build_tar_bz2(staging, f"batch{batch}-pkg{n}")
        batches.append(staging)
    processes = [_cli(tree, staging) for staging in batches]
    results = [p.communicate(timeout=120) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], results
    added = sorted(a for out, _ in results for a in json.loads(out)["added"])
    assert len(added) == 20
    assert len(list((tree.root / "main" / "noarch").glob("*.tar.bz2"))) == 20


def test_cli_exits_3_and_names_each_refused_file(tree) -> None:
    (tree.staging / "notes.txt").write_text("not a package")
    process = _cli(tree, tree.staging)
    out, err = process.communicate(timeout=60)
    assert process.returncode == publish_command.EXIT_REJECTED
    assert json.loads(out)["rejected"][0]["file"] == "notes.txt"
    assert "refused notes.txt: not a conda package" in err


def test_prune_removes_named_files_and_keeps_the_newest_versions(tree) -> None:
    for version in ("1.0", "1.10", "1.9"):
        build_tar_bz2(tree.staging, "lib", version=version)
    build_tar_bz2(tree.staging, "other", version="0.1")
    build_tar_bz2(tree.staging, "doomed", version="2.0")
    place(tree)
    result = publish.prune(
        tree.root, tree.state, "main", ["doomed-2.0-0.tar.bz2", "ghost-1-0.conda"], 2
    )
    assert result == {
        "removed": ["noarch/doomed-2.0-0.tar.bz2", "noarch/lib-1.0-0.tar.bz2"],
        "not_found": ["ghost-1-0.conda"],
    }
    left = sorted(p.name for p in (tree.root / "main" / "noarch").glob("*.tar.bz2"))
    assert left == ["lib-1.10-0.tar.bz2", "lib-1.9-0.tar.bz2", "other-0.1-0.tar.bz2"]


def _tool_release(tree: ChannelTree) -> None:
    """Several versions of one name; the newest built for three Pythons and in both formats."""
    staging = tree.staging
    build_tar_bz2(staging, "tool", version="1.0")
    build_tar_bz2(staging, "tool", version="1.9", build="py310_0")
    for python in ("py310_0", "py311_0"):
        build_tar_bz2(staging, "tool", version="1.10", build=python)
    build_conda(staging, "tool", version="1.10", build="py312_0")
    build_conda(staging, "tool", version="1.10", build="0")
    build_tar_bz2(staging, "tool", version="1.10", build="0")
    build_tar_bz2(staging, "tool", version="0.5", subdir="linux-64")
    assert len(place(tree).added) == 8


def _left(tree: ChannelTree) -> list[str]:
    channel = tree.root / "main"
    return sorted(
        f"{p.parent.name}/{p.name}" for p in channel.glob("*/tool-*") if p.suffix != ".json"
    )


NEWEST = [
    "noarch/tool-1.10-0.conda",
    "noarch/tool-1.10-0.tar.bz2",
    "noarch/tool-1.10-py310_0.tar.bz2",
    "noarch/tool-1.10-py311_0.tar.bz2",
    "noarch/tool-1.10-py312_0.conda",
]


def test_retention_keeps_every_build_and_format_of_the_newest_versions(tree) -> None:
    """Issue 11 item 2: with keep 1, the other builds of the kept version (and the .conda
    twin of a kept .tar.bz2) were deleted, because every file counted as a build."""
    _tool_release(tree)
    result = publish.prune(tree.root, tree.state, "main", [], 2)
    assert result["removed"] == ["noarch/tool-1.0-0.tar.bz2"]  # 1.10 > 1.9 > 1.0
    # Now from the repodata rather than the files, as on a live channel.
    index.run(tree.root, tree.state, None)
    result = publish.prune(tree.root, tree.state, "main", [], 1)
    assert result["removed"] == ["noarch/tool-1.9-py310_0.tar.bz2"]
    assert _left(tree) == ["linux-64/tool-0.5-0.tar.bz2", *NEWEST]  # per subdir


def test_cli_prune_takes_the_number_of_versions(tree) -> None:
    _tool_release(tree)
    argv = [sys.executable, "-m", "condaport.publish_command", "prune", "--channel", "main"]
    argv += ["--channels-root", str(tree.root), "--state-dir", str(tree.state)]
    result = subprocess.run(
        [*argv, "--keep-versions", "1"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["removed"] == [
        "noarch/tool-1.0-0.tar.bz2",
        "noarch/tool-1.9-py310_0.tar.bz2",
    ]
    assert _left(tree) == ["linux-64/tool-0.5-0.tar.bz2", *NEWEST]


def test_place_without_subdirs_never_writes_outside_the_channel(tree, tmp_path: Path) -> None:
    """Issue 11 item 14: run by hand without --subdir, place trusted the subdir field."""
    (tree.root / "other" / "noarch").mkdir(parents=True)
    build_tar_bz2(tree.staging, "escapee", index_overrides={"subdir": "../other/noarch"})
    before = snapshot(tree.root)
    argv = [sys.executable, "-m", "condaport.publish_command", "place", "--channel", "main"]
    argv += ["--channels-root", str(tree.root), "--state-dir", str(tree.state)]
    argv += ["--staging", str(tree.staging)]
    env = {**os.environ, "CONDAPORT_CONFIG": str(tmp_path / "no-config.json")}
    result = subprocess.run(argv, capture_output=True, text=True, check=False, env=env)
    assert result.returncode == publish_command.EXIT_REJECTED, result.stderr
    assert "is not a subdir name" in json.loads(result.stdout)["rejected"][0]["reason"]
    assert snapshot(tree.root) == before
    assert not list((tree.root / "other").rglob("*.tar.bz2"))


def test_an_overwrite_keeping_size_and_mtime_reaches_the_index(tree, tmp_path: Path) -> None:
    """Issue 11 item 13: same size and mtime kept the fingerprint, so repodata kept the old
    sha256 (and rattler's index kept the old record of a name it already listed)."""
    first, second = build_same_size_twins(tmp_path / "twins", "twin")
    mtime = first.stat().st_mtime_ns
    shutil.copy2(first, tree.staging)
    place(tree)
    index.run(tree.root, tree.state, None)
    os.utime(second, ns=(mtime, mtime))  # what the playbook's upload keeps: the source's mtime
    shutil.copy2(second, tree.staging)
    assert place(tree, overwrite=True).replaced == [f"noarch/{first.name}"]
    placed = tree.root / "main" / "noarch" / first.name
    assert placed.stat().st_size == first.stat().st_size and placed.stat().st_mtime_ns == mtime
    assert index.run(tree.root, tree.state, None) == {"main": ["noarch"]}
    repodata = json.loads((tree.root / "main" / "noarch" / "repodata.json").read_text())
    assert repodata["packages"][first.name]["sha256"] == publish.sha256_of(placed)
    assert publish.sha256_of(placed) == publish.sha256_of(second)


def test_prune_refuses_a_path_trick(tree) -> None:
    with pytest.raises(Rejected):
        publish.prune(tree.root, tree.state, "main", ["../../etc/passwd"], 0)


def test_partials_left_by_a_killed_writer_are_swept_under_the_lock(tree) -> None:
    leftover = tree.root / "main" / "noarch" / ".half-1.0-0.conda.partial"
    leftover.write_bytes(b"half")
    build_tar_bz2(tree.staging, "next")
    place(tree)
    assert not leftover.exists()
