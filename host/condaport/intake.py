"""One uploaded package into a channel: validate, place and index, under the channel lock.

The upload service (condaport.upload) calls this once the body is in staging. Validation
is the publish path's (`condaport.packages.inspect_package`), placement its rename
(`condaport.publish`), and the lock the one every writer takes (`condaport.locking`), so a
playbook publish, an index run and any number of uploads never step on each other.

The subdir is indexed before the function returns, so an upload that was answered can be
installed. When the subdir's index was up to date, only the new record is added to the
existing repodata (`condaport.repodata`: milliseconds, where a full index of a large
subdir takes seconds) and its fingerprint recorded, so the next index run skips it;
otherwise (missing or unreadable repodata, files copied in by hand, another backend) the
subdir is indexed fully, as `condaport-index run` would.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from condaport import repodata
from condaport.config import ChannelConfig, HostConfig
from condaport.index import (
    IndexFailed,
    Rows,
    backend_named,
    index_subdir_apart,
    is_fresh,
    package_rows,
    quarantine,
    record_fingerprint,
    replaced_since_indexed,
)
from condaport.locking import LockTimeout, channel_lock
from condaport.packages import Limits, PackageInfo, Rejected, inspect_package, sha256_of
from condaport.provenance import forget_files, record_placement
from condaport.publish import existing_file, move_into_place, sweep_partials


class Conflict(RuntimeError):
    """A file of that name is already in the channel with other content (HTTP 409)."""


class WrongSubdir(ValueError):
    """The package's own subdir is not the one the request named (HTTP 400)."""


class Missing(LookupError):
    """Nothing of that name to remove (HTTP 404)."""


@dataclass(frozen=True)
class Result:
    status: str  # added, replaced, unchanged, deleted
    subdir: str
    filename: str
    sha256: str = ""
    size: int = 0
    indexed: str = ""  # incremental, full, or "" when the index was already right


class ChannelGuard:
    """In-process order first, then the channel's flock: threads of this service queue on
    a lock of their own instead of all polling the file lock."""

    def __init__(self) -> None:
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    @contextmanager
    def hold(self, state_dir: Path, channel: str, timeout: float) -> Iterator[None]:
        with self._guard:
            lock = self._locks.setdefault(channel, threading.Lock())
        if not lock.acquire(timeout=timeout):
            raise LockTimeout(f"channel {channel!r} is busy (another upload held it {timeout} s)")
        try:
            with channel_lock(state_dir, channel, timeout=timeout):
                yield
        finally:
            lock.release()


@dataclass
class SubdirState:
    """A subdir as found under the lock: its files, and whether its index matches them."""

    rows: Rows
    fresh: bool

    @classmethod
    def read(cls, host: HostConfig, channel: str, subdir: str) -> SubdirState:
        channel_dir = host.channels_root / channel
        rows = package_rows(channel_dir / subdir)
        return cls(rows, is_fresh(host.state_dir, channel_dir, subdir, rows))


def _edits_in_place(host: HostConfig) -> bool:
    """Whether the host's backend writes the records the in-place editor writes."""
    return backend_named(host.index_backend, host.conda_python).edits_in_place


def _bring_index_up_to_date(
    host: HostConfig,
    channel: str,
    subdir: str,
    state: SubdirState,
    change: tuple[str, dict | None] | None,
    editor: repodata.SubdirIndex,
) -> str:
    """Index `subdir` after `change` (filename, record or None for removed); returns how."""
    channel_dir = host.channels_root / channel
    subdir_dir = channel_dir / subdir
    if state.fresh and change is None:
        return ""
    if state.fresh and _edits_in_place(host):
        filename, record = change
        rows = dict(state.rows)
        if record is None:
            rows.pop(filename, None)
        else:
            placed = (subdir_dir / filename).stat()
            rows[filename] = (placed.st_size, placed.st_mtime_ns, placed.st_ino, placed.st_ctime_ns)
        try:
            editor.update(subdir_dir, filename, record)
        except repodata.RepodataUnusable:
            pass
        else:
            record_fingerprint(host.state_dir, channel, subdir, rows)
            return "incremental"
    # As condaport-index run does: the fingerprint taken before indexing is recorded after.
    before = package_rows(subdir_dir)
    try:
        _index_fully(host, channel, subdir, before)
    except IndexFailed as exc:
        if change is None or change[1] is None:
            raise
        # The file just placed is what the index could not read: it leaves the served
        # tree, the subdir is indexed without it, and the uploader is told why (422).
        quarantine(channel_dir, subdir, change[0], str(exc))
        _index_fully(host, channel, subdir, package_rows(subdir_dir))
        raise Rejected(
            f"the indexer could not read the package, so it was not published: {exc}"
        ) from None
    return "full"


