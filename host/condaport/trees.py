"""The folders of every configured channel, made by the writer account.

Root's converge creates only the top-level folders (channels, staging, state) and gives
them to the writer account; `sync` (`condaport-channels sync`) runs as that account and
makes what lies inside: each channel's folder and subdirs, its lock file and
its index state folder. It refuses links and foreign folders instead of following them,
lists the channel trees no longer configured and, when asked, deletes them and forgets
their index state.
"""

from __future__ import annotations

import os
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path

from condaport.config import CHANNEL_NAME, HostConfig
from condaport.locking import lock_path
from condaport.packages import SUBDIR
from condaport.subdir_index import fingerprint_file, forget

FOLDER_MODE = 0o755  # NGINX reads the channel trees
PRIVATE_MODE = 0o700  # state: only the writer


class TreeError(RuntimeError):
    """Something sits where a channel's folder belongs; the message names it."""


@dataclass
class Synced:
    created: list[str] = field(default_factory=list)
    fixed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    purged: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.fixed or self.purged)

    def as_dict(self) -> dict[str, object]:
        return {
            "created": self.created,
            "fixed": self.fixed,
            "removed": self.removed,
            "purged": self.purged,
            "changed": self.changed,
        }


def _folder(path: Path, mode: int, synced: Synced, dry_run: bool) -> None:
    """`path` as a real folder of this account with `mode`, made if missing."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        synced.created.append(str(path))
        if not dry_run:
            path.mkdir(mode=mode)
            os.chmod(path, mode)  # whatever the umask
        return
    if not stat.S_ISDIR(info.st_mode):
        raise TreeError(f"{path} is not a folder (a link or a file?): move it away and converge")
    if info.st_uid != os.geteuid():
        raise TreeError(
            f"{path} belongs to uid {info.st_uid}, not to the writer account: converge the host"
            " (it hands over the trees), or move the folder away"
        )
    if stat.S_IMODE(info.st_mode) != mode:
        synced.fixed.append(str(path))
        if not dry_run:
            os.chmod(path, mode, follow_symlinks=False)


def _lock_file(path: Path, synced: Synced, dry_run: bool) -> None:
    try:
        info = path.lstat()
    except FileNotFoundError:
        synced.created.append(str(path))
        if not dry_run:
            flags = os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            os.close(os.open(path, flags, 0o600))
        return
    if not stat.S_ISREG(info.st_mode):
        raise TreeError(f"{path} is not a plain lock file (a link?): remove it and converge")


def configured_subdirs(host: HostConfig, name: str) -> list[str]:
    channel = host.channel(name)
    subdirs = list(channel.subdirs) if channel and channel.subdirs else []
    return sorted({"noarch", *subdirs})  # clients always ask for noarch


def sync(host: HostConfig, *, purge_removed: bool = False, dry_run: bool = False) -> Synced:
    """Make every configured channel's folders; list (and with `purge_removed`, delete)
    the trees of channels no longer configured."""
    synced = Synced()
    for top in (host.channels_root, host.state_dir):
        if not top.is_dir() or top.is_symlink():
            raise TreeError(f"{top} is missing or a link: converge the host (site.yml)")
    _folder(host.state_dir / "locks", PRIVATE_MODE, synced, dry_run)
    _folder(host.state_dir / "fingerprints", PRIVATE_MODE, synced, dry_run)
    for channel in host.channels:
        if not CHANNEL_NAME.match(channel.name):
            raise TreeError(f"{channel.name!r} is not a channel name")
        channel_dir = host.channels_root / channel.name
        _folder(channel_dir, FOLDER_MODE, synced, dry_run)
        for subdir in configured_subdirs(host, channel.name):
            if not SUBDIR.match(subdir):
                raise TreeError(f"{subdir!r} is not a subdir name")
            _folder(channel_dir / subdir, FOLDER_MODE, synced, dry_run)
        state = fingerprint_file(host.state_dir, channel.name, "x").parent
        _folder(state, PRIVATE_MODE, synced, dry_run)
        _lock_file(lock_path(host.state_dir, channel.name), synced, dry_run)
    configured = {channel.name for channel in host.channels}
    with os.scandir(host.channels_root) as entries:
        gone = sorted(
            entry.name
            for entry in entries
            if entry.is_dir(follow_symlinks=False)
            and not entry.name.startswith(".")
            and entry.name not in configured
        )
    for name in gone:
        synced.removed.append(name)
        if purge_removed:
            synced.purged.append(name)
            if not dry_run:
                # rmtree never follows links (it works on directory descriptors).
                shutil.rmtree(host.channels_root / name)
                forget(host.state_dir, name)
    return synced
