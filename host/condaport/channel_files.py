"""The package files of one channel: where a file of a name lives, placing, deleting,
sweeping what a killed writer left, and quarantine.

Every change to a channel's package files goes through `ChannelFiles`; what the index
makes of them is the subdir's index owner's (condaport.subdir_index). Callers hold the
channel lock for anything that changes the tree.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from condaport.packages import SUFFIXES, Rejected, check_archive_indexes, is_package_name

QUARANTINE = ".quarantine"
# name -> (size, mtime_ns, inode, ctime_ns). Placing a file is always a rename, so even an
# overwrite that keeps size and mtime gets a new inode and ctime.
Rows = dict[str, tuple[int, int, int, int]]


class NotAFolder(RuntimeError):
    """A quarantine level is something else than a real folder (a link?)."""


def visible_folders(parent: Path) -> list[str]:
    """The names of a folder's sub-folders that are not dot folders, sorted."""
    return sorted(p.name for p in parent.iterdir() if p.is_dir() and not p.name.startswith("."))


def row_of(info: os.stat_result) -> tuple[int, int, int, int]:
    """What identifies a package file's content in the fingerprint, from its stat."""
    return (info.st_size, info.st_mtime_ns, info.st_ino, info.st_ctime_ns)


def package_rows(subdir_dir: Path) -> Rows:
    """Each package file of a subdir with what identifies its content: cheap (one stat each)."""
    rows: Rows = {}
    with os.scandir(subdir_dir) as entries:
        for entry in entries:
            if entry.name.startswith(".") or not entry.name.endswith(SUFFIXES):
                continue
            if not entry.is_file(follow_symlinks=False):
                continue
            rows[entry.name] = row_of(entry.stat(follow_symlinks=False))
    return rows


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


class ChannelFiles:
    """The package files of the channel at `channel_dir`."""

    def __init__(self, channel_dir: Path) -> None:
        self.channel_dir = channel_dir
        self.name = channel_dir.name

    def subdir_dir(self, subdir: str) -> Path:
        return self.channel_dir / subdir

    def subdirs(self) -> list[str]:
        return visible_folders(self.channel_dir)

    def rows(self, subdir: str) -> Rows:
        return package_rows(self.channel_dir / subdir)

    def find(self, filename: str) -> Path | None:
        """Where a file of this name already lives in the channel, whatever its subdir."""
        for subdir_dir in self.channel_dir.iterdir():
            candidate = subdir_dir / filename
            if not subdir_dir.name.startswith(".") and candidate.is_file():
                return candidate
        return None

    def package_files(self, subdir: str) -> list[Path]:
        """The subdir's package files (not links, not dot files)."""
        folder = self.channel_dir / subdir
        return [
            entry
            for entry in folder.iterdir()
            if not entry.name.startswith(".")
            and is_package_name(entry.name)
            and entry.is_file()
            and not entry.is_symlink()
        ]

    def place(self, staged: Path, subdir: str, filename: str) -> None:
        """Move a validated staged file in as `subdir/filename`."""
        move_into_place(staged, self.channel_dir / subdir / filename)

    def delete(self, subdir: str, filename: str) -> bool:
        """Delete one package file; False when there was none."""
        try:
            (self.channel_dir / subdir / filename).unlink()
        except FileNotFoundError:
            return False
        return True

    def sweep_partials(self) -> list[Path]:
        """Remove half-written files a killed writer left; call only while holding the lock.

        With the lock held no placement is under way, so every `.partial` file is garbage.
        They are never served (dot files) nor indexed, but they waste disk.
        """
        swept = []
        with os.scandir(self.channel_dir) as subdirs:
            folders = [Path(e.path) for e in subdirs if e.is_dir(follow_symlinks=False)]
        for folder in folders:
            # A plain scan: glob costs twice as much in a folder of 100,000 packages, and
            # this runs before every upload.
            with os.scandir(folder) as entries:
                partials = [
                    Path(e.path)
                    for e in entries
                    if e.name.startswith(".") and e.name.endswith(".partial")
                ]
            for partial in partials:
                partial.unlink(missing_ok=True)
                swept.append(partial)
        return swept

    def quarantine(self, subdir: str, filename: str, reason: str) -> dict[str, str]:
        """Move a file the indexer cannot read out of the served tree (NGINX refuses dot
        paths); nothing is deleted."""
        folder = self.channel_dir
        for part in (QUARANTINE, subdir):  # one level at a time: never into a link
            folder = folder / part
            try:
                folder.mkdir(mode=0o700)
            except FileExistsError:
                pass
            if not stat.S_ISDIR(os.lstat(folder).st_mode):
                raise NotAFolder(f"{folder} is not a folder (a link?): remove it, then index again")
        target = folder / filename
        if os.path.lexists(target):
            target = folder / f"{filename}.{time.time_ns()}"
        os.rename(self.channel_dir / subdir / filename, target)
        moved_to = str(target.relative_to(self.channel_dir.parent))
        where = f"{self.name}/{subdir}/{filename}"
        print(
            f"condaport-index: quarantined {where}: {reason} (moved to {moved_to})",
            file=sys.stderr,
        )
        return {"file": where, "reason": reason, "moved_to": moved_to}

    def screen(self, subdir: str, filenames: Iterable[str]) -> list[dict[str, str]]:
        """Quarantine each named file whose index.json the indexer could not read (checked
        as publishing checks it), or that describes another subdir than the one it sits in."""
        moved = []
        names = list(filenames)
        paths = [self.channel_dir / subdir / filename for filename in names]
        for filename, path, facts in zip(names, paths, check_archive_indexes(paths), strict=True):
            try:
                if isinstance(facts, Rejected):
                    raise facts
                if facts.subdir != subdir:
                    raise Rejected(
                        f"info/index.json names subdir {facts.subdir!r},"
                        f" but the file sits in {subdir}"
                    )
            except Rejected as exc:
                if path.is_file():
                    moved.append(self.quarantine(subdir, filename, str(exc)))
        return moved
