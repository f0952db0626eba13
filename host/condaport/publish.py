"""Move validated packages from a staging folder into a channel.

`inventory` tells the playbook what the channel already holds, so only missing or changed
files are uploaded. `place` validates every staged file, then renames the good ones into
the subdir their own info/index.json names, under the channel lock. Nothing in the channel
is touched by a refused file; staged files are removed once handled. `publish` (see
condaport.batch) does a whole playbook run in one process: unpack, place, prune, index.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from condaport.locking import channel_lock
from condaport.packages import (
    Limits,
    PackageInfo,
    Rejected,
    inspect_package,
    is_package_name,
    sha256_of,
    split_name,
)
from condaport.provenance import forget_files, placed_by_uploaders, record_placement


@dataclass
class Outcome:
    added: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    rejected: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, list]:
        return {
            "added": self.added,
            "replaced": self.replaced,
            "unchanged": self.unchanged,
            "rejected": self.rejected,
        }


def _repodata_hashes(subdir_dir: Path) -> dict[str, tuple[int, str]]:
    """filename -> (size, sha256) as the subdir's repodata.json records them."""
    try:
        repodata = json.loads((subdir_dir / "repodata.json").read_text())
    except (OSError, ValueError):
        return {}
    known = {}
    for key in ("packages", "packages.conda"):
        for filename, record in (repodata.get(key) or {}).items():
            if record.get("sha256") and record.get("size") is not None:
                known[filename] = (int(record["size"]), record["sha256"])
    return known


def inventory(channels_root: Path, channel: str) -> dict[str, dict]:
    """Every package file in the channel with its subdir, size and sha256.

    Hashes come from repodata when the size on disk agrees (cheap for large channels) and
    are computed otherwise.
    """
    channel_dir = channels_root / channel
    if not channel_dir.is_dir():
        raise FileNotFoundError(f"channel {channel!r} does not exist under {channels_root}")
    packages: dict[str, dict] = {}
    for subdir_dir in sorted(p for p in channel_dir.iterdir() if p.is_dir()):
        if subdir_dir.name.startswith("."):
            continue
        known = _repodata_hashes(subdir_dir)
        for entry in sorted(subdir_dir.iterdir()):
            if entry.name.startswith(".") or not entry.is_file():
                continue
            try:
                split_name(entry.name)
            except Rejected:
                continue
            size = entry.stat().st_size
            recorded = known.get(entry.name)
            sha = recorded[1] if recorded and recorded[0] == size else sha256_of(entry)
            packages[entry.name] = {"subdir": subdir_dir.name, "sha256": sha, "size": size}
    return packages


def sweep_partials(channel_dir: Path) -> list[Path]:
    """Remove half-written files a killed writer left; call only while holding the lock.

    With the lock held no placement is under way, so every `.partial` file is garbage.
    They are never served (dot files) nor indexed, but they waste disk.
    """
    swept = []
    with os.scandir(channel_dir) as subdirs:
        folders = [Path(e.path) for e in subdirs if e.is_dir(follow_symlinks=False)]
    for folder in folders:
        for partial in folder.glob(".*.partial"):
            partial.unlink(missing_ok=True)
            swept.append(partial)
    return swept


def _records(subdir_dir: Path) -> dict[str, dict]:
    """filename -> index.json of every package in the subdir (repodata first, else the file).

    A file whose record cannot be read is left out: retention never deletes what it
    cannot place in the version order (the indexer quarantines such files).
    """
    try:
        repodata = json.loads((subdir_dir / "repodata.json").read_text())
    except (OSError, ValueError):
        repodata = {}
    indexed = {**(repodata.get("packages") or {}), **(repodata.get("packages.conda") or {})}
    records = {}
    for entry in subdir_dir.iterdir():
        if entry.name.startswith(".") or not is_package_name(entry.name):
            continue
        if isinstance(indexed.get(entry.name), dict):
            records[entry.name] = indexed[entry.name]
            continue
        from rattler.package import IndexJson

        try:
            meta = IndexJson.from_package_archive(entry)
        except Exception:  # unreadable: not ours to judge here
            continue
        records[entry.name] = {"name": meta.name.normalized, "version": str(meta.version)}
    return records


