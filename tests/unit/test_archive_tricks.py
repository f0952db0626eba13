"""Issue 17: archive tricks and bombs, refused by name before anything large is written.

Validation and the repodata record read one package with one reader (a .tar.bz2 with two
info/index.json used to pass as one package and be indexed as another), and every layer
is bounded before it is unpacked (a 414-byte upload used to write 256 MiB).
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from condaport import repodata
from condaport.config import ConfigError, parse
from condaport.packages import (
    DEFAULT_MAX_UNPACKED_SIZE,
    Limits,
    Rejected,
    TooLarge,
    inspect_package,
    package_metadata,
)
from tests.support.pkgbuild import (
    build_big_index_json,
    build_bzip2_bomb,
    build_conda_by_hand,
    build_conda_with_decoy_info,
    build_conda_with_extra_entry,
    build_conda_with_index_in_pkg,
    build_conda_with_info_twice,
    build_conda_with_inner_duplicate,
    build_many_members,
    build_raw_conda,
    build_raw_tar_bz2,
    build_tar_bz2,
    build_twice_indexed,
    build_zstd_bomb,
    info_members,
    payload_members,
)

MIB = 1 << 20


def _hidden_bytes(folder: Path) -> Path:
    package = build_conda_by_hand(folder / "src", "hider")
    target = folder / package.name
    target.write_bytes(b"PK\x03\x04" + bytes(60) + package.read_bytes())
    return target


def _two_bzip2_streams(folder: Path) -> Path:
    """rattler reads only the first stream (here: info/index.json alone), Python all."""
    import bz2

    package = build_tar_bz2(folder / "src", "streams")
    tar = bz2.decompress(package.read_bytes())
    cut = tarfile.open(fileobj=io.BytesIO(tar)).getmembers()[1].offset
    target = folder / package.name
    target.write_bytes(bz2.compress(tar[:cut]) + bz2.compress(tar[cut:]))
    return target


def _big_index_json(folder: Path) -> Path:
    return build_big_index_json(folder, 17 * MIB)


def _huge_pax_header(folder: Path) -> Path:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, data in [*info_members("pax"), *payload_members("pax")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            if name.startswith("share/"):
                info.pax_headers = {"comment": "x" * (2 * MIB)}
            archive.addfile(info, io.BytesIO(data))
    import bz2

    target = folder / "pax-1.0-0.tar.bz2"
    target.write_bytes(bz2.compress(buffer.getvalue()))
    return target


TRICKS: dict[str, tuple[Callable[[Path], Path], str]] = {
    ".tar.bz2 with two info/index.json": (
        lambda folder: build_twice_indexed(folder, "twice"),
        "the package holds 'info/index.json' twice",
    ),
    ".conda with another info archive first": (
        lambda folder: build_conda_with_decoy_info(folder, "decoy"),
        "unexpected entry 'info-decoy-9.9-0.tar.zst'",
    ),
    ".conda with an unexpected entry": (
        lambda folder: build_conda_with_extra_entry(folder, "chatty"),
        "unexpected entry 'notes.txt'",
    ),
    ".conda with its info archive twice": (
        lambda folder: build_conda_with_info_twice(folder, "again"),
        "holds 'info-again-1.0-0.tar.zst' twice",
    ),
    "inner archive with a name twice": (
        lambda folder: build_conda_with_inner_duplicate(folder, "dup"),
        "the package holds 'share/dup/data.txt' twice",
    ),
    "info/index.json in both inner archives": (
        lambda folder: build_conda_with_index_in_pkg(folder, "both"),
        "the package holds 'info/index.json' twice",
    ),
    ".conda with bytes hidden before its entries": (_hidden_bytes, "a hidden entry?"),
    ".tar.bz2 of two bzip2 streams": (_two_bzip2_streams, "more than one bzip2 stream"),
    "17 MiB info/index.json": (_big_index_json, "info/index.json is larger than 16 MiB"),
    "2 MiB pax header": (_huge_pax_header, "a tar header extension of"),
    "member name of 5000 bytes": (
        lambda folder: build_raw_tar_bz2(
            folder,
            "longname-1.0-0.tar.bz2",
            [*info_members("longname"), ("share/" + "a" * 4994, b"x")],
        ),
        "has a name over 4096 bytes",
    ),
    "member under a file": (
        lambda folder: build_raw_tar_bz2(
            folder,
            "under-1.0-0.tar.bz2",
            [*info_members("under"), ("share/under/x", b"x"), ("share/under", b"file")],
        ),
        "archive member 'share/under' is a file, but other members lie in it",
    ),
}


@pytest.mark.parametrize("kind", list(TRICKS))
def test_archive_tricks_are_refused_by_name(tmp_path: Path, kind: str) -> None:
    make, reason = TRICKS[kind]
    package = make(tmp_path)
    with pytest.raises(Rejected, match=re.escape(reason)) as refused:
        inspect_package(package, ["noarch"])
    assert not isinstance(refused.value, TooLarge)  # a bad package: 422, not 413
    with pytest.raises(Rejected, match=re.escape(reason)):
        package_metadata(package)  # what the record builder reads refuses it too


def test_a_member_inside_a_link_is_refused_and_nothing_lands_outside(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in info_members("through"):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("share/out")
        link.type, link.linkname = tarfile.SYMTYPE, str(outside)
        archive.addfile(link)
        planted = tarfile.TarInfo("share/out/planted.txt")
        planted.size = 3
        archive.addfile(planted, io.BytesIO(b"hi\n"))
    import bz2

    package = tmp_path / "through-1.0-0.tar.bz2"
    package.write_bytes(bz2.compress(buffer.getvalue()))
    with pytest.raises(Rejected, match="lies inside 'share/out', a symbolic link"):
        inspect_package(package, ["noarch"])
    assert list(outside.iterdir()) == []


def test_a_good_hand_written_conda_is_accepted(tmp_path: Path) -> None:
    """The hostile .conda files above differ from this one by the trick alone."""
    info = inspect_package(build_conda_by_hand(tmp_path, "plain"), ["noarch"])
    assert (info.name, info.version) == ("plain", "1.0")


# Bombs run in a child process whose files may not grow past 64 MiB (a write beyond fails)
# and whose peak memory is reported: the old validator wrote every byte of the bomb, and
# the old record builder read a huge info/index.json whole into memory.
PROBE = """
import json, resource, signal, sys
from pathlib import Path
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 20, 64 << 20))
from condaport import packages, repodata
what, path, scratch, limit = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
try:
    if what == "inspect":
        packages.inspect_package(
            path, ["noarch"], scratch_dir=scratch, limits=packages.Limits(unpacked_size=limit)
        )
    else:
        repodata.package_record(path, sha256="0" * 64, md5="0" * 32, size=1)
    outcome = {"refused": None}
