"""Sharded repodata (CEP-16), rendered from a subdir's records.

Today's clients (rattler and pixi, conda-libmamba-solver, mamba 2.6) first ask for
`<subdir>/repodata_shards.msgpack.zst`: a small index naming, per package name, the sha256
of that name's shard, `<subdir>/shards/<sha256 hex>.msgpack.zst`. A solve for one package
then fetches a few shards instead of the whole subdir's repodata. A shard holds the same
records as repodata.json for its name, in msgpack with sha256 and md5 as bytes; it is
content-addressed, so it never changes once written and may be cached for ever, while
the index is revalidated.

These are the formats and the file operations; the subdir's index owner decides when.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from hashlib import sha256
from pathlib import Path

import msgpack
import zstandard

from condaport.files import replace_atomically

SHARD_INDEX = "repodata_shards.msgpack.zst"
SHARDS_FOLDER = "shards"
SHARD_SUFFIX = ".msgpack.zst"
SECTIONS = ("packages", "packages.conda")
# Shards no index names any more stay this long, for clients holding an older index.
DEFAULT_GRACE_SECONDS = 7 * 86400
# An edit looks for such shards at most this often (a full index always does): the look
# lists the whole shards folder, one file per name and per recent change.
DEFAULT_SWEEP_INTERVAL = 600.0
# Dated by each sweep, so the next edit knows whether one is due (a dot file: not served).
SWEPT_MARKER = ".swept"
_ZSTD_LEVEL = 3
# The index is fetched by every solve and is mostly sha256s (32 of every ~43 bytes); its
# names compress better at 15: measured on 2,050 names, 72.6 kB at 3, 69.4 kB at 15 in
# 3 ms, no smaller at 19 or 22 (6.5 and 11 ms). Shards stay at 3: 15 saves 2.5 % of a
# 3 kB shard at 1.9 ms each, 19 s more for a full index of 10,000 names.
_INDEX_ZSTD_LEVEL = 15
_HASH_FIELDS = ("sha256", "md5")
# Making a compressor costs more than compressing one small shard: one per thread, reused
# (a compressor must not be shared between threads).
_local = threading.local()


def _compress(data: bytes, level: int = _ZSTD_LEVEL) -> bytes:
    compressors = _local.__dict__.setdefault("compressors", {})
    compressor = compressors.get(level)
    if compressor is None:
        compressor = compressors[level] = zstandard.ZstdCompressor(level=level)
    return compressor.compress(data)


Records = Mapping[str, Mapping[str, dict]]  # section -> filename -> record


def _shard_record(record: Mapping[str, object]) -> dict[str, object]:
    """A repodata.json record as a shard holds it: keys in order, digests as bytes."""
    converted: dict[str, object] = {}
    for key in sorted(record):
        value = record[key]
        if key in _HASH_FIELDS and isinstance(value, str):
            value = bytes.fromhex(value)
        converted[key] = value
    return converted


def by_name(repodata: Mapping[str, object]) -> dict[str, dict[str, dict[str, dict]]]:
    """Group a repodata document's records by package name: name -> section -> file."""
    grouped: dict[str, dict[str, dict[str, dict]]] = {}
    for section in SECTIONS:
        for filename, record in (repodata.get(section) or {}).items():  # type: ignore[union-attr]
            if isinstance(record, dict) and isinstance(record.get("name"), str):
                name_sections = grouped.setdefault(record["name"], {s: {} for s in SECTIONS})
                name_sections[section][filename] = record
    return grouped


def encode_shard(records: Records) -> bytes:
    """One package name's shard, compressed."""
    shard = {
        section: {
            filename: _shard_record(records.get(section, {})[filename])
            for filename in sorted(records.get(section, {}))
        }
        for section in SECTIONS
    }
    shard["removed"] = []
    return _compress(msgpack.packb(shard, use_bin_type=True))


