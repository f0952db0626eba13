"""Index runs over channels: every stale (or, forced, every) subdir of each channel is
brought up to date by its owner (condaport.subdir_index), under the channel lock, and the
channel's page is rendered again. The `condaport channel changed` handler and the SSH
publish run this; `condaport-index` is its command line.
"""

from __future__ import annotations

from pathlib import Path

from condaport.browse import PAGE, write_channel_page
from condaport.channel_files import ChannelFiles, visible_folders
from condaport.index_backends import BACKENDS, IndexFailed, backend_named
from condaport.locking import channel_lock
from condaport.subdir_index import SubdirIndex, forget

__all__ = ["BACKENDS", "IndexFailed", "channel_names", "forget", "run", "stale_subdirs"]


def channel_names(channels_root: Path, only: list[str] | None = None) -> list[str]:
    names = visible_folders(channels_root)
    if only:
        unknown = sorted(set(only) - set(names))
        if unknown:
            raise IndexFailed(f"no such channel under {channels_root}: {', '.join(unknown)}")
        names = [n for n in names if n in only]
    return names


def owners(
    channels_root: Path,
    state_dir: Path,
    channel: str,
    backend: str = "rattler",
    conda_python: str | None = None,
) -> list[SubdirIndex]:
    """The index owner of each subdir of a channel."""
    files = ChannelFiles(channels_root / channel)
    indexer = backend_named(backend, conda_python)
    return [SubdirIndex(files, subdir, state_dir, indexer) for subdir in files.subdirs()]


def stale_subdirs(channels_root: Path, state_dir: Path, channel: str) -> list[str]:
    return [o.subdir for o in owners(channels_root, state_dir, channel) if not o.is_fresh()]


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
            todo = []
            for owner in owners(channels_root, state_dir, channel, backend, conda_python):
                rows = owner.rows()  # one look at the files decides and indexes (a stat each)
                if force or not owner.is_fresh(rows):
                    todo.append((owner, rows))
            for owner, rows in todo:
                moved = owner.refresh(force=force, rows=rows)
                if quarantined is not None:
                    quarantined.extend(moved)
                indexed.setdefault(channel, []).append(owner.subdir)
            if todo or not (channel_dir / PAGE).exists():
                write_channel_page(channel_dir, channel)
                indexed.setdefault(channel, [])
    return indexed


def channels_without_page(channels_root: Path, channels: list[str] | None) -> list[str]:
    return [
        c for c in channel_names(channels_root, channels) if not (channels_root / c / PAGE).exists()
    ]
