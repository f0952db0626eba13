"""Reading and validating conda package files before they may enter a channel.

Every check here exists because a conda tool fails badly without it: rattler's index
panics on a truncated .conda, conda-index writes no repodata for a whole subdir when one
renamed .conda's inner names disagree with its file name, and clients trust index.json.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

SUFFIXES = (".conda", ".tar.bz2")
_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\]")
# conda's rules for the parts of a package file name (name-version-build): a lowercase
# name, and a build string without '-' (the version is checked by rattler's parser).
PACKAGE_NAME = re.compile(r"^[a-z0-9_][a-z0-9_.-]*$")
BUILD_STRING = re.compile(r"^[A-Za-z0-9_.+]+$")
# The shared role's condaport_subdir_pattern: a subdir becomes a folder name.
SUBDIR = re.compile(r"^[a-z0-9_]+(-[a-z0-9_]+)?$")


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


# Metadata files are small; a bigger one is hostile (or broken) and is not read into memory.
_MAX_METADATA_BYTES = 64 << 20


def _shown(value: object) -> str:
    """An uploader's value, quoted, ASCII-only and cut short, safe to put in a message
    (single quotes: the play shows messages JSON-encoded, which would escape double ones)."""
    text = ascii(value)
    return text if len(text) <= 120 else text[:117] + "..."


def inside(root: Path, relative: object, listed_in: str) -> Path:
    """The path a package's metadata names, checked to stay inside the extracted package.

    Every folder on the way is checked with lstat and must be a real folder, never a
    symbolic link, so nothing outside `root` is ever reached; the last component is
    returned unresolved (callers lstat it themselves). The refusals name only the
    uploader's own string: nothing about the host.
    """
    if not isinstance(relative, str) or not relative:
        raise Rejected(f"{listed_in} has an entry that is not a path")
    shown = _shown(relative)
    if "\x00" in relative:
        raise Rejected(f"{listed_in} lists {shown}, a path with a NUL character")
    if relative.startswith("/"):
        raise Rejected(
            f"{listed_in} lists {shown}, an absolute path: a package names only its own files"
        )
    parts = relative.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise Rejected(
            f"{listed_in} lists {shown}, a path with empty, '.' or '..' components"
            " that could leave the package"
        )
    current = root
    for depth, part in enumerate(parts[:-1], start=1):
        current = current / part
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            raise Rejected(f"payload file {shown} listed in {listed_in} is missing") from None
        if stat.S_ISLNK(mode):
            raise Rejected(
                f"{listed_in} lists {shown}, a path through the symbolic link"
                f" {_shown('/'.join(parts[:depth]))}: links are never followed"
            )
        if not stat.S_ISDIR(mode):
            raise Rejected(f"{listed_in} lists {shown}, whose parent is not a folder")
    return current / parts[-1]


def _open_regular(path: Path, shown: str) -> int:
    """A read descriptor for a regular file, never through a link, never blocking (FIFOs)."""
    try:
        before = os.lstat(path)
    except FileNotFoundError:
        raise Rejected(f"{shown} is missing") from None
    if stat.S_ISLNK(before.st_mode):
        raise Rejected(f"{shown} is a symbolic link where a file belongs")
    if not stat.S_ISREG(before.st_mode):
        raise Rejected(f"{shown} is not a regular file")
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped between lstat and open
        os.close(fd)
        raise Rejected(f"{shown} is not a regular file")
    return fd


def _read_metadata(root: Path, relative: str) -> bytes | None:
    """One info/ file of the extracted package, or None when the package has none."""
    target = inside(root, relative, "the package")
    if not os.path.lexists(target):
        return None
    fd = _open_regular(target, relative)
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(_MAX_METADATA_BYTES + 1)
    if len(data) > _MAX_METADATA_BYTES:
        raise Rejected(f"{relative} is larger than {_MAX_METADATA_BYTES >> 20} MiB")
    return data


def _read_json(root: Path, relative: str) -> dict | None:
    data = _read_metadata(root, relative)
    if data is None:
        return None
    try:
        parsed = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise Rejected(f"{relative} is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise Rejected(f"{relative} is not a JSON object")
    return parsed


def _hash_regular(path: Path, shown: str) -> tuple[int, str]:
    fd = _open_regular(path, shown)
    digest, size = hashlib.sha256(), 0
    with os.fdopen(fd, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


def _check_paths_entry(root: Path, entry: object) -> None:
    if not isinstance(entry, dict):
        raise Rejected("info/paths.json has an entry that is not an object")
    relative = entry.get("_path")
    target = inside(root, relative, "info/paths.json")
    shown = f"payload file {_shown(relative)}"
    try:
        mode = os.lstat(target).st_mode
    except FileNotFoundError:
        raise Rejected(f"{shown} listed in info/paths.json is missing") from None
    path_type = entry.get("path_type", "hardlink")
    if path_type == "softlink":
        return  # a link is installed as a link; its target is never read here
    if path_type == "directory":
        if not stat.S_ISDIR(mode):
            raise Rejected(f"{shown} is listed as a folder but is none")
        return
    if stat.S_ISLNK(mode):
        raise Rejected(f"{shown} is a symbolic link, but info/paths.json lists it as a file")
    if not stat.S_ISREG(mode):
        raise Rejected(f"{shown} is not a regular file")
    expected_size, expected_sha = entry.get("size_in_bytes"), entry.get("sha256")
    if expected_size is not None and (
        isinstance(expected_size, bool) or not isinstance(expected_size, int)
    ):
        raise Rejected(f"{shown}: size_in_bytes in info/paths.json is not a number")
    if expected_sha is not None and not isinstance(expected_sha, str):
        raise Rejected(f"{shown}: sha256 in info/paths.json is not a string")
    if expected_size is None and not expected_sha:
        return
    size, sha = _hash_regular(target, shown)
    if expected_size is not None and size != expected_size:
        raise Rejected(f"{shown} has the wrong size")
    if expected_sha and sha != expected_sha.lower():
        raise Rejected(f"{shown} fails its sha256 check")


def _check_payload(root: Path) -> None:
    """Every file info/paths.json (or, in old packages, info/files) promises is in the
    package, with its size and sha256; no entry may name anything outside the package."""
    paths_json = _read_json(root, "info/paths.json")
    if paths_json is not None:
        entries = paths_json.get("paths", [])
        if not isinstance(entries, list):
            raise Rejected("info/paths.json: paths is not a list")
        for entry in entries:
            _check_paths_entry(root, entry)
        return
    files = _read_metadata(root, "info/files")
    if files is None:
        return
    try:
        lines = files.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise Rejected("info/files is not UTF-8 text") from None
    for relative in lines:
        if relative:
            target = inside(root, relative, "info/files")
            if not os.path.lexists(target):
                raise Rejected(f"payload file {_shown(relative)} listed in info/files is missing")


@dataclass(frozen=True)
class IndexFacts:
    """What a valid info/index.json says, as conda tools will read it."""

    name: str
    version: str
    build: str
    subdir: str


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _check_specs(index: dict, field: str) -> None:
    specs = index.get(field, [])
    if specs is None:
        return
    if not isinstance(specs, list) or not all(isinstance(s, str) for s in specs):
        raise Rejected(f"info/index.json: {field} must be a list of strings")
    from rattler import MatchSpec

    for spec in specs:
        try:
            # Lenient, as rattler's indexer and clients parse repodata.
            MatchSpec(spec)
        except Exception as exc:
            raise Rejected(
                f"info/index.json: {field} entry {_shown(spec)} is not a valid match spec"
                f" ({_first_line(exc)})"
            ) from None


def check_index_json(raw: bytes, stem: str | None = None) -> IndexFacts:
    """Validate info/index.json as the indexer and conda clients read it.

    rattler's indexer fails a whole subdir on one record it cannot parse (and the subdir's
    repodata then stays stale), so every field is checked with rattler's own parser
    (IndexJson, Version, MatchSpec), plus conda's rules for the parts of the file name:
    lowercase names, versions and build strings without '-', subdirs that are plain names.
    With `stem`, the record must describe that file name.
    """
    try:
        index = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise Rejected(f"info/index.json is not valid JSON: {exc}") from None
    if not isinstance(index, dict):
        raise Rejected("info/index.json is not a JSON object")
    name, version, build = (index.get(k) for k in ("name", "version", "build"))
    if not all(isinstance(v, str) and v for v in (name, version, build)):
        raise Rejected("info/index.json lacks name, version or build (as strings)")
    if not PACKAGE_NAME.match(name):
        raise Rejected(
            f"info/index.json: name {_shown(name)} is not a conda package name"
            " (lowercase letters, digits, '_', '.', '-')"
        )
    if "-" in version:
        raise Rejected(f"info/index.json: version {_shown(version)} contains '-'")
    from rattler import Version

    try:
        Version(version)
    except Exception as exc:
        raise Rejected(
            f"info/index.json: version {_shown(version)} is not a conda version"
            f" ({_first_line(exc)})"
        ) from None
    if not BUILD_STRING.match(build):
        raise Rejected(
            f"info/index.json: build string {_shown(build)} may hold only letters, digits,"
            " '_', '.' and '+'"
        )
    number = index.get("build_number", 0)
    if isinstance(number, bool) or not isinstance(number, int) or number < 0:
        raise Rejected(
            f"info/index.json: build_number {_shown(number)} is not a non-negative integer"
        )
    for field in ("depends", "constrains"):
        _check_specs(index, field)
    for field in ("license", "license_family"):
        if index.get(field) is not None and not isinstance(index[field], str):
            raise Rejected(f"info/index.json: {field} must be a string")
    subdir = index.get("subdir")
    if not subdir:
        raise Rejected("info/index.json names no subdir")
    if not isinstance(subdir, str) or not SUBDIR.match(subdir):
        raise Rejected(
            f"info/index.json: subdir {_shown(subdir)} is not a subdir name (like linux-64)"
        )
    from rattler.package import IndexJson

    try:
        # The indexer's own parser, for every field not checked above.
        IndexJson.from_str(raw.decode("utf-8"))
    except Exception as exc:
        raise Rejected(
            f"info/index.json is not a record conda tools can read ({_first_line(exc)})"
        ) from None
    if stem is not None and f"{name}-{version}-{build}" != stem:
        raise Rejected(
            f"info/index.json describes {name}-{version}-{build}, not {stem} (a renamed package?)"
        )
    return IndexFacts(name, version, build, subdir)


def read_index_json(path: Path) -> bytes:
    """info/index.json straight from an archive, without extracting it (cheap: the indexer
    reads no more). Links inside the archive are never followed."""
    import asyncio

    from rattler.package_streaming import PackageArchive

    async def _read() -> bytes | None:
        archive = await PackageArchive.from_path(path)
        return await archive.read_file("info/index.json")

    try:
        data = asyncio.run(_read())
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # rattler panics surface as BaseException
        raise Rejected(
            f"cannot read info/index.json from the archive: {_first_line(exc)}"
        ) from None
    if data is None:
        raise Rejected("archive has no info/index.json")
    return data


def check_archive_index(path: Path) -> IndexFacts:
    """The index.json check of a file already in a channel (what the indexer will read)."""
    stem, _ = split_name(path.name)
    return check_index_json(read_index_json(path), stem)


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
        raw = _read_metadata(scratch, "info/index.json")
        if raw is None:
            raise Rejected("package has no info/index.json")
        facts = check_index_json(raw, stem)
        if allowed_subdirs is not None and facts.subdir not in allowed_subdirs:
            raise Rejected(
                f"subdir {facts.subdir!r} is not served by this channel"
                f" (it serves {', '.join(allowed_subdirs)})"
            )
        _check_payload(scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return PackageInfo(
        filename, facts.name, facts.version, facts.build, facts.subdir, sha256_of(path), size
    )
