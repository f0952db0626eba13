"""The repodata format: the record rattler's index writes for a package, and a subdir's
repodata.json held as a `Document` that one record at a time can be changed in.

A full index of a 10,000-package subdir opens every archive and takes seconds; an upload
changes one file. The subdir's index owner (condaport.subdir_index) edits its Document
instead, with the record rattler's index would write for that file (`package_record`; a
unit test compares the two), and writes repodata.json and repodata.json.zst by temp file
and rename (`write_bytes`), like the indexer.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import zstandard

from condaport import shards
from condaport.files import replace_atomically
from condaport.packages import PackageInfo, package_metadata

REPODATA = "repodata.json"
COMPRESSED = "repodata.json.zst"
# Level 3 compresses a 10,000-package repodata about as small as level 9, in a third of
# the time (measured: 692 kB either way).
_ZSTD_LEVEL = 3
_SECTIONS = {".conda": "packages.conda", ".tar.bz2": "packages"}
# The run_exports keys rattler writes, in its order (empty lists are left out).
_RUN_EXPORTS_KEYS = ("weak", "strong", "noarch", "weak_constrains", "strong_constrains")


class RepodataUnusable(RuntimeError):
    """The subdir's repodata cannot be edited in place; index the subdir fully instead."""


def section_for(filename: str) -> str:
    for suffix, section in _SECTIONS.items():
        if filename.endswith(suffix):
            return section
    raise ValueError(f"{filename} is not a package file name")


def _run_exports(raw: bytes) -> dict[str, list[str]] | None:
    data = json.loads(raw)
    if not isinstance(data, dict):
        return None
    exports = {k: list(data[k]) for k in _RUN_EXPORTS_KEYS if data.get(k)}
    return exports or None


def record_for(info: PackageInfo, *, md5: str, indexed_timestamp: int | None = None) -> dict:
    """The repodata record rattler's index writes for a package `inspect_package` accepted,
    built from the very info/ bytes it validated (never from a second read of the file,
    which could find other bytes than the ones checked)."""
    return _record(
        info.filename,
        info.index_json,
        info.run_exports_json,
        sha256=info.sha256,
        md5=md5,
        size=info.size,
        indexed_timestamp=indexed_timestamp,
    )


def package_record(
    path: Path, *, sha256: str, md5: str, size: int, indexed_timestamp: int | None = None
) -> dict:
    """The repodata record rattler's index writes for this package file, its info/ files
    read by validation's own reader (condaport.packages.package_metadata)."""
    metadata = package_metadata(path)
    if "info/index.json" not in metadata:
        raise ValueError(f"{path.name} has no info/index.json")
    return _record(
        path.name,
        metadata["info/index.json"],
        metadata.get("info/run_exports.json"),
        sha256=sha256,
        md5=md5,
        size=size,
        indexed_timestamp=indexed_timestamp,
    )


def _record(
    filename: str,
    index_json: bytes,
    run_exports_json: bytes | None,
    *,
    sha256: str,
    md5: str,
    size: int,
    indexed_timestamp: int | None,
) -> dict:
    """Built by py-rattler's own PackageRecord from the package's info/index.json, so field
    handling (dropped nulls, normalised names) is rattler's; like rattler's index, a .conda
    also carries its info/run_exports.json, and every record the time it was indexed.
    """
    from rattler import PackageRecord

    with tempfile.TemporaryDirectory(prefix=".condaport-record-") as scratch:
        index_path = Path(scratch) / "index.json"
        index_path.write_bytes(index_json)
        record = json.loads(
            PackageRecord.from_index_json(index_path, size=size, sha256=sha256, md5=md5).to_json()
        )
    if filename.endswith(".conda") and run_exports_json is not None:
        exports = _run_exports(run_exports_json)
        if exports:
            record["run_exports"] = exports
    record["indexed_timestamp"] = (
        indexed_timestamp if indexed_timestamp is not None else int(time.time() * 1000)
    )
    return record


def read(subdir_dir: Path) -> dict:
    """The subdir's repodata.json, or RepodataUnusable when it cannot be edited."""
    try:
        data = json.loads((subdir_dir / REPODATA).read_bytes())
    except FileNotFoundError:
        raise RepodataUnusable(f"{subdir_dir.name} has no {REPODATA}") from None
    except (OSError, ValueError) as exc:
        raise RepodataUnusable(f"{subdir_dir.name}/{REPODATA} is unreadable: {exc}") from None
    if not isinstance(data, dict) or any(
        not isinstance(data.get(section, {}), dict) for section in _SECTIONS.values()
    ):
        raise RepodataUnusable(f"{subdir_dir.name}/{REPODATA} is not repodata")
    return data


# Made once: json.dumps with options builds an encoder on every call, a third of the cost
# of encoding one record (and a Document encodes every record when it loads).
_COMPACT = json.JSONEncoder(separators=(",", ":"), sort_keys=True, ensure_ascii=False)
_STRING = json.JSONEncoder(ensure_ascii=False)


