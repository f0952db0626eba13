"""Build small conda packages offline, good ones and deliberately broken ones.

`.tar.bz2` packages are written with tarfile; `.conda` packages with rattler-build's
`assemble_package`, the real writer, so validation is tested against genuine archives.
"""

from __future__ import annotations

import bz2
import hashlib
import io
import json
import os
import tarfile
import tempfile
import time
import warnings
import zipfile
from pathlib import Path

import rattler_build
import zstandard


def _index(name: str, version: str, build: str, subdir: str) -> dict:
    return {
        "name": name,
        "version": version,
        "build": build,
        "build_number": 0,
        "depends": [],
        "subdir": subdir,
        **({"noarch": "generic"} if subdir == "noarch" else {"arch": None, "platform": None}),
        "timestamp": int(time.time() * 1000),
    }


def _payload(name: str, salt: str = "") -> dict[str, bytes]:
    return {f"share/{name}/data.txt": f"payload of {name}{salt}\n".encode()}


def _member(name: str, data: bytes | None = None, *, link: str | None = None) -> tuple:
    info = tarfile.TarInfo(name)
    info.mtime = 0
    if link is not None:
        info.type, info.linkname = tarfile.SYMTYPE, link
        return info, None
    info.size = len(data or b"")
    return info, io.BytesIO(data or b"")


def build_tar_bz2(
    dest: Path,
    name: str,
    version: str = "1.0",
    build: str = "0",
    subdir: str = "noarch",
    *,
    index_overrides: dict | None = None,
    drop_payload: bool = False,
    salt: str = "",
    extra_paths: list[dict] | None = None,
    symlinks: dict[str, str] | None = None,
    info_links: dict[str, str] | None = None,
    paths_json: bool = True,
    extra_files: list[str] | None = None,
) -> Path:
    """A .tar.bz2 with info/index.json, info/paths.json, info/files and one data file.

    For hostile packages: `index_overrides` replaces index.json fields (any JSON value);
    `extra_paths` appends raw info/paths.json entries; `symlinks` adds payload links
    (member -> target) listed as softlinks; `info_links` replaces info/ files by links;
    `paths_json=False` leaves the package with info/files only, `extra_files` appends
    raw lines to it; `salt` changes the payload bytes (not their length).
    """
    dest.mkdir(parents=True, exist_ok=True)
    payload = _payload(name, salt)
    entries: list[dict] = [
        {
            "_path": p,
            "path_type": "hardlink",
            "sha256": hashlib.sha256(data).hexdigest(),
            "size_in_bytes": len(data),
        }
        for p, data in payload.items()
    ]
    entries += [{"_path": link, "path_type": "softlink"} for link in symlinks or {}]
    entries += extra_paths or []
    index = {**_index(name, version, build, subdir), **(index_overrides or {})}
    files = [str(e["_path"]) for e in entries] + list(extra_files or [])
    members = [
        _member("info/index.json", json.dumps(index).encode()),
        _member("info/files", "".join(f"{f}\n" for f in files).encode()),
    ]
    if paths_json:
        members.append(
            _member("info/paths.json", json.dumps({"paths": entries, "paths_version": 1}).encode())
        )
    links = info_links or {}
    members = [m for m in members if m[0].name not in links]
    members += [_member(member, link=target) for member, target in links.items()]
    members += [_member(link, link=target) for link, target in (symlinks or {}).items()]
    if not drop_payload:
        members += [_member(p, data) for p, data in payload.items()]
    target = dest / f"{name}-{version}-{build}.tar.bz2"
    with tarfile.open(target, "w:bz2") as archive:
        for info, data in members:
            archive.addfile(info, data)
    return target


def build_same_size_twins(folder: Path, name: str) -> tuple[Path, Path]:
    """Two builds of one file name, of equal size and different bytes (in folder/a, /b):
    an overwrite that a size-and-mtime check cannot see."""
    same = {"timestamp": 1700000000000}  # the build time would change the size too
    first = build_tar_bz2(folder / "a", name, salt="A", index_overrides=same)
    # bzip2's output size moves by a few bytes with the content: some salt hits the first
    # one's size, though for some names only after a few dozen tries.
    for attempt in range(500):
        second = build_tar_bz2(folder / "b", name, salt=f"B{attempt}", index_overrides=same)
        if second.stat().st_size == first.stat().st_size:
            return first, second
    raise RuntimeError(f"no build of {name} with the size of the first")


