"""Build small conda packages offline, good ones and deliberately broken ones.

`.tar.bz2` packages are written with tarfile; `.conda` packages with rattler-build's
`assemble_package`, the real writer, so validation is tested against genuine archives.
"""

from __future__ import annotations

import hashlib
import io
import json
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


def build_tar_bz2(
    dest: Path,
    name: str,
    version: str = "1.0",
    build: str = "0",
    subdir: str = "noarch",
    *,
    index_overrides: dict | None = None,
    drop_payload: bool = False,
) -> Path:
    """A .tar.bz2 with info/index.json, info/paths.json, info/files and one data file."""
    dest.mkdir(parents=True, exist_ok=True)
    payload = _payload(name)
    paths = {
        "paths": [
            {
                "_path": p,
                "path_type": "hardlink",
                "sha256": hashlib.sha256(data).hexdigest(),
                "size_in_bytes": len(data),
            }
            for p, data in payload.items()
        ],
        "paths_version": 1,
    }
    index = {**_index(name, version, build, subdir), **(index_overrides or {})}
    members = {
        "info/index.json": json.dumps(index).encode(),
        "info/paths.json": json.dumps(paths).encode(),
        "info/files": "".join(f"{p}\n" for p in payload).encode(),
    }
    if not drop_payload:
        members.update(payload)
    target = dest / f"{name}-{version}-{build}.tar.bz2"
    with tarfile.open(target, "w:bz2") as archive:
        for member, data in members.items():
            info = tarfile.TarInfo(member)
            info.size = len(data)
            info.mtime = 0
            archive.addfile(info, io.BytesIO(data))
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
