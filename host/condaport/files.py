"""Replacing a served file so that readers see the old one or the new one, whole, and
so that caches holding the old one see that it changed.

Edges, proxy channels and clients revalidate index files with NGINX's ETag (the mtime in
whole seconds, and the size) and Last-Modified; NGINX answers 304 when both still match.
An index rewritten within the same second at the same size (a version string of the same
length in channeldata.json, a package swapped for a same-size build) would look unchanged
and stay stale in every cache. Such a replacement is dated one second after the file it
replaces; any other keeps the clock's time, so dates drift ahead only in that rare case.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG


@dataclass(frozen=True)
class _Served:
    """What NGINX derives its validators from, and what tells a replacement apart."""

    second: int
    size: int
    identity: tuple[int, int]  # inode, mtime in ns


def _served(path: Path) -> _Served | None:
    """The file at `path` itself, or None if there is none or it is not a regular file: a
    link planted where an index file goes must not lead the dating to another file."""
    try:
        stat = os.lstat(path)
    except FileNotFoundError:
        return None
    if not S_ISREG(stat.st_mode):
        return None
    return _Served(int(stat.st_mtime), stat.st_size, (stat.st_ino, stat.st_mtime_ns))


def _date_after(path: Path, now: _Served, previous: _Served) -> None:
    """Date `path` (now as `now`) a second after `previous` if NGINX would give both the
    same ETag."""
    if now.size == previous.size and now.second <= previous.second:
        later = previous.second + 1
        os.utime(path, (later, later), follow_symlinks=False)


def replace_atomically(target: Path, content: bytes, *, durable: bool = True) -> None:
    """Write `content` to a dot file beside `target` (never served, same file system), then
    rename it over `target` with mode 0644; the temp file goes if anything fails first.

    `durable=False` skips the fsync, for bookkeeping whose loss after a crash only costs a
    repeated index run (fingerprints)."""
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    partial = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fchmod(handle.fileno(), 0o644)
            if durable:
                os.fsync(handle.fileno())
        before, written = _served(target), _served(partial)
        if before is not None and written is not None:
            _date_after(partial, written, before)
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


@contextmanager
def dated_after_their_predecessors(paths: Iterable[Path]) -> Iterator[None]:
    """For writers that are not ours (the index backends): each of `paths` replaced or
    rewritten inside the block is dated as `replace_atomically` dates its files."""
    before = {path: _served(path) for path in paths}
    try:
        yield
    finally:
        for path, previous in before.items():
            now = _served(path)
            if previous is not None and now is not None and now.identity != previous.identity:
                _date_after(path, now, previous)