def _older_versions(records: dict[str, dict], keep_versions: int) -> list[str]:
    """The files of every version of each name beyond its newest `keep_versions`.

    Versions are ordered as conda orders them (rattler's Version: 1.10 > 1.9, 1.0 == 1.0.0),
    and a version counts once however many builds (py310, py311, ...) and formats
    (.conda and .tar.bz2 of one build) it has: all of them stay or go together.
    """
    from rattler import Version

    by_name: dict[str, dict[Version, list[str]]] = {}
    for filename, record in records.items():
        try:
            version = Version(str(record.get("version")))
        except Exception:
            continue
        name = str(record.get("name", "")).lower()
        by_name.setdefault(name, {}).setdefault(version, []).append(filename)
    doomed = []
    for versions in by_name.values():
        for version in sorted(versions, reverse=True)[keep_versions:]:
            doomed += versions[version]
    return sorted(doomed)


def prune(
    channels_root: Path, state_dir: Path, channel: str, remove: list[str], keep_versions: int
) -> dict[str, list[str]]:
    """Delete the named package files, then, in each subdir, every version of each package
    name older than its newest `keep_versions` (0: no retention), with all of its builds;
    files uploaded by uploaders without the delete right are left out of retention.
    Returns what went and what was not found."""
    channel_dir = channels_root / channel
    if not channel_dir.is_dir():
        raise FileNotFoundError(f"channel {channel!r} does not exist under {channels_root}")
    if keep_versions < 0:
        raise Rejected("the number of versions to keep must be 0 (all) or more")
    for name in remove:
        split_name(name)  # a path trick in a removal request is refused outright
    removed: list[str] = []
    with channel_lock(state_dir, channel):
        sweep_partials(channel_dir)
        wanted = set(remove)
        for name in remove:
            current = existing_file(channel_dir, name)
            if current is not None:
                current.unlink()
                removed.append(f"{current.parent.name}/{name}")
                wanted.discard(name)
        if keep_versions > 0:
            # Only files maintainers placed count: see condaport.provenance.
            uploaded = placed_by_uploaders(state_dir, channel)
            for subdir_dir in sorted(p for p in channel_dir.iterdir() if p.is_dir()):
                if subdir_dir.name.startswith(".") or subdir_dir.is_symlink():
                    continue
                records = {
                    name: record
                    for name, record in _records(subdir_dir).items()
                    if f"{subdir_dir.name}/{name}" not in uploaded
                }
                for filename in _older_versions(records, keep_versions):
                    (subdir_dir / filename).unlink()
                    removed.append(f"{subdir_dir.name}/{filename}")
        forget_files(state_dir, channel, removed)
    return {"removed": sorted(removed), "not_found": sorted(wanted)}


def existing_file(channel_dir: Path, filename: str) -> Path | None:
    """Where a file of this name already lives in the channel, whatever its subdir."""
    for subdir_dir in channel_dir.iterdir():
        candidate = subdir_dir / filename
        if not subdir_dir.name.startswith(".") and candidate.is_file():
            return candidate
    return None


def move_into_place(source: Path, target: Path) -> None:
    """Atomic for readers: the final name appears whole, with mode 0644, or not at all.

    The mode is set on an open descriptor before the rename, never on a name afterwards:
    nothing can be swapped in between. Across file systems the copy goes to a temp file
    of a fresh, unguessable name (mkstemp) beside the target.
    """
    try:
        descriptor = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot open staged {source.name}: {exc.strerror}") from None
    with os.fdopen(descriptor, "rb") as reader:
        os.fchmod(reader.fileno(), 0o644)
        try:
            os.rename(source, target)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            _copy_into_place(reader, source, target)
    directory = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _copy_into_place(reader: BinaryIO, source: Path, target: Path) -> None:
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    partial = Path(name)
    try:
        with os.fdopen(fd, "wb") as writer:
            shutil.copyfileobj(reader, writer, 1 << 20)
            writer.flush()
            os.fchmod(writer.fileno(), 0o644)
            os.fsync(writer.fileno())
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)  # a full disk must not leave half a package behind
        raise
    source.unlink()


