"""The indexer: stale detection, indexing only what changed, failure keeps the old index."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from condaport import index
from tests.support.pkgbuild import build_conda, build_tar_bz2

SUBDIRS = ["linux-64", "noarch"]  # sorted, as the tool reports them


@pytest.fixture
def channel(tmp_path: Path) -> tuple[Path, Path]:
    root, state = tmp_path / "channels", tmp_path / "state"
    for subdir in SUBDIRS:
        (root / "main" / subdir).mkdir(parents=True)
    (root / "main" / ".tmp").mkdir()  # rattler's scratch dir is not a subdir
    return root, state


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "condaport.index", *args],
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


def test_removing_a_package_makes_the_subdir_stale(channel) -> None:
    root, state = channel
    package = build_tar_bz2(root / "main" / "noarch", "leaving")
    index.run(root, state, None)
    package.unlink()
    assert index.stale_subdirs(root, state, "main") == ["noarch"]
    index.run(root, state, None)
    repodata = json.loads((root / "main" / "noarch" / "repodata.json").read_text())
    assert repodata["packages"] == {}


def test_a_corrupt_package_fails_the_run_and_keeps_the_last_good_index(channel) -> None:
    root, state = channel
    build_conda(root / "main" / "noarch", "good")
    index.run(root, state, None)
    before = (root / "main" / "noarch" / "repodata.json").read_bytes()
    (root / "main" / "noarch" / "broken-1.0-0.conda").write_bytes(b"PK\x03\x04 truncated")
    result = cli("run", "--channels-root", str(root), "--state-dir", str(state))
    assert result.returncode == 1
    assert "main/noarch" in result.stderr
    assert (root / "main" / "noarch" / "repodata.json").read_bytes() == before
    # Still stale, so the next run (after the file is removed) heals the channel.
    assert index.stale_subdirs(root, state, "main") == ["noarch"]
    (root / "main" / "noarch" / "broken-1.0-0.conda").unlink()
    assert cli("run", "--channels-root", str(root), "--state-dir", str(state)).returncode == 0


def test_cli_status_and_run_print_json(channel) -> None:
    root, state = channel
    status = cli("status", "--channels-root", str(root), "--state-dir", str(state))
    assert json.loads(status.stdout) == {"stale": {"main": SUBDIRS}, "pages_missing": ["main"]}
    ran = cli("run", "--channels-root", str(root), "--state-dir", str(state), "--channel", "main")
    assert json.loads(ran.stdout) == {"indexed": {"main": SUBDIRS}}
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
