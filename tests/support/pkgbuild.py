"""Build small conda packages offline, good ones and deliberately broken ones.

`.tar.bz2` packages are written with tarfile; `.conda` packages with rattler-build's
`assemble_package`, the real writer, so validation is tested against genuine archives.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import tempfile
import time
from pathlib import Path

import rattler_build


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
    for salt in "BCDEFGHIJKLMNOPQRSTUVWXYZ":
        second = build_tar_bz2(folder / "b", name, salt=salt, index_overrides=same)
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