def build_large_tar_bz2(folder: Path, size: int, name: str = "blob") -> Path:
    """A valid package whose payload is `size` random (incompressible) bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    data = os.urandom(size)
    entry = {
        "_path": "share/blob.bin",
        "path_type": "hardlink",
        "sha256": hashlib.sha256(data).hexdigest(),
        "size_in_bytes": size,
    }
    members = [
        _member("info/index.json", json.dumps(_index(name, "1.0", "0", "noarch")).encode()),
        _member("info/paths.json", json.dumps({"paths": [entry], "paths_version": 1}).encode()),
        _member("info/files", b"share/blob.bin\n"),
        _member("share/blob.bin", data),
    ]
    target = folder / f"{name}-1.0-0.tar.bz2"
    with tarfile.open(target, "w:bz2", compresslevel=1) as archive:
        for info, content in members:
            archive.addfile(info, content)
    return target


def build_conda(
    dest: Path,
    name: str,
    version: str = "1.0",
    build: str = "0",
    subdir: str = "noarch",
    *,
    salt: str = "",
) -> Path:
    """A genuine .conda assembled by rattler-build; `salt` changes the payload bytes."""
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        files = Path(scratch) / "files"
        for relative, data in _payload(name, salt).items():
            target = files / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        rattler_build.assemble_package(
            name=name,
            version=version,
            target_platform=subdir,
            build_string=build,
            output_dir=dest,
            files_dir=files,
            noarch="generic" if subdir == "noarch" else None,
        )
    produced = dest / f"{name}-{version}-{build}.conda"
    if not produced.exists():
        raise RuntimeError(f"assemble_package did not write {produced.name}")
    return produced


def build_large_conda(dest: Path, size: int, name: str = "large-blob") -> Path:
    """A genuine .conda (rattler-build's writer) whose payload is `size` random
    (incompressible) bytes, written to disk in pieces, never whole in memory."""
    files = dest / "files"
    blob = files / "share" / name / "blob.bin"
    blob.parent.mkdir(parents=True)
    with blob.open("wb") as handle:
        left = size
        while left:
            piece = min(left, 16 << 20)
            handle.write(os.urandom(piece))
            left -= piece
    rattler_build.assemble_package(
        name=name,
        version="1.0",
        target_platform="noarch",
        build_string="0",
        output_dir=dest,
        files_dir=files,
        noarch="generic",
        compression_level=1,  # random bytes do not compress: no point spending time on it
        detect_prefix=False,
    )
    blob.unlink()
    return dest / f"{name}-1.0-0.conda"


# Hostile archives, written by hand with tarfile, zipfile and zstandard: conda's writers
# would never produce them, and validation must refuse each by name.


def tar_stream(members: list[tuple[str, bytes]]) -> bytes:
    """An uncompressed tar of regular files, in order, duplicates kept."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, data in members:
            info, content = _member(name, data)
            archive.addfile(info, content)
    return buffer.getvalue()


def info_members(
    name: str, version: str = "1.0", build: str = "0", **overrides: object
) -> list[tuple[str, bytes]]:
    """info/index.json and info/paths.json of a package whose payload is `_payload(name)`."""
    entries = [
        {
            "_path": path,
            "path_type": "hardlink",
            "sha256": hashlib.sha256(data).hexdigest(),
            "size_in_bytes": len(data),
        }
        for path, data in _payload(name).items()
    ]
    index = {**_index(name, version, build, "noarch"), **overrides}
    return [
        ("info/index.json", json.dumps(index).encode()),
        ("info/paths.json", json.dumps({"paths": entries, "paths_version": 1}).encode()),
    ]


def payload_members(name: str) -> list[tuple[str, bytes]]:
    return list(_payload(name).items())


def build_raw_tar_bz2(dest: Path, filename: str, members: list[tuple[str, bytes]]) -> Path:
    """A .tar.bz2 holding exactly `members` (duplicate names too)."""
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / filename
    target.write_bytes(bz2.compress(tar_stream(members)))
    return target


def build_raw_conda(
    dest: Path,
    stem: str,
    info: list[tuple[str, bytes]],
    pkg: list[tuple[str, bytes]],
    *,
    entries_before: list[tuple[str, bytes]] = (),
    entries_after: list[tuple[str, bytes]] = (),
) -> Path:
    """A .conda written entry by entry: `entries_before` and `entries_after` are extra zip
    entries (duplicates of the real ones too) around metadata.json and the inner archives."""
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / f"{stem}.conda"
    compress = zstandard.ZstdCompressor().compress
    entries = [
        *entries_before,
        ("metadata.json", json.dumps({"conda_pkg_format_version": 2}).encode()),
        (f"info-{stem}.tar.zst", compress(tar_stream(info))),
        (f"pkg-{stem}.tar.zst", compress(tar_stream(pkg))),
        *entries_after,
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns of a duplicate name: wanted here
        with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED) as archive:
            for entry_name, data in entries:
                archive.writestr(entry_name, data)
    return target


def build_conda_by_hand(dest: Path, name: str, **index_overrides: object) -> Path:
    """A well-formed .conda like conda's, written here (the hostile ones are variations)."""
    return build_raw_conda(
        dest, f"{name}-1.0-0", info_members(name, **index_overrides), payload_members(name)
    )


_BZ2_STREAM_END = 0x177245385090


def _bz2_block(data: bytes) -> tuple[int, int, int]:
    """(bits, bit count, CRC) of the one block bzip2 writes for `data` (under 45 MB of
    zeros is one block at level 9)."""
    stream = bz2.compress(data, 9)
    value, total = int.from_bytes(stream, "big"), len(stream) * 8
    for padding in range(8):
        end = total - padding - 80  # stream end: 48-bit magic, 32-bit CRC, padding
        if (value >> (total - end - 48)) & ((1 << 48) - 1) == _BZ2_STREAM_END:
            crc = (value >> (total - end - 80)) & 0xFFFFFFFF
            length = end - 32  # after the 4-byte "BZh9" header
            return (value >> (total - end)) & ((1 << length) - 1), length, crc
    raise RuntimeError("bzip2 wrote a stream this builder does not understand")


def bzip2_of_blocks(pieces: list[tuple[bytes, int]]) -> bytes:
    """One bzip2 stream of `data` repeated `count` times for each (data, count): bzip2
    blocks are independent, so a block compressed once is repeated, and 1 GiB of zeros
    takes milliseconds to build. Python's bz2 and rattler read it as one stream."""
    bits, length, combined = 0, 0, 0
    for data, count in pieces:
        block, block_length, crc = _bz2_block(data)
        for _ in range(count):
            bits = (bits << block_length) | block
            length += block_length
            combined = (((combined << 1) | (combined >> 31)) & 0xFFFFFFFF) ^ crc
    bits = (bits << 80) | (_BZ2_STREAM_END << 32) | combined
    length += 80
    padding = -length % 8
    return b"BZh9" + (bits << padding).to_bytes((length + padding) // 8, "big")


def _tar_header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mtime = size, 0
    return info.tobuf(format=tarfile.GNU_FORMAT)  # sizes past 8 GiB in base-256


def _tar_body(members: list[tuple[str, bytes]]) -> bytes:
    """The members of a tar without its end-of-archive blocks (more members may follow)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for name, data in members:
            archive.addfile(*_member(name, data))
        body = buffer.getvalue()[: archive.offset]
    return body


def _zeros_listed(name: str, unpacked: int) -> list[tuple[str, bytes]]:
    """Valid info/ files of a package whose one file is share/zeros.bin."""
    entry = {"_path": "share/zeros.bin", "path_type": "hardlink", "size_in_bytes": unpacked}
    return [
        ("info/index.json", json.dumps(_index(name, "1.0", "0", "noarch")).encode()),
        ("info/paths.json", json.dumps({"paths": [entry], "paths_version": 1}).encode()),
    ]


_PIECE = 16 << 20


def build_bzip2_bomb(
    dest: Path, name: str = "bzbomb", unpacked: int = 1 << 30, member: str = "share/zeros.bin"
) -> Path:
    """A .tar.bz2 of about a kilobyte whose `member` unpacks to `unpacked` bytes (a
    multiple of 16 MiB) of zeros, in one bzip2 stream; its info/ files are valid, unless
    the member is one of them (then it comes first, with nothing else)."""
    listed = [] if member.startswith("info/") else _zeros_listed(name, unpacked)
    head = _tar_body(listed) + _tar_header(member, unpacked)
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / f"{name}-1.0-0.tar.bz2"
    target.write_bytes(
        bzip2_of_blocks([(head, 1), (bytes(_PIECE), unpacked // _PIECE), (bytes(10240), 1)])
    )
    return target


def build_zstd_bomb(dest: Path, name: str = "zstbomb", unpacked: int = 1 << 30) -> Path:
    """A .conda whose pkg archive's share/zeros.bin unpacks to `unpacked` bytes (a
    multiple of 16 MiB) of zeros: one zstd frame of 16 MiB of zeros, compressed once and
    repeated (readers go on across frames), so building 1 GiB or 9 GiB takes milliseconds."""
    compress = zstandard.ZstdCompressor(level=3).compress
    frames = [compress(_tar_header("share/zeros.bin", unpacked))]
    frames += [compress(bytes(_PIECE))] * (unpacked // _PIECE)
    frames.append(compress(bytes(10240)))
    dest.mkdir(parents=True, exist_ok=True)
    stem = f"{name}-1.0-0"
    target = dest / f"{stem}.conda"
    info = zstandard.ZstdCompressor().compress(tar_stream(_zeros_listed(name, unpacked)))
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("metadata.json", json.dumps({"conda_pkg_format_version": 2}))
        archive.writestr(f"info-{stem}.tar.zst", info)
        archive.writestr(f"pkg-{stem}.tar.zst", b"".join(frames))
    return target


def build_many_members(dest: Path, count: int, name: str = "crowd") -> Path:
    """A valid .tar.bz2 whose payload is `count` empty files, all listed in paths.json."""
    files = [f"share/{name}/{n}" for n in range(count)]
    entries = [{"_path": f, "path_type": "hardlink", "size_in_bytes": 0} for f in files]
    index = _index(name, "1.0", "0", "noarch")
    members = [
        ("info/index.json", json.dumps(index).encode()),
        ("info/paths.json", json.dumps({"paths": entries, "paths_version": 1}).encode()),
        *((f, b"") for f in files),
    ]
    return build_raw_tar_bz2(dest, f"{name}-1.0-0.tar.bz2", members)


def build_big_index_json(dest: Path, size: int, name: str = "verbose") -> Path:
    """A .tar.bz2 whose info/index.json is valid JSON padded with spaces to `size` bytes."""
    text = json.dumps(_index(name, "1.0", "0", "noarch"))
    padded = (text[:-1] + " " * max(0, size - len(text)) + "}").encode()
    return build_raw_tar_bz2(
        dest, f"{name}-1.0-0.tar.bz2", [("info/index.json", padded), *payload_members(name)]
    )


# A record rattler's indexer cannot parse: had it reached repodata, the subdir's full
# index would fail. Each trick below hides it from a validator that reads another copy.
_BROKEN_DEPENDS = {"depends": ["foo >=>= 1"]}


def _zst_tar(members: list[tuple[str, bytes]]) -> bytes:
    return zstandard.ZstdCompressor().compress(tar_stream(members))


def build_twice_indexed(dest: Path, name: str) -> Path:
    """A .tar.bz2 with two info/index.json: rattler's extraction keeps the last (valid),
    the old record builder read the first (unparsable depends)."""
    hostile = info_members(name, **_BROKEN_DEPENDS)[0]
    members = [hostile, *info_members(name), *payload_members(name)]
    return build_raw_tar_bz2(dest, f"{name}-1.0-0.tar.bz2", members)


def build_conda_with_decoy_info(dest: Path, name: str) -> Path:
    """A .conda whose first zip entry is another package's info archive (version 9.9,
    unparsable depends): the old record builder took the first `info-` entry."""
    decoy = (f"info-{name}-9.9-0.tar.zst", _zst_tar(info_members(name, "9.9", **_BROKEN_DEPENDS)))
    return build_raw_conda(
        dest, f"{name}-1.0-0", info_members(name), payload_members(name), entries_before=[decoy]
    )


def build_conda_with_extra_entry(dest: Path, name: str, entry: str = "notes.txt") -> Path:
    return build_raw_conda(
        dest,
        f"{name}-1.0-0",
        info_members(name),
        payload_members(name),
        entries_after=[(entry, b"read me")],
    )


def build_conda_with_info_twice(dest: Path, name: str) -> Path:
    """A .conda holding its info archive twice, the second with unparsable depends."""
    again = (f"info-{name}-1.0-0.tar.zst", _zst_tar(info_members(name, **_BROKEN_DEPENDS)))
    return build_raw_conda(
        dest, f"{name}-1.0-0", info_members(name), payload_members(name), entries_after=[again]
    )


def build_conda_with_inner_duplicate(dest: Path, name: str) -> Path:
    """A .conda whose pkg archive holds its payload file twice."""
    payload = payload_members(name)
    return build_raw_conda(dest, f"{name}-1.0-0", info_members(name), payload + payload)


def build_conda_with_index_in_pkg(dest: Path, name: str) -> Path:
    """A .conda with an info/index.json (unparsable depends) in its pkg archive as well."""
    hostile = info_members(name, **_BROKEN_DEPENDS)[0]
    return build_raw_conda(
        dest, f"{name}-1.0-0", info_members(name), [hostile, *payload_members(name)]
    )
