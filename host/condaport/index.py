"""Keep each channel subdir's repodata in step with its package files.

`status` lists stale subdirs; `run` indexes them under the channel lock. A subdir is stale
when its package files (names, sizes, mtimes, inodes, ctimes) differ from those its
repodata was last built from, or when it has no repodata. The fingerprint is recorded only
after a successful index, so a run that dies midway is simply repeated by the next one.

One unreadable package would fail the whole subdir's index, and with it every later
publish, so before indexing, the index.json of every new or changed file is checked as the
indexer reads it; a file that fails moves to `<channel>/.quarantine/<subdir>/` (never
served: NGINX refuses dot paths) and is reported, and the rest is indexed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

from condaport import repodata, shards
from condaport.browse import PAGE, write_channel_page
from condaport.config import CHANNEL_NAME
from condaport.files import dated_after_their_predecessors, replace_atomically
from condaport.locking import channel_lock
from condaport.packages import SUFFIXES, Rejected, check_archive_index

QUARANTINE = ".quarantine"
# name -> (size, mtime_ns, inode, ctime_ns). Placing a file is always a rename, so even an
# overwrite that keeps size and mtime gets a new inode and ctime.
Rows = dict[str, tuple[int, int, int, int]]


class IndexFailed(RuntimeError):
    """An index run failed; the previous repodata is still in place."""


def channel_names(channels_root: Path, only: list[str] | None = None) -> list[str]:
    names = sorted(
        p.name for p in channels_root.iterdir() if p.is_dir() and not p.name.startswith(".")
    )
    if only:
        unknown = sorted(set(only) - set(names))
        if unknown:
            raise IndexFailed(f"no such channel under {channels_root}: {', '.join(unknown)}")
        names = [n for n in names if n in only]
    return names


def subdir_names(channel_dir: Path) -> list[str]:
    return sorted(
        p.name for p in channel_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
    )


def package_rows(subdir_dir: Path) -> Rows:
    """What the fingerprint is made of, per package file: cheap (one stat each)."""
    rows: Rows = {}
    with os.scandir(subdir_dir) as entries:
        for entry in entries:
            if entry.name.startswith(".") or not entry.name.endswith(SUFFIXES):
                continue
            if not entry.is_file(follow_symlinks=False):
                continue
            st = entry.stat(follow_symlinks=False)
            rows[entry.name] = (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
    return rows


def rows_digest(rows: Rows) -> str:
    digest = hashlib.sha256()
    for name in sorted(rows):
        digest.update((name + "".join(f"\t{v}" for v in rows[name]) + "\n").encode())
    return digest.hexdigest()


def fingerprint(subdir_dir: Path) -> str:
    """Hash of the package files' names, sizes, mtimes, inodes and ctimes: changes on any write."""
    return rows_digest(package_rows(subdir_dir))


def fingerprint_file(state_dir: Path, channel: str, subdir: str) -> Path:
    return state_dir / "fingerprints" / channel / f"{subdir}.sha256"


def is_fresh(state_dir: Path, channel_dir: Path, subdir: str, rows: Rows | None = None) -> bool:
    """The one definition of an up-to-date subdir: it has repodata, and its package files
    (`rows`, read now when not given) are those its index was last built from."""
    subdir_dir = channel_dir / subdir
    if not (subdir_dir / "repodata.json").is_file():
        return False
    try:
        recorded = fingerprint_file(state_dir, channel_dir.name, subdir).read_text().strip()
    except OSError:
        return False
    return recorded == rows_digest(package_rows(subdir_dir) if rows is None else rows)


def stale_subdirs(channels_root: Path, state_dir: Path, channel: str) -> list[str]:
    channel_dir = channels_root / channel
    return [s for s in subdir_names(channel_dir) if not is_fresh(state_dir, channel_dir, s)]


def _rows_file(state_dir: Path, channel: str, subdir: str) -> Path:
    return state_dir / "fingerprints" / channel / f"{subdir}.files.json"


def record_fingerprint(state_dir: Path, channel: str, subdir: str, rows: Rows) -> None:
    target = fingerprint_file(state_dir, channel, subdir)
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # The rows first: the fingerprint is what marks the subdir as done.
    rows_json = json.dumps({k: list(v) for k, v in rows.items()})
    # Not fsynced: a fingerprint lost in a crash only makes the next run index again.
    replace_atomically(_rows_file(state_dir, channel, subdir), rows_json.encode(), durable=False)
    replace_atomically(target, (rows_digest(rows) + "\n").encode(), durable=False)


