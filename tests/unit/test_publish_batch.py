"""`condaport-publish publish`: the one host command of playbooks/publish.yml (issue 12
item 6). One invocation unpacks the uploaded bundle, validates, places, removes, prunes,
indexes and prints a JSON report; the playbook relies on each of those here."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from condaport import batch, release
from tests.support.channel_tree import ChannelTree
from tests.support.pkgbuild import build_conda, build_tar_bz2


def bundle_of(tree: ChannelTree, *files: Path, name: str = "run1") -> Path:
    """The tar the playbook uploads: the folder's files under their bare names."""
    bundle = tree.staging / f"{batch.BUNDLE_PREFIX}main-{name}.tar"
    with tarfile.open(bundle, "w") as archive:
        for path in files:
            archive.add(path, arcname=path.name)
    return bundle


def run(tree: ChannelTree, *extra: str) -> tuple[int, dict, str]:
    argv = [sys.executable, "-m", "condaport.publish_command", "publish", "--channel", "main"]
    result = subprocess.run(
        [*argv, "--config", str(tree.config), *extra],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    report = json.loads(result.stdout) if result.stdout.startswith("{") else {}
    return result.returncode, report, result.stderr


def served(tree: ChannelTree, subdir: str = "noarch") -> set[str]:
    repodata = json.loads((tree.root / "main" / subdir / "repodata.json").read_text())
    return set(repodata["packages"]) | set(repodata["packages.conda"])


def test_one_command_places_indexes_and_reports_and_a_rerun_changes_nothing(
    tree, tmp_path: Path
) -> None:
    dist = tmp_path / "dist"
    files = [build_conda(dist, "tool"), build_tar_bz2(dist, "native", subdir="linux-64")]
    code, report, err = run(tree, "--bundle", str(bundle_of(tree, *files)))
    assert code == 0, err
    assert sorted(report["added"]) == ["linux-64/native-1.0-0.tar.bz2", "noarch/tool-1.0-0.conda"]
    assert report["changed"] is True
    assert sorted(report["indexed"]) == ["main/linux-64", "main/noarch"]
    # Installable: the answer came after the index lists both.
    assert served(tree) == {"tool-1.0-0.conda"}
    assert served(tree, "linux-64") == {"native-1.0-0.tar.bz2"}
    # The bundle and the run's staging folder are gone.
    assert list(tree.staging.rglob("*")) == [tree.staging / "main"]

    code, report, err = run(tree, "--bundle", str(bundle_of(tree, *files, name="run2")))
    assert code == 0, err
    assert report["changed"] is False and report["added"] == [] and report["indexed"] == []
    assert sorted(report["unchanged"]) == [
        "linux-64/native-1.0-0.tar.bz2",
        "noarch/tool-1.0-0.conda",
    ]


def test_refused_files_exit_3_by_name_while_good_ones_land_indexed(tree, tmp_path: Path) -> None:
    good = build_tar_bz2(tmp_path / "dist", "good")
    bad = tmp_path / "dist" / "bad-1.0-0.conda"
    bad.write_bytes(b"nope")
    code, report, err = run(tree, "--bundle", str(bundle_of(tree, good, bad)))
    assert code == 3
    assert [r["file"] for r in report["rejected"]] == ["bad-1.0-0.conda"]
    assert "refused bad-1.0-0.conda:" in err
    assert served(tree) == {"good-1.0-0.tar.bz2"}


def test_bundle_members_that_are_no_plain_files_are_refused_and_never_written(
    tree, tmp_path: Path
) -> None:
    good = build_tar_bz2(tmp_path / "dist", "good")
    bundle = bundle_of(tree, good)
    with tarfile.open(bundle, "a") as archive:
        link = tarfile.TarInfo("link-1.0-0.conda")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(link)
        climber = tarfile.TarInfo("../../escaped-1.0-0.conda")
        climber.size = 4
        archive.addfile(climber, io.BytesIO(b"evil"))
    code, report, _ = run(tree, "--bundle", str(bundle), "--all-or-nothing")
    assert code == 3
    reasons = {r["file"]: r["reason"] for r in report["rejected"]}
    assert reasons == {
        "link-1.0-0.conda": "not a regular file",
        "../../escaped-1.0-0.conda": "not a plain file name",
    }
    assert not list(tmp_path.rglob("escaped-1.0-0.conda"))
    # All or nothing counts the bundle's refusals too: the good file did not land.
    assert report["added"] == [] and not (tree.root / "main/noarch/good-1.0-0.tar.bz2").exists()


def test_removal_and_retention_run_in_the_same_command_and_are_indexed(
    tree, tmp_path: Path
) -> None:
    dist = tmp_path / "dist"
    files = [build_tar_bz2(dist, "lib", version=v) for v in ("1.0", "1.9", "1.10")]
    files.append(build_tar_bz2(dist, "doomed"))
    assert run(tree, "--bundle", str(bundle_of(tree, *files)))[0] == 0
    code, report, err = run(tree, "--remove", "doomed-1.0-0.tar.bz2", "--keep-versions", "1")
    assert code == 0, err
    assert report["removed"] == [
        "noarch/doomed-1.0-0.tar.bz2",
        "noarch/lib-1.0-0.tar.bz2",
        "noarch/lib-1.9-0.tar.bz2",
    ]
    assert report["indexed"] == ["main/noarch"]
    assert served(tree) == {"lib-1.10-0.tar.bz2"}


def test_a_path_trick_in_a_removal_is_refused_before_anything_happens(tree) -> None:
    code, report, err = run(tree, "--remove", "../../etc/passwd")
    assert code == 1 and report == {} and "../../etc/passwd" in err


def test_another_installed_build_is_refused_before_anything_happens(tree, tmp_path: Path) -> None:
    bundle = bundle_of(tree, build_tar_bz2(tmp_path / "dist", "early"))
    code, report, err = run(tree, "--bundle", str(bundle), "--expect-build", "0" * 64)
    assert code == 4 and report == {}
    assert f"sha256 {release.installed_build()}" in err and "converge" in err
    assert not (tree.root / "main/noarch/early-1.0-0.tar.bz2").exists()
    code, _, err = run(tree, "--bundle", str(bundle), "--expect-build", release.installed_build())
    assert code == 0, err


def test_abandoned_staging_goes_once_old_and_fresh_staging_stays(tree) -> None:
    old_dir = tree.staging / "main" / "killed-run"
    old_dir.mkdir(parents=True)
    (old_dir / "x.conda").write_bytes(b"x")
    old_bundle = tree.staging / f"{batch.BUNDLE_PREFIX}main-killed.tar"
    old_bundle.write_bytes(b"")
    live = tree.staging / "main" / "live-run"
    live.mkdir()
    other_channel = tree.staging / f"{batch.BUNDLE_PREFIX}other-killed.tar"
    other_channel.write_bytes(b"")
    two_days_ago = time.time() - 2 * 86400
    for path in (old_dir, old_bundle, other_channel):
        os.utime(path, (two_days_ago, two_days_ago))
    code, report, err = run(tree, "--staging-max-age", "1d", "--keep-versions", "5")
    assert code == 0, err
    assert sorted(report["swept"]) == sorted([str(old_dir), str(old_bundle)])
    assert live.is_dir() and other_channel.exists()


@pytest.mark.parametrize("planted", ["link", "shared folder"])
def test_a_planted_channel_staging_folder_is_refused_and_nothing_behind_it_touched(
    tree, tmp_path: Path, planted: str
) -> None:
    # The staging root is shared with the upload service's group: a member could plant the
    # channel's staging folder as a link to a folder of root's, or as a folder others write.
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_text("root's")
    two_days_ago = time.time() - 2 * 86400
    os.utime(victim / "precious", (two_days_ago, two_days_ago))
    if planted == "link":
        (tree.staging / "main").symlink_to(victim)
    else:
        (tree.staging / "main").mkdir(mode=0o777)
        (tree.staging / "main").chmod(0o777)
    package = build_conda(tmp_path / "dist", "planted")
    bundle = bundle_of(tree, package)
    code, report, err = run(tree, "--bundle", str(bundle), "--staging-max-age", "1d")
    assert code == 1 and "not a private folder" in err, err
    assert report["added"] == [] and report["swept"] == []
    assert (victim / "precious").read_text() == "root's"
    assert sorted(p.name for p in victim.iterdir()) == ["precious"]
    assert not bundle.exists()


def test_an_error_is_reported_in_json_and_on_stderr_with_exit_1(tree, tmp_path: Path) -> None:
    bundle = tree.staging / f"{batch.BUNDLE_PREFIX}main-cut.tar"
    bundle.write_bytes(b"not a tar at all" * 10)
    code, report, err = run(tree, "--bundle", str(bundle))
    assert code == 1 and report["errors"] and "condaport-publish:" in err
    assert not bundle.exists()


@pytest.mark.parametrize("age", ["1d", "12h", "30m", "90", "2w"])
def test_staging_ages_read_as_find_does(age: str) -> None:
    assert batch.age_seconds(age) == {"1d": 86400, "12h": 43200, "30m": 1800, "90": 90}.get(
        age, 2 * 604800
    )