def encode_index(subdir: str, shards: Mapping[str, bytes]) -> bytes:
    """The shard index: name -> sha256 (bytes) of its compressed shard."""
    index = {
        "info": {
            "subdir": subdir,
            "base_url": "",
            "shards_base_url": f"./{SHARDS_FOLDER}/",
            "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        },
        "shards": {name: shards[name] for name in sorted(shards)},
    }
    return _compress(msgpack.packb(index, use_bin_type=True), _INDEX_ZSTD_LEVEL)


def changed_names(
    before: Mapping[str, object] | None, after: Mapping[str, object]
) -> set[str] | None:
    """The package names whose records differ between two repodata documents; None when
    there is no `before` to compare with (then every name counts as changed)."""
    if before is None:
        return None
    changed: set[str] = set()
    for section in SECTIONS:
        old = before.get(section) or {}
        new = after.get(section) or {}
        for filename in set(old) | set(new):  # type: ignore[arg-type]
            was, now = old.get(filename), new.get(filename)  # type: ignore[union-attr]
            if was != now:
                for record in (was, now):
                    if isinstance(record, dict) and isinstance(record.get("name"), str):
                        changed.add(record["name"])
    return changed


def decode(compressed: bytes) -> dict:
    """A shard or shard index, as a dict (tests, and the owner reading its own index)."""
    with zstandard.ZstdDecompressor().stream_reader(compressed) as reader:
        return msgpack.unpackb(reader.read(), raw=False)


def shard_path(subdir_dir: Path, digest: bytes) -> Path:
    return subdir_dir / SHARDS_FOLDER / f"{digest.hex()}{SHARD_SUFFIX}"


def store_shard(subdir_dir: Path, compressed: bytes) -> bytes:
    """Write a shard under its own hash unless it is there; returns the hash.

    Content-addressed: a file of that name already holds exactly these bytes (written by
    rename, whole), so it is never rewritten and caches may keep it for ever.
    """
    digest = sha256(compressed).digest()
    target = shard_path(subdir_dir, digest)
    if target.is_file():
        return digest
    target.parent.mkdir(mode=0o755, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=".shard.", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(compressed)
            os.fchmod(handle.fileno(), 0o644)
        os.replace(name, target)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return digest


def read_index(subdir_dir: Path) -> dict[str, bytes] | None:
    """name -> shard hash from the subdir's shard index, or None when it has none usable."""
    try:
        data = decode((subdir_dir / SHARD_INDEX).read_bytes())
    except (OSError, ValueError, zstandard.ZstdError, msgpack.UnpackException):
        return None
    shards = data.get("shards") if isinstance(data, dict) else None
    if not isinstance(shards, dict):
        return None
    return {str(k): bytes(v) for k, v in shards.items() if isinstance(v, bytes)}


def sweep(subdir_dir: Path, referenced: Iterable[bytes], grace_seconds: float) -> list[str]:
    """Delete shards no index names that are older than `grace_seconds`."""
    keep = {f"{digest.hex()}{SHARD_SUFFIX}" for digest in referenced}
    cutoff = time.time() - grace_seconds
    removed = []
    folder = subdir_dir / SHARDS_FOLDER
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return removed
    for entry in entries:
        if entry.name in keep or entry.name == SWEPT_MARKER:
            continue
        if not entry.is_file(follow_symlinks=False):
            continue
        if entry.name.endswith(".partial") or entry.stat(follow_symlinks=False).st_mtime < cutoff:
            Path(entry.path).unlink(missing_ok=True)
            removed.append(entry.name)
    return removed


def _sweep_due(subdir_dir: Path, interval: float) -> bool:
    """Whether the last sweep is `interval` seconds old (or of unknown age)."""
    if interval <= 0:
        return True
    try:
        swept = os.stat(subdir_dir / SHARDS_FOLDER / SWEPT_MARKER).st_mtime
    except FileNotFoundError:
        return True
    now = time.time()
    return not swept <= now < swept + interval  # a clock set back counts as due


def _mark_swept(subdir_dir: Path) -> None:
    marker = subdir_dir / SHARDS_FOLDER / SWEPT_MARKER
    try:
        os.utime(marker)
    except FileNotFoundError:
        if marker.parent.is_dir():  # no shards folder: nothing to sweep next time either
            marker.touch(mode=0o644)


def sync(
    subdir_dir: Path,
    grouped: Mapping[str, Records],
    changed: Iterable[str] | None = None,
    *,
    grace_seconds: float = DEFAULT_GRACE_SECONDS,
    sweep_interval: float = DEFAULT_SWEEP_INTERVAL,
) -> dict[str, bytes]:
    """Bring the shards and the shard index in line with `grouped` (name -> records).

    With `changed`, only those names' shards are rendered and the rest of the index is
    taken from the one on disk; without it (or when that index is unusable) every name is
    rendered (shards already on disk are not rewritten). Shards no longer named are swept
    when the last sweep is `sweep_interval` seconds old (0: now). Returns name -> shard
    hash.
    """
    current = read_index(subdir_dir) if changed is not None else None
    todo = set(grouped) if current is None else set(changed or ())
    current = current or {}
    updated = {name: digest for name, digest in current.items() if name in grouped}
    todo |= set(grouped) - set(updated)  # an index that missed a name heals here
    for name in sorted(todo):
        if name in grouped:
            updated[name] = store_shard(subdir_dir, encode_shard(grouped[name]))
        else:
            updated.pop(name, None)
    if updated != current or not (subdir_dir / SHARD_INDEX).is_file():
        replace_atomically(subdir_dir / SHARD_INDEX, encode_index(subdir_dir.name, updated))
    if _sweep_due(subdir_dir, sweep_interval):
        sweep(subdir_dir, updated.values(), grace_seconds)
        _mark_swept(subdir_dir)
    return updated