def replaced_since_indexed(state_dir: Path, channel: str, subdir: str, rows: Rows) -> bool:
    """Whether a file the last index saw under a name is now another file of that name
    (or whether that is unknown): the index must then read every record again, since
    the backends keep the record of a name they already list."""
    previous = _recorded_rows(state_dir, channel, subdir)
    return previous is None or any(n in previous and previous[n] != r for n, r in rows.items())


def _recorded_rows(state_dir: Path, channel: str, subdir: str) -> Rows | None:
    """The files the last successful index saw, or None when unknown (first run, upgrade)."""
    try:
        data = json.loads(_rows_file(state_dir, channel, subdir).read_text())
        return {name: tuple(int(v) for v in row) for name, row in data.items()}
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def quarantine(channel_dir: Path, subdir: str, filename: str, reason: str) -> dict[str, str]:
    """Move a file the indexer cannot read out of the served tree; nothing is deleted."""
    folder = channel_dir
    for part in (QUARANTINE, subdir):  # one level at a time: never into a link
        folder = folder / part
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            pass
        if not stat.S_ISDIR(os.lstat(folder).st_mode):
            raise IndexFailed(f"{folder} is not a folder (a link?): remove it, then index again")
    target = folder / filename
    if os.path.lexists(target):
        target = folder / f"{filename}.{time.time_ns()}"
    os.rename(channel_dir / subdir / filename, target)
    moved_to = str(target.relative_to(channel_dir.parent))
    where = f"{channel_dir.name}/{subdir}/{filename}"
    print(f"condaport-index: quarantined {where}: {reason} (moved to {moved_to})", file=sys.stderr)
    return {"file": where, "reason": reason, "moved_to": moved_to}


def screen(channel_dir: Path, subdir: str, filenames: list[str]) -> list[dict[str, str]]:
    """Quarantine each named file whose index.json the indexer could not read (checked as
    publishing checks it), or that describes another subdir than the one it sits in."""
    moved = []
    for filename in filenames:
        path = channel_dir / subdir / filename
        try:
            facts = check_archive_index(path)
            if facts.subdir != subdir:
                raise Rejected(
                    f"info/index.json names subdir {facts.subdir!r}, but the file sits in {subdir}"
                )
        except Rejected as exc:
            if path.is_file():
                moved.append(quarantine(channel_dir, subdir, filename, str(exc)))
    return moved


def _index_with_rattler(channel_dir: Path, subdir: str, force: bool) -> None:
    from rattler import Subdir
    from rattler.index import index_fs

    try:
        asyncio.run(
            index_fs(
                channel_dir,
                target_platform=Subdir(subdir),
                write_zst=True,
                write_shards=False,
                # rattler keeps the record of a file name its repodata already lists, even
                # when the file was replaced: then every record must be read again.
                force=force,
            )
        )
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # rattler panics surface as BaseException
        raise IndexFailed(f"rattler index of {channel_dir.name}/{subdir} failed: {exc}") from None


def _index_with_conda_index(channel_dir: Path, subdir: str, conda_python: str) -> None:
    argv = [conda_python, "-m", "conda_index", "--subdir", subdir, "--zst", str(channel_dir)]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise IndexFailed(
            f"conda-index of {channel_dir.name}/{subdir} exited {result.returncode}: "
            + " | ".join(tail)
        )


def index_subdir(
    channel_dir: Path,
    subdir: str,
    backend: str,
    conda_python: str | None,
    *,
    force: bool = False,
) -> None:
    """Index one subdir; with force, read every package again (some were replaced)."""
    subdir_dir = channel_dir / subdir
    try:
        before = json.loads((subdir_dir / "repodata.json").read_bytes())
    except (OSError, ValueError):
        before = None
    indexer = backend_named(backend, conda_python)
    with dated_after_their_predecessors(index_files(channel_dir, subdir)):
        indexer.index(channel_dir, subdir, force)
    try:
        written = json.loads((subdir_dir / "repodata.json").read_bytes())
    except FileNotFoundError:
        raise IndexFailed(
            f"{backend} wrote no repodata.json for {channel_dir.name}/{subdir}"
        ) from None
    except ValueError as exc:
        raise IndexFailed(f"{backend} wrote unreadable repodata for {subdir}: {exc}") from None
    # The shards are condaport's, rendered from the records the backend wrote (one writer):
    # only the names whose records changed, unless there was no repodata to compare with.
    changed = shards.changed_names(before if isinstance(before, dict) else None, written)
    shards.sync(subdir_dir, shards.by_name(written), changed)


