"""Package validation: what may enter a channel and what is refused, with which reason."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from condaport.packages import (
    Rejected,
    check_archive_index,
    check_archive_indexes,
    inspect_package,
)
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


# Item 3: records rattler's indexer (and so every client) cannot read. Each used to be
# accepted and placed, and then froze its subdir's index until removed by hand.
MALFORMED_INDEX = {
    "version 1..0": ({"version": "1..0"}, "1..0", "is not a conda version"),
    "version 1.0$x": ({"version": "1.0$x"}, "1.0$x", "is not a conda version"),
    "build_number as text": ({"build_number": "x"}, None, "build_number 'x'"),
    "negative build_number": ({"build_number": -1}, None, "not a non-negative integer"),
    "depends entry not a string": ({"depends": [123]}, None, "depends must be a list of strings"),
    "depends not a list": ({"depends": "python"}, None, "depends must be a list of strings"),
    "unparsable match spec": ({"depends": ["foo >=>= 1"]}, None, "not a valid match spec"),
    "constrains entry not a string": ({"constrains": [1]}, None, "constrains must be a list"),
    "license as a list": ({"license": ["MIT", "BSD"]}, None, "license must be a string"),
    "timestamp as text": ({"timestamp": "yesterday"}, None, "not a record conda tools can read"),
    "unknown noarch kind": ({"noarch": "weird"}, None, "not a record conda tools can read"),
    "subdir with a path": ({"subdir": "../other/noarch"}, None, "is not a subdir name"),
}


@pytest.mark.parametrize("kind", list(MALFORMED_INDEX))
def test_a_record_the_indexer_cannot_read_is_refused(tmp_path: Path, kind: str) -> None:
    overrides, version, reason = MALFORMED_INDEX[kind]
    package = build_tar_bz2(
        tmp_path, "malformed", version=version or "1.0", index_overrides=overrides
    )
    with pytest.raises(Rejected, match=re.escape(reason)):
        inspect_package(package, ["noarch", "linux-64"])


@pytest.mark.parametrize(
    ("name", "build", "reason"),
    [
        ("Upper", "0", "is not a conda package name"),
        ("spaced", "a b", "build string"),
        ("dashed", "py3-0", "build string"),
    ],
)
def test_names_and_build_strings_follow_condas_rules(
    tmp_path: Path, name: str, build: str, reason: str
) -> None:
    package = build_tar_bz2(tmp_path, name, build=build)
    with pytest.raises(Rejected, match=reason):
        inspect_package(package, ["noarch"])


def test_the_same_check_reads_index_json_straight_from_an_archive(tmp_path: Path) -> None:
    good = build_conda(tmp_path, "direct", "2.0", "h1_0", subdir="linux-64")
    assert check_archive_index(good).subdir == "linux-64"
    bad = build_tar_bz2(tmp_path, "direct-bad", index_overrides={"depends": [123]})
    with pytest.raises(Rejected, match="depends must be a list of strings"):
        check_archive_index(bad)


def test_many_archives_are_checked_at_once_as_one_at_a_time(tmp_path: Path) -> None:
    """The index handler screens every changed file in one go (read concurrently): each
    file gets the facts or the refusal it gets alone, in order."""
    for folder in "abcdefg":
        (tmp_path / folder).mkdir()
    files = [
        build_conda(tmp_path / "a", "one", "1.0", "h1_0", subdir="linux-64"),
        _truncated(tmp_path / "b"),
        build_tar_bz2(tmp_path / "c", "two"),
        _garbage(tmp_path / "d"),
        _renamed(tmp_path / "e"),
        _zero(tmp_path / "f"),
        build_tar_bz2(tmp_path / "g", "three", index_overrides={"depends": [123]}),
    ]
    alone: list[object] = []
    for path in files:
        try:
            alone.append(check_archive_index(path))
        except Rejected as exc:
            alone.append(str(exc))
    together = [str(r) if isinstance(r, Rejected) else r for r in check_archive_indexes(files)]
    assert together == alone
    assert [isinstance(r, str) for r in together] == [False, True, False, True, True, True, True]


# Item 4: info/paths.json and info/files may only name files inside the package. The
# validator runs as root: it must never open, stat or hash anything of the host, and its
# refusals must not tell an uploader whether a host file exists or what it holds.
def _host_file_entry(path: str) -> dict:
    data = Path(path).read_bytes() if Path(path).is_file() else b""
    return {
        "_path": path,
        "path_type": "hardlink",
        "size_in_bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


ESCAPES = {
    "absolute path": (dict(extra_paths=[_host_file_entry("/etc/hostname")]), "absolute path"),
    "dot-dot path": (
        dict(extra_paths=[{"_path": "../../x", "path_type": "hardlink", "size_in_bytes": 1}]),
        "'..' components",
    ),
    "path through a symlinked folder": (
        dict(
            symlinks={"share/etc": "/etc"},
            extra_paths=[{**_host_file_entry("/etc/hostname"), "_path": "share/etc/hostname"}],
        ),
        "through the symbolic link",
    ),
    "relative link out of the package": (
        dict(
            symlinks={"share/up": "../../../../../../.."},
            extra_paths=[{"_path": "share/up/etc/hostname", "path_type": "hardlink"}],
        ),
        "through the symbolic link",
    ),
    "file entry that is a link": (
        dict(
            symlinks={"share/hostname": "/etc/hostname"},
            extra_paths=[{**_host_file_entry("/etc/hostname"), "_path": "share/hostname"}],
        ),
        "is a symbolic link, but info/paths.json lists it as a file",
    ),
    "info/files with an absolute path": (
        dict(paths_json=False, extra_files=["/etc/hostname"]),
        "info/files lists '/etc/hostname', an absolute path",
    ),
    "info/files through a symlinked folder": (
        dict(paths_json=False, symlinks={"share/etc": "/etc"}, extra_files=["share/etc/passwd"]),
        "through the symbolic link",
    ),
    "info/index.json is a link to a host file": (
        dict(info_links={"info/index.json": "/etc/hostname"}),
        "info/index.json is a symbolic link",
    ),
    "info/paths.json is a link to a host file": (
        dict(info_links={"info/paths.json": "/etc/passwd"}),
        "info/paths.json is a symbolic link",
    ),
}


@pytest.mark.parametrize("kind", list(ESCAPES))
def test_metadata_naming_files_outside_the_package_is_refused(tmp_path: Path, kind: str) -> None:
    options, reason = ESCAPES[kind]
    package = build_tar_bz2(tmp_path, "escape", **options)
    with pytest.raises(Rejected, match=re.escape(reason)) as refused:
        inspect_package(package, ["noarch"])
    assert "No such file" not in str(refused.value)


def test_a_path_into_proc_is_refused_without_reading_it(tmp_path: Path) -> None:
    """Reading /proc/kmsg blocks forever: the old validator hung the publish on it."""
    package = build_tar_bz2(
        tmp_path,
        "proc",
        symlinks={"share/p": "/proc"},
        extra_paths=[{"_path": "share/p/kmsg", "path_type": "hardlink", "sha256": "0" * 64}],
    )
    # In a child process: a hang there is killed by the timeout instead of hanging pytest.
    probe = (
        "import sys; from pathlib import Path; from condaport.packages import *\n"
        "try: inspect_package(Path(sys.argv[1]), ['noarch'])\n"
        "except Rejected as exc: print(exc)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, str(package)], capture_output=True, text=True, timeout=30
    )
    assert "through the symbolic link" in result.stdout, result.stderr


def test_a_refusal_tells_nothing_about_host_files(tmp_path: Path) -> None:
    """The same answer whether the host file exists, and whether its size and hash match."""
    answers = set()
    for n, entry in enumerate(
        [
            _host_file_entry("/etc/hostname"),
            {**_host_file_entry("/etc/hostname"), "sha256": "0" * 64, "size_in_bytes": 1},
            {**_host_file_entry("/etc/no-such-file"), "_path": "/etc/hostname"},
        ]
    ):
        package = build_tar_bz2(tmp_path / str(n), "probe", extra_paths=[entry])
        with pytest.raises(Rejected) as refused:
            inspect_package(package, ["noarch"])
        answers.add(str(refused.value))
    assert len(answers) == 1, answers
    linked = set()
    for n, target in enumerate(["/etc", "/nonexistent-folder"]):
        package = build_tar_bz2(
            tmp_path / f"link{n}",
            "probe",
            symlinks={"share/x": target},
            extra_paths=[{**_host_file_entry("/etc/hostname"), "_path": "share/x/hostname"}],
        )
        with pytest.raises(Rejected) as refused:
            inspect_package(package, ["noarch"])
        linked.add(str(refused.value))
    assert len(linked) == 1, linked


def test_payload_links_and_folders_of_a_good_package_are_accepted(tmp_path: Path) -> None:
    package = build_tar_bz2(
        tmp_path,
        "linked",
        symlinks={"share/linked/alias.txt": "data.txt", "share/elsewhere": "/usr/share"},
    )
    assert inspect_package(package, ["noarch"]).name == "linked"
