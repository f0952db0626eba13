"""Move validated packages from a staging folder into a channel.

`inventory` tells the playbook what the channel already holds, so only missing or changed
files are uploaded. `place` validates every staged file, then renames the good ones into
the subdir their own info/index.json names, under the channel lock. Nothing in the channel
is touched by a refused file; staged files are removed once handled. `publish` (see
condaport.batch) does a whole playbook run in one process: unpack, place, prune, index.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from condaport.channel_files import ChannelFiles
from condaport.locking import channel_lock
from condaport.packages import (
    Limits,
    PackageInfo,
    Rejected,
    inspect_package,
    sha256_of,
    split_name,
)
from condaport.provenance import forget_files, placed_by_uploaders, record_placement
from condaport.subdir_index import listed_records


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


def inventory(channels_root: Path, channel: str) -> dict[str, dict]:
    """Every package file in the channel with its subdir, size and sha256.

    Hashes come from repodata when the size on disk agrees (cheap for large channels) and
    are computed otherwise.
    """
    channel_dir = channels_root / channel
    if not channel_dir.is_dir():
        raise FileNotFoundError(f"channel {channel!r} does not exist under {channels_root}")
    files = ChannelFiles(channel_dir)
    packages: dict[str, dict] = {}
    for subdir in files.subdirs():
        known = listed_records(files.subdir_dir(subdir))
        for entry in sorted(files.package_files(subdir)):
            size = entry.stat().st_size
            recorded = known.get(entry.name) or {}
            same_size = recorded.get("size") == size and isinstance(recorded.get("sha256"), str)
            sha = recorded["sha256"] if same_size else sha256_of(entry)
            packages[entry.name] = {"subdir": subdir, "sha256": sha, "size": size}
    return packages


def _records(files: ChannelFiles, subdir: str) -> dict[str, dict]:
    """filename -> name and version of every package in the subdir (from its index, else
    from the file). A file whose record cannot be read is left out: retention never
    deletes what it cannot place in the version order (the indexer quarantines such files).
    """
    indexed = listed_records(files.subdir_dir(subdir))
    records = {}
    for entry in files.package_files(subdir):
        if entry.name in indexed:
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
    files = ChannelFiles(channel_dir)
    with channel_lock(state_dir, channel):
        files.sweep_partials()
        wanted = set(remove)
        for name in remove:
            current = files.find(name)
            if current is not None and files.delete(current.parent.name, name):
                removed.append(f"{current.parent.name}/{name}")
                wanted.discard(name)
        if keep_versions > 0:
            # Only files maintainers placed count: see condaport.provenance.
            uploaded = placed_by_uploaders(state_dir, channel)
            for subdir in files.subdirs():
                if files.subdir_dir(subdir).is_symlink():
                    continue
                records = {
                    name: record
                    for name, record in _records(files, subdir).items()
                    if f"{subdir}/{name}" not in uploaded
                }
                for filename in _older_versions(records, keep_versions):
                    files.delete(subdir, filename)
                    removed.append(f"{subdir}/{filename}")
        forget_files(state_dir, channel, removed)
    return {"removed": sorted(removed), "not_found": sorted(wanted)}


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
    files = ChannelFiles(channel_dir)
    files.sweep_partials()
    # Decided under the lock: another publisher may have placed the same name meanwhile.
    to_place: list[tuple[Path, PackageInfo, bool]] = []
    for path, info in checked.accepted:
        current = files.find(info.filename)
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
            files.place(path, info.subdir, info.filename)
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