def index_files(channel_dir: Path, subdir: str) -> list[Path]:
    """What an index backend may rewrite: the subdir's files that are not packages (nor
    dot files), and the channel's channeldata.json."""
    subdir_files = [
        path
        for path in (channel_dir / subdir).glob("*")
        if path.is_file() and not path.name.startswith(".") and not path.name.endswith(SUFFIXES)
    ]
    return [*sorted(subdir_files), channel_dir / "channeldata.json"]


class Backend:
    """An indexer that writes a subdir's repodata.json (and .zst) from its package files."""

    name = ""
    # Whether it writes the records condaport's in-place editor writes (rattler's), so a
    # change may be applied by editing them instead of a full run.
    edits_in_place = False

    def index(self, channel_dir: Path, subdir: str, force: bool) -> None:
        raise NotImplementedError


class RattlerBackend(Backend):
    name = "rattler"
    edits_in_place = True

    def index(self, channel_dir: Path, subdir: str, force: bool) -> None:
        _index_with_rattler(channel_dir, subdir, force)


class CondaIndexBackend(Backend):
    name = "conda-index"

    def __init__(self, conda_python: str | None) -> None:
        if not conda_python:
            raise IndexFailed("the conda-index backend needs --conda-python")
        self.conda_python = conda_python

    def index(self, channel_dir: Path, subdir: str, force: bool) -> None:
        if force:
            # conda-index caches records by file name, size and mtime in the subdir's
            # .cache folder: without it, every package is read again.
            shutil.rmtree(channel_dir / subdir / ".cache", ignore_errors=True)
        _index_with_conda_index(channel_dir, subdir, self.conda_python)


BACKENDS = ("rattler", "conda-index")


def backend_named(name: str, conda_python: str | None = None) -> Backend:
    """The backend the host configuration (or an option) names."""
    if name == RattlerBackend.name:
        return RattlerBackend()
    if name == CondaIndexBackend.name:
        return CondaIndexBackend(conda_python)
    raise IndexFailed(f"unknown backend {name!r} (one of {', '.join(BACKENDS)})")


def index_subdir_apart(
    channel_dir: Path, subdir: str, backend: str, conda_python: str | None, *, force: bool = False
) -> None:
    """`index_subdir` in a short-lived child process, for long-running services.

    rattler's full index costs about 90 MB however small the subdir, plus every package it
    has not indexed yet read whole into memory; a child returns all of it when it exits,
    where the service would keep its peak.
    """
    argv = [sys.executable, "-m", "condaport.index_command", "subdir", str(channel_dir), subdir]
    argv += ["--backend", backend] + (["--conda-python", conda_python] if conda_python else [])
    argv += ["--force"] if force else []
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        said = result.stderr.strip().splitlines()
        reason = said[-1].removeprefix("condaport-index: ") if said else ""
        raise IndexFailed(
            reason or f"index of {channel_dir.name}/{subdir} exited {result.returncode}"
        )


def _digests(path: Path) -> tuple[str, str, int]:
    """sha256, md5 and size of a file, in one read."""
    sha256, md5, size = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha256.update(block)
            md5.update(block)
            size += len(block)
    return sha256.hexdigest(), md5.hexdigest(), size


def _index_in_place(
    channel_dir: Path, subdir: str, previous: Rows, rows: Rows
) -> list[dict[str, str]]:
    """Bring the subdir's repodata (and shards) up to date by editing the records of the
    files that changed since `previous`, as uploads do, instead of a full index that
    rewrites everything: added and replaced files get their record, removed ones lose it.
    A file whose record cannot be built goes to quarantine. Raises RepodataUnusable when
    there is no repodata to edit."""
    subdir_dir = channel_dir / subdir
    changes: dict[str, dict | None] = {name: None for name in previous if name not in rows}
    quarantined = []
    for name in sorted(n for n, row in rows.items() if previous.get(n) != row):
        path = subdir_dir / name
        try:
            sha256, md5, size = _digests(path)
            changes[name] = repodata.package_record(path, sha256=sha256, md5=md5, size=size)
        except (Rejected, ValueError, OSError) as exc:
            quarantined.append(quarantine(channel_dir, subdir, name, str(exc)))
    repodata.SubdirIndex().update_many(subdir_dir, changes)
    return quarantined


