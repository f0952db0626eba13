"""Package validation: what may enter a channel and what is refused, with which reason."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest

from condaport.packages import Rejected, inspect_package
from tests.support.pkgbuild import build_conda, build_tar_bz2


def test_a_good_conda_is_described_by_its_own_index_json(tmp_path: Path) -> None:
    package = build_conda(tmp_path, "good", "1.2", "h0_0", subdir="linux-64")
    info = inspect_package(package, ["noarch", "linux-64"])
    assert (info.name, info.version, info.build, info.subdir) == ("good", "1.2", "h0_0", "linux-64")
    assert info.size == package.stat().st_size


def test_a_good_tar_bz2_is_accepted(tmp_path: Path) -> None:
    info = inspect_package(build_tar_bz2(tmp_path, "old-style"), ["noarch"])
    assert info.subdir == "noarch"


def _truncated(tmp_path: Path) -> Path:
    package = build_conda(tmp_path / "src", "cut")
    target = tmp_path / package.name
    target.write_bytes(package.read_bytes()[: package.stat().st_size // 2])
    return target


def _renamed(tmp_path: Path) -> Path:
    package = build_conda(tmp_path / "src", "original")
    return Path(shutil.copy(package, tmp_path / "impostor-1.0-0.conda"))


def _renamed_tar(tmp_path: Path) -> Path:
    package = build_tar_bz2(tmp_path / "src", "original")
    return Path(shutil.copy(package, tmp_path / "impostor-1.0-0.tar.bz2"))


def _zero(tmp_path: Path) -> Path:
    target = tmp_path / "empty-1.0-0.conda"
    target.write_bytes(b"")
    return target


def _garbage(tmp_path: Path) -> Path:
    target = tmp_path / "junk-1.0-0.tar.bz2"
    target.write_bytes(b"this is not a bzip2 stream" * 40)
    return target


def _corrupt_inner(tmp_path: Path) -> Path:
    package = build_conda(tmp_path / "src", "inner")
    target = tmp_path / package.name
    with zipfile.ZipFile(package) as source, zipfile.ZipFile(target, "w") as out:
        for item in source.infolist():
            data = source.read(item)
            if item.filename.startswith("pkg-"):
                data = data[: len(data) // 2]
            out.writestr(item, data)
    return target


def _missing_payload(tmp_path: Path) -> Path:
    return build_tar_bz2(tmp_path, "hollow", drop_payload=True)


def _unknown_subdir(tmp_path: Path) -> Path:
    return build_tar_bz2(tmp_path, "elsewhere", subdir="linux-ppc64le")


def _no_subdir(tmp_path: Path) -> Path:
    return build_tar_bz2(tmp_path, "nowhere", index_overrides={"subdir": ""})


def _not_a_package(tmp_path: Path) -> Path:
    target = tmp_path / "README.md"
    target.write_text("hello")
    return target


def _leading_dot(tmp_path: Path) -> Path:
    package = build_tar_bz2(tmp_path / "src", "dot")
    return Path(shutil.copy(package, tmp_path / ".dot-1.0-0.tar.bz2"))


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (_truncated, "truncated"),
        (_renamed, "renamed package"),
        (_renamed_tar, "renamed package"),
        (_zero, "zero bytes"),
        (_garbage, "truncated or garbage"),
        (_corrupt_inner, "does not decompress"),
        (_missing_payload, "missing"),
        (_unknown_subdir, "not served by this channel"),
        (_no_subdir, "names no subdir"),
        (_not_a_package, "not a conda package"),
        (_leading_dot, "leading dot"),
    ],
)
def test_bad_files_are_refused_with_a_reason(tmp_path: Path, make, reason: str) -> None:
    with pytest.raises(Rejected, match=reason):
        inspect_package(make(tmp_path), ["noarch", "linux-64"])
