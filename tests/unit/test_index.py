"""The indexer: stale detection, indexing only what changed, failure keeps the old index."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from condaport import index, repodata
from condaport.channel_files import QUARANTINE
from condaport.index_backends import RattlerBackend
from condaport.subdir_index import RowsText, SubdirIndex
from tests.support.channel_tree import ChannelTree
from tests.support.pkgbuild import build_conda, build_same_size_twins, build_tar_bz2

SUBDIRS = ["linux-64", "noarch"]  # sorted, as the tool reports them


@pytest.fixture
def channel(tree: ChannelTree) -> tuple[Path, Path]:
    """The shared tree's channels root and state folder, main holding SUBDIRS."""
    (tree.root / "main" / ".tmp").mkdir()  # rattler's scratch dir is not a subdir
    return tree.root, tree.state


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "condaport.index_command", *args],
        capture_output=True,
        text=True,
        check=False,
    )


def test_new_subdirs_are_stale_until_indexed_even_when_empty(channel) -> None:
    root, state = channel
    assert index.stale_subdirs(root, state, "main") == SUBDIRS
    assert index.run(root, state, None) == {"main": SUBDIRS}
    for subdir in SUBDIRS:
        repodata = json.loads((root / "main" / subdir / "repodata.json").read_text())
        assert repodata["info"]["subdir"] == subdir
        assert (root / "main" / subdir / "repodata.json.zst").stat().st_size > 0
    assert index.stale_subdirs(root, state, "main") == []
    assert index.run(root, state, None) == {}


def test_only_the_subdir_that_changed_is_indexed(channel) -> None:
    root, state = channel
    index.run(root, state, None)
    untouched = (root / "main" / "linux-64" / "repodata.json").stat().st_mtime_ns
    package = build_conda(root / "main" / "noarch", "fresh")
    assert index.run(root, state, None) == {"main": ["noarch"]}
    repodata = json.loads((root / "main" / "noarch" / "repodata.json").read_text())
    assert package.name in repodata["packages.conda"]
    assert (root / "main" / "linux-64" / "repodata.json").stat().st_mtime_ns == untouched


def test_a_same_size_rewrite_of_the_index_is_dated_after_the_one_it_replaced(
    channel, tmp_path: Path
) -> None:
    # NGINX's ETag is the mtime in whole seconds and the size: an index rewritten in the
    # same second at the same size would revalidate as unchanged on every edge, proxy
    # channel and client. A package swapped for a same-size build gives such a rewrite;
    # an index dated ahead of the clock stands for "written earlier this second".
    root, state = channel
    noarch = root / "main" / "noarch"
    first, second = build_same_size_twins(tmp_path / "twins", "twin")
    shutil.copy2(first, noarch / first.name)
    index.run(root, state, None)
    ahead = int(time.time()) + 100
    names = ("repodata.json", "repodata.json.zst")
    sizes = {name: (noarch / name).stat().st_size for name in names}
    for name in names:
        os.utime(noarch / name, (ahead, ahead))
    os.replace(second, noarch / first.name)
    assert index.run(root, state, None) == {"main": ["noarch"]}
    assert (noarch / "repodata.json").stat().st_size == sizes["repodata.json"]
    for name in names:
        now = (noarch / name).stat()
        assert int(now.st_mtime) == ahead + 1 or now.st_size != sizes[name], name


def test_an_index_that_grew_keeps_the_clocks_time(channel) -> None:
    root, state = channel
    index.run(root, state, None)
    noarch = root / "main" / "noarch"
    build_conda(noarch, "fresh")
    before = time.time()
    index.run(root, state, None)
    assert before - 1 <= (noarch / "repodata.json").stat().st_mtime <= time.time() + 1


def test_removing_a_package_makes_the_subdir_stale(channel) -> None:
    root, state = channel
    package = build_tar_bz2(root / "main" / "noarch", "leaving")
    index.run(root, state, None)
    package.unlink()
    assert index.stale_subdirs(root, state, "main") == ["noarch"]
    index.run(root, state, None)
    repodata = json.loads((root / "main" / "noarch" / "repodata.json").read_text())
    assert repodata["packages"] == {}