def encode(repodata: dict) -> bytes:
    """Compact JSON with sorted keys, as rattler's index writes it."""
    return _COMPACT.encode(repodata).encode()


def write_bytes(subdir_dir: Path, content: bytes) -> None:
    """Replace repodata.json, then repodata.json.zst (clients probe the .zst first, so the
    new package is announced only once both are in place)."""
    compressed = zstandard.ZstdCompressor(level=_ZSTD_LEVEL).compress(content)
    replace_atomically(subdir_dir / REPODATA, content)
    replace_atomically(subdir_dir / COMPRESSED, compressed)
    directory = os.open(subdir_dir, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _key(name: str) -> str:
    return _STRING.encode(name)


def _record_in(member: str) -> dict | None:
    """The record of an encoded `"file":{record}` member (one JSON object after the key)."""
    decoder = json.JSONDecoder()
    _, end = decoder.raw_decode(member)  # the key: a file name may itself hold a ':'
    record, _ = decoder.raw_decode(member, end + 1)
    return record if isinstance(record, dict) else None


def _name_in(member: str) -> str:
    """The package name of an encoded member: looked up directly, not by searching every
    name's files."""
    record = _record_in(member)
    return str(record.get("name", "")) if record is not None else ""


def _member(name: str, record: object) -> str:
    return f"{_key(name)}:{_COMPACT.encode(record)}"


@dataclass
class Document:
    """A subdir's repodata held for editing: an update re-encodes one record, not ten
    thousand. `signature` names the repodata.json it was read from or written to."""

    signature: tuple[int, int, int]
    # Everything but the package sections, and each record already encoded as its
    # `"name":{...}` member.
    top: dict
    encoded: dict[str, dict[str, str]]
    # The same records by package name, for the shards: name -> section -> file -> record.
    names: dict[str, dict[str, dict[str, dict]]]

    @classmethod
    def load(cls, subdir_dir: Path) -> Document:
        """The subdir's repodata.json, or RepodataUnusable when it cannot be edited."""
        path = subdir_dir / REPODATA
        try:
            signature = signature_of(path)
        except FileNotFoundError:
            raise RepodataUnusable(f"{subdir_dir.name} has no {REPODATA}") from None
        data = read(subdir_dir)
        encoded = {
            section: {name: _member(name, record) for name, record in data.get(section, {}).items()}
            for section in _SECTIONS.values()
        }
        top = {k: v for k, v in data.items() if k not in encoded}
        return cls(signature, top, encoded, shards.by_name(data))

    def record(self, filename: str) -> dict | None:
        member = self.encoded.get(section_for(filename), {}).get(filename)
        return None if member is None else _record_in(member)

    def records(self) -> dict[str, dict]:
        """filename -> record of every package listed."""
        return {
            filename: record
            for sections in self.names.values()
            for records in sections.values()
            for filename, record in records.items()
        }

    def set(self, filename: str, record: dict | None) -> set[str]:
        """Set (None: drop) one file's record; returns the package names it touched."""
        section = section_for(filename)
        members = self.encoded[section]
        touched = set()
        previous = members.pop(filename, None)
        if previous is not None:
            name = _name_in(previous)
            sections = self.names.get(name)
            if sections is not None and sections[section].pop(filename, None) is not None:
                touched.add(name)
                if not any(sections.values()):
                    del self.names[name]
        if record is not None:
            members[filename] = _member(filename, record)
            name = str(record.get("name", ""))
            grouped = self.names.setdefault(name, {s: {} for s in shards.SECTIONS})
            grouped[section][filename] = record
            touched.add(name)
        return touched

    def set_top(self, key: str, value: object) -> None:
        """Set a top-level entry other than a package section (`removed`, ...)."""
        if key in self.encoded:
            raise ValueError(f"{key} is a package section")
        self.top[key] = value

    def render(self) -> bytes:
        # One join of all the pieces: at 100,000 packages each intermediate copy of a
        # section's 30 MB costs more than the join itself.
        pieces = ["{"]
        for key in sorted({*self.top, *self.encoded}):
            pieces.append("," if len(pieces) > 1 else "")
            if key in self.encoded:
                members = self.encoded[key]
                pieces += [f"{_key(key)}:{{", ",".join([members[n] for n in sorted(members)]), "}"]
            else:
                pieces.append(f"{_key(key)}:{_COMPACT.encode(self.top[key])}")
        pieces.append("}")
        return "".join(pieces).encode()


def signature_of(path: Path) -> tuple[int, int, int]:
    """What tells one repodata.json from the next: inode, size, mtime."""
    info = path.stat()
    return (info.st_ino, info.st_size, info.st_mtime_ns)


def decode_compressed(data: bytes) -> dict:
    """Parse a repodata.json.zst (tests, and callers checking what clients get)."""
    with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)) as reader:
        return json.loads(reader.read())
