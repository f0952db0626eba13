"""Reading and validating conda package files before they may enter a channel.

Every check here exists because a conda tool fails badly without it: rattler's index
panics on a truncated .conda, conda-index writes no repodata for a whole subdir when one
renamed .conda's inner names disagree with its file name, and clients trust index.json.
"""

from __future__ import annotations

import bz2
import dataclasses
import errno
import hashlib
import json
import os
import re
import shutil
import stat
import struct
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import zstandard

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
    # The validated info/ bytes, so the repodata record describes exactly what was checked.
    index_json: bytes = dataclasses.field(default=b"", repr=False, compare=False)
    run_exports_json: bytes | None = dataclasses.field(default=None, repr=False, compare=False)


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


# Limits on what one package may unpack to. Each tar header is checked before its data
# is read, so a bomb is refused before it writes; the bytes really read and written are
# counted as well, since a header can lie (sparse members, streams longer than promised).
DEFAULT_MAX_UNPACKED_SIZE = 8 << 30
DEFAULT_MAX_MEMBERS = 250_000
# Metadata files are small; a bigger one is hostile (or broken) and is never read whole.
MAX_METADATA_BYTES = 16 << 20
# pax and GNU long-name headers, which tarfile reads whole into memory before the member.
_MAX_HEADER_EXTENSION_BYTES = 1 << 20
# Member names: a file system takes no longer path; all of them together are kept in
# memory while a package is walked, so their total is bounded too.
_MAX_NAME_BYTES = 4096
_MAX_NAMES_BYTES = 64 << 20
# Tar headers and padding around the members' data: at most this much per member.
_TAR_OVERHEAD_PER_MEMBER = 2048
_METADATA_FILES = frozenset(
    {"info/index.json", "info/paths.json", "info/files", "info/run_exports.json"}
)
_LOCAL_HEADER = b"PK\x03\x04"
# A zip data descriptor after an entry's data: 12 to 24 bytes (signature, zip64).
_DATA_DESCRIPTOR_SLACK = 24


class TooLarge(Rejected):
    """A package that would unpack to more bytes or files than the host allows (HTTP 413,
    where other refusals are 422: the uploader may send it to a host with a larger limit)."""

    http_status = 413


@dataclass(frozen=True)
class Limits:
    """How much one package may unpack to; the host's condaport.json sets unpacked_size."""

    unpacked_size: int = DEFAULT_MAX_UNPACKED_SIZE
    members: int = DEFAULT_MAX_MEMBERS


def _size_text(size: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift} {unit}"
    return f"{size} bytes"


def _too_large(limits: Limits) -> TooLarge:
    return TooLarge(
        f"the package unpacks to more than {_size_text(limits.unpacked_size)}"
        " (this host's limit; a compression bomb?)"
    )


class _BoundedTarInfo(tarfile.TarInfo):
    """tarfile reads a pax or GNU long-name header whole into memory before the member it
    describes: its size is checked first, so a 1 GiB header is never read."""

    def _proc_member(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        extensions = (
            tarfile.GNUTYPE_LONGNAME,
            tarfile.GNUTYPE_LONGLINK,
            tarfile.XHDTYPE,
            tarfile.XGLTYPE,
            tarfile.SOLARIS_XHDTYPE,
        )
        if self.type in extensions and self.size > _MAX_HEADER_EXTENSION_BYTES:
            raise Rejected(
                f"a tar header extension of {self.size} bytes (more than"
                f" {_size_text(_MAX_HEADER_EXTENSION_BYTES)}): a hostile or broken archive"
            )
        return super()._proc_member(tarfile_)


class _CountedStream:
    """The decompressed bytes of an archive, refused once they pass the budget."""

    def __init__(self, raw: BinaryIO, tally: list[int], budget: int, limits: Limits) -> None:
        self._raw, self._tally, self._budget, self._limits = raw, tally, budget, limits

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size if size >= 0 else 1 << 20)
        self._tally[0] += len(data)
        if self._tally[0] > self._budget:
            raise _too_large(self._limits)
        return data


