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
from condaport.channel_files import Rows
from condaport.config import ChannelConfig, HostConfig
from condaport.index_backends import IndexFailed
from condaport.locking import LockTimeout, channel_lock
from condaport.packages import Limits, PackageInfo, Rejected, inspect_package, sha256_of
from condaport.provenance import forget_files, record_placement
from condaport.subdir_index import Indexes, SubdirIndex


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
    def read(cls, owner: SubdirIndex) -> SubdirState:
        rows = owner.rows()
        return cls(rows, owner.is_fresh(rows))


def _bring_index_up_to_date(
    owner: SubdirIndex, state: SubdirState, change: tuple[str, dict | None] | None
) -> str:
    """Index the subdir after `change` (filename, record or None for removed); returns how."""
    if change is None:
        if state.fresh:
            return ""
        owner.rebuild()
        return "full"
    filename, record = change
    try:
        return owner.change({filename: record}, state.rows, state.fresh)
    except IndexFailed as exc:
        if record is None:
            raise
        # The file just placed is what the index could not read: it leaves the served
        # tree, the subdir is indexed without it, and the uploader is told why (422).
        owner.files.quarantine(owner.subdir, filename, str(exc))
        owner.rebuild()
        raise Rejected(
            f"the indexer could not read the package, so it was not published: {exc}"
        ) from None


def _catch_up(owner: SubdirIndex) -> SubdirState | None:
    """Index the subdir fully as it is, before the upload enters it; None if that failed.

    rattler's full index reads each package it has not indexed yet whole into memory
    (measured: 620 MB peak for one 256 MiB package). Run before placing, it never reads
    the upload, which then enters by the in-place edit (streamed); and it runs in a child
    process (about 90 MB even for an empty subdir), so the service stays small.
    """
    try:
        owner.rebuild()
    except IndexFailed:
        return None  # indexed after placing instead, as before: errors surface there
    return SubdirState.read(owner)


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
    indexes: Indexes,
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
    if not (channel_dir / info.subdir).is_dir():
        raise WrongSubdir(f"subdir {info.subdir!r} does not exist in channel {channel.name!r}")
    owner = indexes.of(channel_dir, info.subdir)
    files = owner.files
    with guard.hold(host.state_dir, channel.name, lock_timeout):
        files.sweep_partials()
        state = SubdirState.read(owner)
        caught_up = ""
        if owner.backend.edits_in_place and not (state.fresh and owner.editable()):
            fresh = _catch_up(owner)
            if fresh is not None:
                state, caught_up = fresh, "full"
        current = files.find(info.filename)
        if current is not None:
            same = (
                current.parent.name == info.subdir
                and current.stat().st_size == info.size
                and sha256_of(current) == info.sha256
            )
            if same:
                how = _bring_index_up_to_date(owner, state, None)
                return Result(
                    "unchanged",
                    info.subdir,
                    info.filename,
                    info.sha256,
                    info.size,
                    caught_up or how,
                )
            if not (overwrite and current.parent.name == info.subdir):
                where = f"{current.parent.name}/{current.name}"
                raise Conflict(f"{where} is already in the channel with different content")
        files.place(staged, info.subdir, info.filename)
        how = _bring_index_up_to_date(owner, state, (info.filename, record))
        how = caught_up or how  # the catch-up index is what the upload cost
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
    indexes: Indexes,
) -> Result:
    """Delete one package file and drop it from the index; raises Missing or LockTimeout."""
    owner = indexes.of(host.channels_root / channel.name, subdir)
    with guard.hold(host.state_dir, channel.name, lock_timeout):
        if not (owner.folder / filename).is_file():
            raise Missing(f"{subdir}/{filename} is not in channel {channel.name!r}")
        state = SubdirState.read(owner)
        owner.files.delete(subdir, filename)
        how = _bring_index_up_to_date(owner, state, (filename, None))
        forget_files(host.state_dir, channel.name, [f"{subdir}/{filename}"])
    return Result("deleted", subdir, filename, indexed=how)