def test_a_failed_index_keeps_the_last_good_one_and_the_subdir_stale(
    channel, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, state = channel
    build_conda(root / "main" / "noarch", "good")
    index.run(root, state, None)
    before = (root / "main" / "noarch" / "repodata.json").read_bytes()
    build_tar_bz2(root / "main" / "noarch", "next")

    def broken(_: object, channel_dir: Path, subdir: str, *__: object) -> None:
        raise index.IndexFailed(f"rattler index of main/{subdir} failed: No space left on device")

    def disk_full(*_: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    # Both ways an index run writes: the backend (full) and the in-place edit (a change).
    monkeypatch.setattr(RattlerBackend, "index", broken)
    monkeypatch.setattr(repodata, "write_bytes", disk_full)
    with pytest.raises(index.IndexFailed, match="No space left"):
        index.run(root, state, None)
    assert (root / "main" / "noarch" / "repodata.json").read_bytes() == before
    assert index.stale_subdirs(root, state, "main") == ["noarch"]
    assert not (root / "main" / QUARANTINE).exists()  # nothing was to blame
    monkeypatch.undo()
    index.run(root, state, None)
    assert index.stale_subdirs(root, state, "main") == []


def _malformed(folder: Path) -> dict[str, str]:
    """Files copied in by hand (or by an older condaport) that rattler cannot index."""
    made = {
        build_tar_bz2(folder, "badver", version="1..0").name: "is not a conda version",
        build_tar_bz2(folder, "badnum", index_overrides={"build_number": "x"}).name: "build_number",
        build_tar_bz2(folder, "baddep", index_overrides={"depends": [123]}).name: "depends",
        build_tar_bz2(folder, "badlic", index_overrides={"license": ["MIT"]}).name: "license",
        build_tar_bz2(folder, "elsewhere", subdir="linux-64").name: "the file sits in noarch",
    }
    cut = build_conda(folder / ".src", "cut")
    (folder / cut.name).write_bytes(cut.read_bytes()[:300])
    made[cut.name] = "cannot read info/index.json"
    return made


def test_malformed_files_on_disk_are_quarantined_and_the_rest_indexed(channel) -> None:
    root, state = channel
    noarch = root / "main" / "noarch"
    good = build_conda(noarch, "good")
    index.run(root, state, None)
    fresh = build_tar_bz2(noarch, "fresh")
    bad = _malformed(noarch)
    result = cli("run", "--channels-root", str(root), "--state-dir", str(state))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["indexed"] == {"main": ["noarch"]}
    reasons = {q["file"]: q["reason"] for q in report["quarantined"]}
    assert sorted(reasons) == sorted(f"main/noarch/{name}" for name in bad)
    for name, reason in bad.items():
        assert reason in reasons[f"main/noarch/{name}"]
        assert not (noarch / name).exists()
        assert (root / "main" / ".quarantine" / "noarch" / name).is_file()
        assert f"quarantined main/noarch/{name}" in result.stderr
    repodata = json.loads((noarch / "repodata.json").read_text())
    assert set(repodata["packages"]) | set(repodata["packages.conda"]) == {good.name, fresh.name}
    again = cli("run", "--channels-root", str(root), "--state-dir", str(state))
    assert json.loads(again.stdout) == {"indexed": {}, "quarantined": []}


def test_a_bad_file_the_screening_missed_is_found_when_the_index_fails(channel) -> None:
    """A file recorded as seen (e.g. indexed by a laxer rattler) and then failing the index."""
    root, state = channel
    noarch = root / "main" / "noarch"
    good = build_tar_bz2(noarch, "good")
    index.run(root, state, None)
    build_tar_bz2(noarch, "lax", index_overrides={"depends": ["foo >=>= 1"]})
    owner = SubdirIndex.at(root / "main", "noarch", state)
    owner.apply({}, owner.rows())  # the fingerprint of every file, the bad one included
    (noarch / "repodata.json").unlink()  # stale, with the bad file counted as seen
    moved: list[dict[str, str]] = []
    index.run(root, state, None, quarantined=moved)
    assert [m["file"] for m in moved] == ["main/noarch/lax-1.0-0.tar.bz2"]
    assert "not a valid match spec" in moved[0]["reason"]
    repodata = json.loads((noarch / "repodata.json").read_text())
    assert list(repodata["packages"]) == [good.name]


def test_an_overwrite_keeping_size_and_mtime_is_indexed_again(channel, tmp_path: Path) -> None:
    root, state = channel
    noarch = root / "main" / "noarch"
    first, second = build_same_size_twins(tmp_path / "twins", "twin")
    shutil.copy2(first, noarch / first.name)
    index.run(root, state, None)
    mtime = (noarch / first.name).stat().st_mtime_ns
    os.utime(second, ns=(mtime, mtime))
    os.replace(second, noarch / first.name)  # as placing does: a rename
    assert (noarch / first.name).stat().st_mtime_ns == mtime
    assert index.stale_subdirs(root, state, "main") == ["noarch"]
    index.run(root, state, None)
    repodata = json.loads((noarch / "repodata.json").read_text())
    wanted = hashlib.sha256((noarch / first.name).read_bytes()).hexdigest()
    assert repodata["packages"][first.name]["sha256"] == wanted


def test_cli_status_and_run_print_json(channel) -> None:
    root, state = channel
    status = cli("status", "--channels-root", str(root), "--state-dir", str(state))
    assert json.loads(status.stdout) == {"stale": {"main": SUBDIRS}, "pages_missing": ["main"]}
    ran = cli("run", "--channels-root", str(root), "--state-dir", str(state), "--channel", "main")
    assert json.loads(ran.stdout) == {"indexed": {"main": SUBDIRS}, "quarantined": []}
    assert (root / "main" / "index.html").is_file()
    status = cli("status", "--channels-root", str(root), "--state-dir", str(state))
    assert json.loads(status.stdout) == {"stale": {}, "pages_missing": []}
    unknown = cli(
        "status", "--channels-root", str(root), "--state-dir", str(state), "--channel", "x"
    )
    assert unknown.returncode == 1
    assert "no such channel" in unknown.stderr


def test_conda_index_backend_runs_where_conda_is_importable(channel) -> None:
    conda_python = os.environ.get("CONDAPORT_CONDA_PYTHON", sys.executable)
    probe = subprocess.run([conda_python, "-c", "import conda_index"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(
            "conda-index needs a conda installation (PyPI has no usable conda); "
            "set CONDAPORT_CONDA_PYTHON to a conda python that can import conda_index"
        )
    root, state = channel
    package = build_conda(root / "main" / "noarch", "via-conda-index")
    index.run(root, state, None, backend="conda-index", conda_python=conda_python)
    repodata = json.loads((root / "main" / "noarch" / "repodata.json").read_text())
    assert package.name in repodata["packages.conda"]


def _digest_as_recorded_before(rows: dict[str, tuple[int, ...]]) -> str:
    """The fingerprint as every earlier version recorded it (so an upgrade re-indexes
    nothing): sha256 of `name<TAB>size<TAB>mtime<TAB>inode<TAB>ctime` lines in name order."""
    digest = hashlib.sha256()
    for name in sorted(rows):
        digest.update((name + "".join(f"\t{v}" for v in rows[name]) + "\n").encode())
    return digest.hexdigest()


def test_the_kept_fingerprint_text_follows_every_kind_of_change() -> None:
    chooser = random.Random(7)
    text = RowsText()
    rows = {f"p{n:04d}-1.0-0.tar.bz2": (n, 2 * n, 3 * n, 4 * n) for n in range(400)}
    rows['odd "name\\ü-1.0-0.conda'] = (1, 2, 3, 4)
    for step in range(200):
        roll = chooser.random()
        if roll < 0.3:
            rows.pop(chooser.choice(sorted(rows)))
        elif roll < 0.6:
            rows[f"n{chooser.randrange(10**6)}-1.0-0.conda"] = (step, 1, 2, 3)
        elif roll < 0.9:
            rows[chooser.choice(sorted(rows))] = (step, 9, 9, 9)
        else:  # many at once (a full index after files were copied in)
            for name in chooser.sample(sorted(rows), 100):
                rows[name] = (step, 0, 0, 0)
        digest, rows_json = text.digest_and_json(rows)
        assert digest == _digest_as_recorded_before(rows)
        assert json.loads(rows_json) == {name: list(row) for name, row in rows.items()}