class _OneBzip2Stream:
    """A .tar.bz2's decompressed bytes, from its one bzip2 stream. rattler reads only the
    first stream of a file, Python's bz2 every one: a file of several streams would show
    each tool other members, so anything after the first stream is refused."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self._decompressor = bz2.BZ2Decompressor()

    def read(self, size: int = -1) -> bytes:
        wanted = size if size > 0 else 1 << 20
        while not self._decompressor.eof:
            chunk = b""
            if self._decompressor.needs_input:
                chunk = self._handle.read(1 << 16)
                if not chunk:
                    raise EOFError("the file ends inside its bzip2 stream")
            data = self._decompressor.decompress(chunk, max_length=wanted)
            if data:
                return data
        if self._decompressor.unused_data or self._handle.read(1):
            raise Rejected(
                "the .tar.bz2 holds more than one bzip2 stream (or bytes after it):"
                " conda tools disagree on what such a file contains"
            )
        return b""


@contextmanager
def _reading(suffix: str) -> Iterator[None]:
    """Decoding errors of any layer as one refusal saying the archive is broken."""
    try:
        yield
    except Rejected:
        raise
    except (
        tarfile.TarError,
        zipfile.BadZipFile,
        zstandard.ZstdError,
        OSError,
        EOFError,
        ValueError,
    ) as exc:
        if suffix == ".tar.bz2":
            raise Rejected(
                f"not a readable .tar.bz2 archive (truncated or garbage): {_first_line(exc)}"
            ) from None
        raise Rejected(
            f"archive does not decompress (truncated or corrupt): {_first_line(exc)}"
        ) from None


def _walk(
    path: Path, stem: str, suffix: str, limits: Limits
) -> Iterator[tuple[tarfile.TarFile, tarfile.TarInfo]]:
    """Every tar member of the package, streaming: a .tar.bz2's, or a .conda's info then
    pkg inner archives'. Nothing is extracted; the member's data can be read while it is
    the current one. The zip entries' checksums are checked as they are read to the end."""
    tally = [0]
    budget = limits.unpacked_size + _TAR_OVERHEAD_PER_MEMBER * limits.members

    def members(stream: BinaryIO) -> Iterator[tuple[tarfile.TarFile, tarfile.TarInfo]]:
        counted = _CountedStream(stream, tally, budget, limits)
        with tarfile.open(fileobj=counted, mode="r|", tarinfo=_BoundedTarInfo) as archive:
            while (member := archive.next()) is not None:
                archive.members.clear()  # tarfile keeps every header otherwise
                yield archive, member
        while counted.read(1 << 20):  # to the stream's end, counted: it must be whole
            pass

    with _reading(suffix):
        if suffix == ".tar.bz2":
            with path.open("rb") as handle:
                yield from members(_OneBzip2Stream(handle))
            return
        with zipfile.ZipFile(path) as zipped:
            if "metadata.json" in zipped.namelist():
                zipped.read("metadata.json")  # size checked with the container; CRC here
            for inner in (f"info-{stem}.tar.zst", f"pkg-{stem}.tar.zst"):
                with zipped.open(inner) as entry:
                    decompressor = zstandard.ZstdDecompressor()
                    # Across frames, as rattler's zstd reader goes on past a frame's end.
                    with decompressor.stream_reader(
                        entry, closefd=False, read_across_frames=True
                    ) as stream:
                        yield from members(stream)
                    while entry.read(1 << 20):  # the rest of the entry, for its CRC
                        pass


class _Census:
    """The members one walk has seen, refusing whatever two readers could take apart.

    A name seen twice (rattler keeps the last, Python's readers and condaport's old index
    code the first), a name that is not a plain relative path, a member inside a link or
    a file, devices and sparse files are refused; the count and the sizes the headers
    declare are checked before any member's data is read.
    """

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.kinds: dict[str, str] = {}
        self.folders: set[str] = set()
        self.declared = 0
        self.name_bytes = 0

    def admit(self, member: tarfile.TarInfo) -> str:
        name = member.name
        parts = name.split("/")
        if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise Rejected(
                f"archive member {_shown(name)} is not a plain relative path"
                " (absolute, or with empty, '.' or '..' components)"
            )
        if len(name.encode("utf-8", "surrogateescape")) > _MAX_NAME_BYTES:
            raise Rejected(f"archive member {_shown(name)} has a name over {_MAX_NAME_BYTES} bytes")
        if name in self.kinds:
            raise Rejected(
                f"the package holds {_shown(name)} twice (readers disagree on which one counts)"
            )
        if len(self.kinds) >= self.limits.members:
            raise TooLarge(
                f"the package has more than {self.limits.members} members (this host's limit)"
            )
        kind = self._kind(member, name)
        if kind != "folder" and name in self.folders:
            raise Rejected(
                f"archive member {_shown(name)} is a {kind}, but other members lie in it"
            )
        # Deepest first: a folder already known had its own parents checked when it came.
        for depth in range(len(parts) - 1, 0, -1):
            parent = "/".join(parts[:depth])
            if parent in self.folders:
                break
            parent_kind = self.kinds.get(parent, "folder")
            if parent_kind != "folder":
                raise Rejected(
                    f"archive member {_shown(name)} lies inside {_shown(parent)}, a {parent_kind}"
                )
            self._remember(parent)
            self.folders.add(parent)
        self._remember(name)
        self.kinds[name] = kind
        if kind == "file":
            self.declared += member.size
            if self.declared > self.limits.unpacked_size:
                raise _too_large(self.limits)
        return kind

    def _remember(self, name: str) -> None:
        """Names are kept in memory: their total is bounded like the members' count."""
        self.name_bytes += len(name)
        if self.name_bytes > _MAX_NAMES_BYTES:
            raise TooLarge(
                f"the package's member and folder names take more than"
                f" {_size_text(_MAX_NAMES_BYTES)} (a hostile or broken archive)"
            )

    def _kind(self, member: tarfile.TarInfo, name: str) -> str:
        if member.issparse():
            raise Rejected(f"archive member {_shown(name)} is a sparse file (no package has one)")
        if member.isreg():
            return "file"
        if member.isdir():
            return "folder"
        if member.issym():
            return "symbolic link"
        if member.islnk():
            if self.kinds.get(member.linkname) != "file":
                raise Rejected(
                    f"archive member {_shown(name)} is a hard link to"
                    f" {_shown(member.linkname)}, which is no earlier file of the package"
                )
            return "hard link"
        raise Rejected(
            f"archive member {_shown(name)} is a device or FIFO: packages hold files,"
            " folders and links"
        )