except packages.Rejected as exc:
    outcome = {"refused": type(exc).__name__, "reason": str(exc)}
outcome["peak_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps(outcome))
"""


def _probe(what: str, package: Path, scratch: Path, limit: int = 256 * MIB) -> dict:
    scratch.mkdir(exist_ok=True)
    result = subprocess.run(
        [sys.executable, "-c", PROBE, what, str(package), str(scratch), str(limit)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def _folder_size(folder: Path) -> int:
    return sum(p.lstat().st_size for p in folder.rglob("*"))


@pytest.mark.parametrize("build", [build_bzip2_bomb, build_zstd_bomb])
def test_a_compression_bomb_is_refused_before_it_writes(tmp_path: Path, build) -> None:
    package = build(tmp_path / "dist")
    assert package.stat().st_size < 64 * 1024  # 1 GiB of zeros inside
    outcome = _probe("inspect", package, tmp_path / "scratch")
    assert outcome["refused"] == "TooLarge", outcome
    assert "unpacks to more than 256 MiB" in outcome["reason"]
    assert outcome["peak_kib"] < 200 * 1024, outcome
    assert _folder_size(tmp_path / "scratch") == 0


def test_the_record_builder_never_reads_a_huge_index_json(tmp_path: Path) -> None:
    package = build_bzip2_bomb(tmp_path / "dist", "hugeindex", member="info/index.json")
    outcome = _probe("record", package, tmp_path / "scratch")
    assert outcome["refused"] == "Rejected", outcome
    assert "info/index.json is larger than 16 MiB" in outcome["reason"]
    assert outcome["peak_kib"] < 200 * 1024, outcome


def test_too_many_members_are_refused_before_extraction(tmp_path: Path) -> None:
    package = build_many_members(tmp_path / "dist", 300)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with pytest.raises(TooLarge, match="more than 200 members"):
        inspect_package(package, ["noarch"], scratch_dir=scratch, limits=Limits(members=200))
    assert list(scratch.iterdir()) == []
    assert inspect_package(package, ["noarch"], limits=Limits(members=400)).name == "crowd"


def test_the_limit_counts_the_bytes_a_package_unpacks_to(tmp_path: Path) -> None:
    package = build_tar_bz2(tmp_path, "sized")
    unpacked = sum(len(data) for _, data in payload_members("sized"))
    with pytest.raises(TooLarge, match="unpacks to more than"):
        inspect_package(package, ["noarch"], limits=Limits(unpacked_size=unpacked + 100))
    assert inspect_package(package, ["noarch"], limits=Limits(unpacked_size=4096)).size


def test_extraction_happens_in_the_scratch_folder_the_caller_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[Path] = []
    real = tempfile.mkdtemp

    def recording(*args: object, **kwargs: object) -> str:
        folder = real(*args, **kwargs)
        made.append(Path(folder))
        return folder

    monkeypatch.setattr(tempfile, "mkdtemp", recording)
    scratch = tmp_path / "staging-scratch"
    scratch.mkdir()
    inspect_package(build_conda_by_hand(tmp_path, "placed"), ["noarch"], scratch_dir=scratch)
    assert [folder.parent for folder in made] == [scratch]
    assert list(scratch.iterdir()) == []  # and removed afterwards


def test_the_record_is_built_from_the_validated_bytes(tmp_path: Path) -> None:
    exports = json.dumps({"weak": ["rx >=1.0"]}).encode()
    package = build_raw_conda(
        tmp_path,
        "rx-1.0-0",
        [*info_members("rx"), ("info/run_exports.json", exports)],
        payload_members("rx"),
    )
    info = inspect_package(package, ["noarch"])
    assert json.loads(info.index_json)["name"] == "rx" and info.run_exports_json == exports
    record = repodata.record_for(info, md5="0" * 32, indexed_timestamp=1)
    again = repodata.package_record(
        package, sha256=info.sha256, md5="0" * 32, size=info.size, indexed_timestamp=1
    )
    assert record == again
    assert record["run_exports"] == {"weak": ["rx >=1.0"]}
    assert (record["name"], record["sha256"], record["size"]) == ("rx", info.sha256, info.size)


def test_run_exports_that_are_no_lists_of_specs_are_refused(tmp_path: Path) -> None:
    package = build_raw_conda(
        tmp_path,
        "badrx-1.0-0",
        [*info_members("badrx"), ("info/run_exports.json", b'{"weak": "rx"}')],
        payload_members("badrx"),
    )
    with pytest.raises(Rejected, match="run_exports.json: 'weak' must be a list of strings"):
        inspect_package(package, ["noarch"])


def test_the_host_configuration_sets_the_limit() -> None:
    base = {"channels_root": "/srv/c", "state_dir": "/var/lib/c"}
    assert parse(base).package_max_unpacked_size == DEFAULT_MAX_UNPACKED_SIZE == 8 << 30
    assert parse({**base, "package_max_unpacked_size": 1024}).package_max_unpacked_size == 1024
    for bad in (0, -1, "8G", True):
        with pytest.raises(ConfigError, match="package_max_unpacked_size"):
            parse({**base, "package_max_unpacked_size": bad})