@dataclass
class Validated:
    """Staged files checked outside the lock: the good ones, and why others were refused."""

    accepted: list[tuple[Path, PackageInfo]] = field(default_factory=list)
    rejected: list[dict[str, str]] = field(default_factory=list)


def validate(
    channel_dir: Path,
    staging: Path,
    allowed_subdirs: list[str] | None,
    limits: Limits | None = None,
) -> tuple[list[Path], Validated]:
    """Every staged file checked (slow: each is unpacked), before any lock is taken."""
    if allowed_subdirs is None:
        # Never trust the package's own subdir field to name a folder: only the channel's
        # subdirs, as plain names, may receive files.
        allowed_subdirs = sorted(
            p.name for p in channel_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
        )
    staged = sorted(p for p in staging.iterdir())
    checked = Validated()
    for path in staged:
        try:
            # Unpacked beside the staged files, on the staging filesystem, not in /tmp.
            info = inspect_package(path, allowed_subdirs, scratch_dir=staging, limits=limits)
            if not (channel_dir / info.subdir).is_dir():
                raise Rejected(
                    f"subdir {info.subdir!r} does not exist in channel {channel_dir.name!r}"
                )
            checked.accepted.append((path, info))
        except Rejected as exc:
            checked.rejected.append({"file": path.name, "reason": str(exc)})
        except OSError as exc:
            checked.rejected.append({"file": path.name, "reason": f"unreadable: {exc}"})
    return staged, checked


def place_validated(
    channel_dir: Path,
    state_dir: Path,
    checked: Validated,
    *,
    overwrite: bool = False,
    all_or_nothing: bool = False,
) -> Outcome:
    """Rename the accepted files into their subdirs; the caller holds the channel lock."""
    outcome = Outcome(rejected=list(checked.rejected))
    sweep_partials(channel_dir)
    # Decided under the lock: another publisher may have placed the same name meanwhile.
    to_place: list[tuple[Path, PackageInfo, bool]] = []
    for path, info in checked.accepted:
        current = existing_file(channel_dir, info.filename)
        if current is None:
            to_place.append((path, info, False))
        elif current.parent.name == info.subdir and sha256_of(current) == info.sha256:
            outcome.unchanged.append(f"{info.subdir}/{info.filename}")
        elif overwrite and current.parent.name == info.subdir:
            to_place.append((path, info, True))
        else:
            where = f"{current.parent.name}/{current.name}"
            outcome.rejected.append(
                {
                    "file": path.name,
                    "reason": f"{where} is already in the channel with different content"
                    + ("" if overwrite else " (set overwrite to replace it)"),
                }
            )
    if all_or_nothing and outcome.rejected:
        return outcome
    for path, info, replacing in to_place:
        try:
            move_into_place(path, channel_dir / info.subdir / info.filename)
        except OSError as exc:
            raise OSError(
                exc.errno, f"placing {info.subdir}/{info.filename} failed: {exc.strerror}"
            ) from exc
        (outcome.replaced if replacing else outcome.added).append(f"{info.subdir}/{info.filename}")
    # A maintainer's publish: retention handles these files as usual.
    record_placement(state_dir, channel_dir.name, outcome.added + outcome.replaced, None)
    return outcome


def discard_staged(staged: list[Path]) -> None:
    """Handled, refused or interrupted by an error: staged copies never linger."""
    for path in staged:
        if path.is_file() or path.is_symlink():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path, ignore_errors=True)


def place(
    channels_root: Path,
    state_dir: Path,
    channel: str,
    staging: Path,
    allowed_subdirs: list[str] | None,
    *,
    overwrite: bool = False,
    all_or_nothing: bool = False,
    limits: Limits | None = None,
) -> Outcome:
    """Validate every staged file, then place the good ones under the channel lock."""
    channel_dir = channels_root / channel
    if not channel_dir.is_dir():
        raise FileNotFoundError(f"channel {channel!r} does not exist under {channels_root}")
    staged, checked = validate(channel_dir, staging, allowed_subdirs, limits)
    try:
        with channel_lock(state_dir, channel):
            return place_validated(
                channel_dir,
                state_dir,
                checked,
                overwrite=overwrite,
                all_or_nothing=all_or_nothing,
            )
    finally:
        discard_staged(staged)