def _check_zip_layout(path: Path, entries: list[zipfile.ZipInfo], directory_start: int) -> None:
    """The zip entries fill the file from its first byte to the central directory.

    Readers that walk local headers (streaming extractors, libarchive) would see an entry
    hidden in bytes the central directory does not list; Python's zipfile would not.
    """
    hidden = Rejected("the .conda archive has bytes outside its listed entries (a hidden entry?)")
    position, slack = 0, 0
    with path.open("rb") as handle:
        for entry in sorted(entries, key=lambda e: e.header_offset):
            if not position <= entry.header_offset <= position + slack:
                raise hidden
            handle.seek(entry.header_offset)
            header = handle.read(30)
            if len(header) != 30 or header[:4] != _LOCAL_HEADER:
                raise hidden
            name_length, extra_length = struct.unpack("<HH", header[26:30])
            position = entry.header_offset + 30 + name_length + extra_length + entry.compress_size
            slack = _DATA_DESCRIPTOR_SLACK if entry.flag_bits & 0x08 else 0
    if not position <= directory_start <= position + slack:
        raise hidden


def _check_conda_container(path: Path, stem: str, limits: Limits) -> None:
    """Exactly the entries conda writes, each once, and nothing else in the file."""
    if not zipfile.is_zipfile(path):
        raise Rejected("not a valid .conda archive (no zip structure: truncated or garbage)")
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
            directory_start = archive.start_dir
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise Rejected(f"unreadable .conda archive: {exc}") from None
    names = [entry.filename for entry in entries]
    inner = {f"info-{stem}.tar.zst", f"pkg-{stem}.tar.zst"}
    if not inner <= set(names):
        found = sorted(n for n in set(names) if n.endswith(".tar.zst"))
        raise Rejected(f"inner archives {found} do not match the file name (a renamed package?)")
    for name in names:
        if name not in inner and name != "metadata.json":
            raise Rejected(
                f"the .conda archive holds an unexpected entry {_shown(name)} (only"
                f" metadata.json, info-{stem}.tar.zst and pkg-{stem}.tar.zst belong in it)"
            )
    for name in set(names):
        if names.count(name) > 1:
            raise Rejected(
                f"the .conda archive holds {_shown(name)} twice"
                " (readers disagree on which one counts)"
            )
    for entry in entries:
        if entry.filename == "metadata.json" and entry.file_size > MAX_METADATA_BYTES:
            raise Rejected(f"metadata.json is larger than {_size_text(MAX_METADATA_BYTES)}")
        if entry.file_size > limits.unpacked_size:
            raise _too_large(limits)
    _check_zip_layout(path, entries, directory_start)


def _take_metadata(
    archive: tarfile.TarFile, member: tarfile.TarInfo, kind: str, found: dict[str, bytes]
) -> None:
    """Keep the bytes of an info/ file the channel reads (bounded: never a big one)."""
    name = member.name
    if kind == "symbolic link":
        raise Rejected(f"{name} is a symbolic link where a file belongs")
    if kind != "file":
        raise Rejected(f"{name} is not a regular file")
    if member.size > MAX_METADATA_BYTES:
        raise Rejected(f"{name} is larger than {_size_text(MAX_METADATA_BYTES)}")
    handle = archive.extractfile(member)
    data = handle.read(member.size + 1) if handle is not None else b""
    if len(data) != member.size:
        raise Rejected(f"{name} is cut short in the archive")
    found[name] = data


