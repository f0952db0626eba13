"""Reading and validating conda package files before they may enter a channel.

Every check here exists because a conda tool fails badly without it: rattler's index
panics on a truncated .conda, conda-index writes no repodata for a whole subdir when one
renamed .conda's inner names disagree with its file name, and clients trust index.json.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

SUFFIXES = (".conda", ".tar.bz2")
_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\]")


class Rejected(ValueError):
    """A file that must not enter the channel; the message says why, in plain words."""


@dataclass(frozen=True)
class PackageInfo:
    filename: str
    name: str
    version: str
    build: str
    subdir: str
    sha256: str
    size: int


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def split_name(filename: str) -> tuple[str, str]:
    """(stem, suffix) of a package file name, or Rejected for anything else."""
    if _UNSAFE.search(filename) or filename in ("", ".", "..") or filename.startswith("."):
        raise Rejected("file name has path separators, control characters or a leading dot")
    for suffix in SUFFIXES:
        if filename.endswith(suffix) and len(filename) > len(suffix):
            return filename[: -len(suffix)], suffix
    raise Rejected("not a conda package: the name does not end in .conda or .tar.bz2")


def is_package_name(filename: str) -> bool:
    try:
        split_name(filename)
    except Rejected:
        return False
    return True


def _check_conda_container(path: Path, stem: str) -> None:
    if not zipfile.is_zipfile(path):
        raise Rejected("not a valid .conda archive (no zip structure: truncated or garbage)")
    try:
        with zipfile.ZipFile(path) as archive:
            members = set(archive.namelist())
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise Rejected(f"unreadable .conda archive: {exc}") from None
    if bad is not None:
        raise Rejected(f"corrupt member {bad} inside the .conda archive")
    expected = {f"info-{stem}.tar.zst", f"pkg-{stem}.tar.zst"}
    if not expected <= members:
        inner = sorted(m for m in members if m.endswith(".tar.zst"))
        raise Rejected(f"inner archives {inner} do not match the file name (a renamed package?)")


def _check_tar_bz2_container(path: Path) -> None:
    try:
        with tarfile.open(path, mode="r:bz2") as archive:
            names = archive.getnames()  # reads the whole stream: catches truncation
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise Rejected(f"not a readable .tar.bz2 archive (truncated or garbage): {exc}") from None
    if "info/index.json" not in names:
        raise Rejected("archive has no info/index.json")


def _extract(path: Path, dest: Path) -> None:
    """Fully decompress the package, which proves every inner stream is whole."""
    from rattler.package_streaming import extract

    try:
        extract(path, dest)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # rattler panics surface as BaseException
        raise Rejected(f"archive does not decompress (truncated or corrupt): {exc}") from None


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise Rejected(f"package has no {what}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise Rejected(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise Rejected(f"{what} is not a JSON object")
    return data


def _check_payload(root: Path) -> None:
    """Every file info/paths.json promises exists with its size and sha256."""
    paths_json = root / "info" / "paths.json"
    if paths_json.exists():
        entries = _read_json(paths_json, "info/paths.json").get("paths", [])
        for entry in entries:
            relative = entry.get("_path", "")
            target = root / relative
            if entry.get("path_type") == "softlink" or target.is_symlink():
                continue
            if not target.is_file():
                raise Rejected(f"payload file {relative} listed in info/paths.json is missing")
            size = entry.get("size_in_bytes")
            if size is not None and target.stat().st_size != size:
                raise Rejected(f"payload file {relative} has the wrong size")
            expected = entry.get("sha256")
            if expected and sha256_of(target) != expected:
                raise Rejected(f"payload file {relative} fails its sha256 check")
        return
    files = root / "info" / "files"
    if files.exists():
        for relative in files.read_text(encoding="utf-8").splitlines():
            if relative and not (root / relative).exists() and not (root / relative).is_symlink():
                raise Rejected(f"payload file {relative} listed in info/files is missing")


def inspect_package(path: Path, allowed_subdirs: list[str] | None = None) -> PackageInfo:
    """Validate one package file and return what the channel needs to know about it."""
    filename = path.name
    stem, suffix = split_name(filename)
    if not path.is_file() or path.is_symlink():
        raise Rejected("not a regular file")
    size = path.stat().st_size
    if size == 0:
        raise Rejected("empty file (zero bytes)")
    if suffix == ".conda":
        _check_conda_container(path, stem)
    else:
        _check_tar_bz2_container(path)
    scratch = Path(tempfile.mkdtemp(prefix=".condaport-inspect-"))
    try:
        _extract(path, scratch)
        index = _read_json(scratch / "info" / "index.json", "info/index.json")
        name, version, build = (str(index.get(k, "")) for k in ("name", "version", "build"))
        if not (name and version and build):
            raise Rejected("info/index.json lacks name, version or build")
        if f"{name}-{version}-{build}" != stem:
            raise Rejected(
                f"info/index.json describes {name}-{version}-{build}, not {stem}"
                " (a renamed package?)"
            )
        subdir = str(index.get("subdir", ""))
        if not subdir:
            raise Rejected("info/index.json names no subdir")
        if allowed_subdirs is not None and subdir not in allowed_subdirs:
            raise Rejected(
                f"subdir {subdir!r} is not served by this channel"
                f" (it serves {', '.join(allowed_subdirs)})"
            )
        _check_payload(scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return PackageInfo(filename, name, version, build, subdir, sha256_of(path), size)