def _index_screened(
    channel_dir: Path,
    state_dir: Path,
    subdir: str,
    backend: str,
    conda_python: str | None,
    force: bool,
) -> list[dict[str, str]]:
    """Screen, index and record one subdir; returns what was quarantined."""
    channel = channel_dir.name
    subdir_dir = channel_dir / subdir
    previous = _recorded_rows(state_dir, channel, subdir)
    rows = package_rows(subdir_dir)
    # Files the last successful index did not see as they are now; all of them when that
    # is unknown (first run, or a host upgraded from a version without per-file state).
    changed = sorted(n for n, row in rows.items() if previous is None or previous.get(n) != row)
    quarantined = screen(channel_dir, subdir, changed)
    rows = package_rows(subdir_dir)  # taken before indexing: a later change stays stale
    if previous is not None and backend_named(backend, conda_python).edits_in_place and not force:
        try:
            quarantined += _index_in_place(channel_dir, subdir, previous, rows)
        except repodata.RepodataUnusable:
            pass  # no repodata to edit: the backend indexes the subdir fully below
        except OSError as exc:  # a full disk: the last good index stays, the subdir stale
            reason = exc.strerror or str(exc)
            raise IndexFailed(f"index of {channel}/{subdir} failed: {reason}") from None
        else:
            record_fingerprint(state_dir, channel, subdir, package_rows(subdir_dir))
            return quarantined
    replaced = replaced_since_indexed(state_dir, channel, subdir, rows)
    try:
        index_subdir(channel_dir, subdir, backend, conda_python, force=force or replaced)
    except IndexFailed:
        # Something the screening of changed files could not see (a file swapped in place
        # by hand, keeping every stat): screen the rest, and retry once if that found it.
        late = screen(channel_dir, subdir, sorted(set(rows) - set(changed)))
        if not late:
            raise
        quarantined += late
        rows = package_rows(subdir_dir)
        index_subdir(channel_dir, subdir, backend, conda_python, force=True)
    record_fingerprint(state_dir, channel, subdir, rows)
    return quarantined


def run(
    channels_root: Path,
    state_dir: Path,
    channels: list[str] | None,
    *,
    force: bool = False,
    backend: str = "rattler",
    conda_python: str | None = None,
    quarantined: list[dict[str, str]] | None = None,
) -> dict[str, list[str]]:
    """Index the stale (or, with force, all) subdirs of each channel; returns what ran.

    Files moved to quarantine are appended to `quarantined` when it is given.
    """
    indexed: dict[str, list[str]] = {}
    for channel in channel_names(channels_root, channels):
        channel_dir = channels_root / channel
        with channel_lock(state_dir, channel):
            (channel_dir / "noarch").mkdir(exist_ok=True)  # clients always ask for noarch
            todo = (
                subdir_names(channel_dir)
                if force
                else stale_subdirs(channels_root, state_dir, channel)
            )
            for subdir in todo:
                moved = _index_screened(
                    channel_dir, state_dir, subdir, backend, conda_python, force
                )
                if quarantined is not None:
                    quarantined.extend(moved)
                indexed.setdefault(channel, []).append(subdir)
            if todo or not (channel_dir / PAGE).exists():
                write_channel_page(channel_dir, channel)
                indexed.setdefault(channel, [])
    return indexed


def channels_without_page(channels_root: Path, channels: list[str] | None) -> list[str]:
    return [
        c for c in channel_names(channels_root, channels) if not (channels_root / c / PAGE).exists()
    ]


def forget(state_dir: Path, channel: str) -> bool:
    """Drop a removed channel's fingerprints, so a channel of that name starts afresh."""
    if not CHANNEL_NAME.match(channel):
        raise IndexFailed(f"{channel!r} is not a channel name")
    directory = fingerprint_file(state_dir, channel, "x").parent
    if not directory.is_dir():
        return False
    shutil.rmtree(directory)
    return True