def _container(path: Path, limits: Limits) -> tuple[str, str]:
    """(stem, suffix) of a regular, non-empty package file whose outer layer is sound."""
    stem, suffix = split_name(path.name)
    if not path.is_file() or path.is_symlink():
        raise Rejected("not a regular file")
    if path.stat().st_size == 0:
        raise Rejected("empty file (zero bytes)")
    if suffix == ".conda":
        _check_conda_container(path, stem, limits)
    return stem, suffix


def _survey(path: Path, stem: str, suffix: str, limits: Limits) -> dict[str, bytes]:
    """Walk every member's header without extracting anything; return the info/ files
    the channel reads. Proves every stream decompresses, within the limits."""
    census = _Census(limits)
    found: dict[str, bytes] = {}
    for archive, member in _walk(path, stem, suffix, limits):
        kind = census.admit(member)
        if member.name in _METADATA_FILES:
            with _reading(suffix):
                _take_metadata(archive, member, kind, found)
    return found


def package_metadata(path: Path, limits: Limits | None = None) -> dict[str, bytes]:
    """The info/ files (index.json, paths.json, files, run_exports.json) of a package, as
    validation reads them: from the archive, with every member checked, nothing written."""
    limits = limits or Limits()
    stem, suffix = _container(path, limits)
    return _survey(path, stem, suffix, limits)


def _extract(path: Path, stem: str, suffix: str, limits: Limits, dest: Path) -> None:
    """Unpack the package into `dest`, counting the bytes written against the limit.

    Members go only where the census allows (never through a link: no member lies inside
    one), files are created new and never through a link, and tar modes are ignored.
    """
    census = _Census(limits)
    written = [0]
    for archive, member in _walk(path, stem, suffix, limits):
        kind = census.admit(member)
        try:
            _place(archive, member, kind, dest, suffix, limits, written)
        except OSError as exc:
            if exc.errno not in (errno.ENAMETOOLONG, errno.EILSEQ):
                raise  # the host's trouble (a full disk), not the package's
            raise Rejected(
                f"archive member {_shown(member.name)} cannot be unpacked: {exc.strerror}"
            ) from None


def _place(
    archive: tarfile.TarFile,
    member: tarfile.TarInfo,
    kind: str,
    dest: Path,
    suffix: str,
    limits: Limits,
    written: list[int],
) -> None:
    target = dest / member.name
    if kind == "folder":
        target.mkdir(parents=True, exist_ok=True)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    if kind == "symbolic link":
        os.symlink(member.linkname, target)
        return
    if kind == "hard link":
        os.link(dest / member.linkname, target, follow_symlinks=False)
        return
    source = archive.extractfile(member)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    with os.fdopen(os.open(target, flags, 0o600), "wb") as out:
        while True:
            with _reading(suffix):
                block = source.read(1 << 20) if source is not None else b""
            if not block:
                return
            written[0] += len(block)
            if written[0] > limits.unpacked_size:
                raise _too_large(limits)
            out.write(block)


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


def _parse_json(data: bytes, relative: str) -> dict:
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


def _check_payload(root: Path, metadata: dict[str, bytes]) -> None:
    """Every file info/paths.json (or, in old packages, info/files) promises is in the
    package, with its size and sha256; no entry may name anything outside the package.
    The lists are the bytes the census read, not files re-read from the extracted tree."""
    if "info/paths.json" in metadata:
        paths_json = _parse_json(metadata["info/paths.json"], "info/paths.json")
        entries = paths_json.get("paths", [])
        if not isinstance(entries, list):
            raise Rejected("info/paths.json: paths is not a list")
        for entry in entries:
            _check_paths_entry(root, entry)
        return
    files = metadata.get("info/files")
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


# Archives read at once when many are screened. One event loop for all of them, not one
# per file: screening 10,000 small packages took 8.0 s one at a time, 4.5 s so (about the
# same from 2 to 256 at once on 2 cores; a few keep memory bounded with large packages,
# which rattler streams).
_READ_AT_ONCE = 8