def _index_fully(host: HostConfig, channel: str, subdir: str, rows: Rows) -> None:
    """Index the subdir in a child process as `condaport-index run` would (every record
    read again when a file was replaced under a name), then record `rows`."""
    force = replaced_since_indexed(host.state_dir, channel, subdir, rows)
    channel_dir = host.channels_root / channel
    index_subdir_apart(channel_dir, subdir, host.index_backend, host.conda_python, force=force)
    record_fingerprint(host.state_dir, channel, subdir, rows)


def _catch_up(host: HostConfig, channel: str, subdir: str) -> SubdirState | None:
    """Index the subdir fully as it is, before the upload enters it; None if that failed.

    rattler's full index reads each package it has not indexed yet whole into memory
    (measured: 620 MB peak for one 256 MiB package). Run before placing, it never reads
    the upload, which then enters by the in-place edit (streamed); and it runs in a child
    process (about 90 MB even for an empty subdir), so the service stays small.
    """
    before = package_rows(host.channels_root / channel / subdir)
    try:
        _index_fully(host, channel, subdir, before)
    except IndexFailed:
        return None  # indexed after placing instead, as before: errors surface there
    return SubdirState.read(host, channel, subdir)


def accept(
    host: HostConfig,
    channel: ChannelConfig,
    staged: Path,
    *,
    md5: str,
    url_subdir: str | None,
    overwrite: bool,
    guard: ChannelGuard,
    lock_timeout: float,
    editor: repodata.SubdirIndex,
    validating: AbstractContextManager[object] | None = None,
    uploader_without_delete_right: str | None = None,
) -> Result:
    """Validate the staged file and make it installable; raises Rejected (bad package),
    WrongSubdir, Conflict or LockTimeout. The staged file is moved or left for the caller.

    `validating` bounds how many validations run at once; it is not held while waiting
    for the channel lock, so uploads queued on a busy channel do not stop others from
    being validated meanwhile. `uploader_without_delete_right` names the uploader when it
    may not delete: retention then leaves the file alone (condaport.provenance)."""
    with validating or nullcontext():
        info: PackageInfo = inspect_package(
            staged,
            list(channel.subdirs) or None,
            scratch_dir=staged.parent,  # on the staging filesystem, not in /tmp
            limits=Limits(unpacked_size=host.package_max_unpacked_size),
        )
        record = repodata.record_for(info, md5=md5)
    if url_subdir is not None and info.subdir != url_subdir:
        raise WrongSubdir(
            f"the package says its subdir is {info.subdir!r}, but it was sent to {url_subdir!r}"
        )
    channel_dir = host.channels_root / channel.name
    subdir_dir = channel_dir / info.subdir
    if not subdir_dir.is_dir():
        raise WrongSubdir(f"subdir {info.subdir!r} does not exist in channel {channel.name!r}")
    with guard.hold(host.state_dir, channel.name, lock_timeout):
        sweep_partials(channel_dir)
        state = SubdirState.read(host, channel.name, info.subdir)
        caught_up = ""
        if _edits_in_place(host) and not (state.fresh and editor.usable(subdir_dir)):
            fresh = _catch_up(host, channel.name, info.subdir)
            if fresh is not None:
                state, caught_up = fresh, "full"
        current = existing_file(channel_dir, info.filename)
        if current is not None:
            same = (
                current.parent.name == info.subdir
                and current.stat().st_size == info.size
                and sha256_of(current) == info.sha256
            )
            if same:
                how = _bring_index_up_to_date(host, channel.name, info.subdir, state, None, editor)
                how = caught_up or how
                return Result("unchanged", info.subdir, info.filename, info.sha256, info.size, how)
            if not (overwrite and current.parent.name == info.subdir):
                where = f"{current.parent.name}/{current.name}"
                raise Conflict(f"{where} is already in the channel with different content")
        move_into_place(staged, subdir_dir / info.filename)
        how = _bring_index_up_to_date(
            host, channel.name, info.subdir, state, (info.filename, record), editor
        )
        how = caught_up or how
        record_placement(
            host.state_dir,
            channel.name,
            [f"{info.subdir}/{info.filename}"],
            uploader_without_delete_right,
        )
    status = "added" if current is None else "replaced"
    return Result(status, info.subdir, info.filename, info.sha256, info.size, how)


def remove(
    host: HostConfig,
    channel: ChannelConfig,
    subdir: str,
    filename: str,
    *,
    guard: ChannelGuard,
    lock_timeout: float,
    editor: repodata.SubdirIndex,
) -> Result:
    """Delete one package file and drop it from the index; raises Missing or LockTimeout."""
    subdir_dir = host.channels_root / channel.name / subdir
    with guard.hold(host.state_dir, channel.name, lock_timeout):
        target = subdir_dir / filename
        if not target.is_file():
            raise Missing(f"{subdir}/{filename} is not in channel {channel.name!r}")
        state = SubdirState.read(host, channel.name, subdir)
        target.unlink()
        how = _bring_index_up_to_date(host, channel.name, subdir, state, (filename, None), editor)
        forget_files(host.state_dir, channel.name, [f"{subdir}/{filename}"])
    return Result("deleted", subdir, filename, indexed=how)