def read_index_jsons(paths: list[Path]) -> list[bytes | Rejected]:
    """info/index.json of each archive, read concurrently, or why it cannot be read."""
    import asyncio

    from rattler.package_streaming import PackageArchive

    async def _read_all() -> list[bytes | None | BaseException]:
        gate = asyncio.Semaphore(_READ_AT_ONCE)

        async def _read(path: Path) -> bytes | None:
            async with gate:
                archive = await PackageArchive.from_path(path)
                return await archive.read_file("info/index.json")

        return await asyncio.gather(*(_read(p) for p in paths), return_exceptions=True)

    results: list[bytes | Rejected] = []
    for data in asyncio.run(_read_all()):
        if isinstance(data, (KeyboardInterrupt, SystemExit)):
            raise data
        if isinstance(data, BaseException):  # rattler panics surface as BaseException
            results.append(
                Rejected(f"cannot read info/index.json from the archive: {_first_line(data)}")
            )
        elif data is None:
            results.append(Rejected("archive has no info/index.json"))
        else:
            results.append(data)
    return results


def read_index_json(path: Path) -> bytes:
    """info/index.json straight from an archive, without extracting it (cheap: the indexer
    reads no more). Links inside the archive are never followed."""
    (data,) = read_index_jsons([path])
    if isinstance(data, Rejected):
        raise data
    return data


def check_archive_index(path: Path) -> IndexFacts:
    """The index.json check of a file already in a channel (what the indexer will read)."""
    (facts,) = check_archive_indexes([path])
    if isinstance(facts, Rejected):
        raise facts
    return facts


def check_archive_indexes(paths: list[Path]) -> list[IndexFacts | Rejected]:
    """`check_archive_index` of many files at once: each one's facts, or its refusal."""
    results: list[IndexFacts | Rejected] = []
    for start in range(0, len(paths), _CHECKED_PER_LOOP):  # index.json bytes held per chunk
        results += _check_archive_chunk(paths[start : start + _CHECKED_PER_LOOP])
    return results


_CHECKED_PER_LOOP = 1000


def _check_archive_chunk(paths: list[Path]) -> list[IndexFacts | Rejected]:
    stems: list[str | Rejected] = []
    for path in paths:
        try:
            stems.append(split_name(path.name)[0])
        except Rejected as exc:
            stems.append(exc)
    named = [path for path, stem in zip(paths, stems, strict=True) if isinstance(stem, str)]
    read = iter(read_index_jsons(named))
    results: list[IndexFacts | Rejected] = []
    for stem in stems:
        data = stem if isinstance(stem, Rejected) else next(read)
        if isinstance(data, Rejected):
            results.append(data)
            continue
        try:
            results.append(check_index_json(data, stem))  # type: ignore[arg-type]
        except Rejected as exc:
            results.append(exc)
    return results


def _check_run_exports(raw: bytes) -> None:
    """info/run_exports.json goes into the repodata record: lists of match specs only."""
    exports = _parse_json(raw, "info/run_exports.json")
    for key, specs in exports.items():
        if not isinstance(specs, list) or not all(isinstance(s, str) for s in specs):
            raise Rejected(f"info/run_exports.json: {_shown(key)} must be a list of strings")


def inspect_package(
    path: Path,
    allowed_subdirs: list[str] | None = None,
    *,
    scratch_dir: Path | None = None,
    limits: Limits | None = None,
) -> PackageInfo:
    """Validate one package file and return what the channel needs to know about it.

    The members are walked first without writing anything (names, counts, declared
    sizes, the info/ files), so a bomb or a bad record is refused before any extraction;
    then the package is extracted into a scratch folder under `scratch_dir` (None: the
    system's temporary folder; the upload service puts it on the staging filesystem) to
    check the payload. The info/ bytes checked here are returned for the repodata record.
    """
    limits = limits or Limits()
    filename = path.name
    stem, suffix = _container(path, limits)
    size = path.stat().st_size
    metadata = _survey(path, stem, suffix, limits)
    raw = metadata.get("info/index.json")
    if raw is None:
        raise Rejected("package has no info/index.json")
    facts = check_index_json(raw, stem)
    if allowed_subdirs is not None and facts.subdir not in allowed_subdirs:
        raise Rejected(
            f"subdir {facts.subdir!r} is not served by this channel"
            f" (it serves {', '.join(allowed_subdirs)})"
        )
    run_exports = metadata.get("info/run_exports.json")
    if run_exports is not None:
        _check_run_exports(run_exports)
    scratch = Path(tempfile.mkdtemp(prefix=".condaport-inspect-", dir=scratch_dir))
    try:
        _extract(path, stem, suffix, limits, scratch)
        _check_payload(scratch, metadata)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return PackageInfo(
        filename,
        facts.name,
        facts.version,
        facts.build,
        facts.subdir,
        sha256_of(path),
        size,
        index_json=raw,
        run_exports_json=run_exports,
    )
