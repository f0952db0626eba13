"""Replacing a served file so that readers see the old one or the new one, whole.

A replacement is also dated at least one whole second after the file it replaces. NGINX's
Last-Modified and ETag (mtime in seconds, and size) are what edges, proxy channels and
clients revalidate with: an index rewritten within the same second at the same size (a
new version string of the same length in channeldata.json, say) would otherwise answer
304 and leave every cached copy stale.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

# (inode, mtime in ns) of a file as it was, to tell whether it has been replaced since.
Identity = tuple[int, int]


def _seconds_and_identity(path: Path) -> tuple[int, Identity] | None:
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return int(stat.st_mtime), (stat.st_ino, stat.st_mtime_ns)


def _date_after(path: Path, previous_second: int) -> None:
    """Move `path`'s mtime past `previous_second` if the clock has not got there yet."""
    if int(os.stat(path).st_mtime) <= previous_second:
        later = previous_second + 1
        os.utime(path, (later, later))


def replace_atomically(target: Path, content: bytes) -> None:
    """Write `content` to a dot file beside `target` (never served, same file system), then
    rename it over `target` with mode 0644; the temp file goes if anything fails first."""
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    partial = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fchmod(handle.fileno(), 0o644)
            os.fsync(handle.fileno())
        before = _seconds_and_identity(target)
        if before is not None:
            _date_after(partial, before[0])
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


@contextmanager
def dated_after_their_predecessors(paths: Iterable[Path]) -> Iterator[None]:
    """For writers that are not ours (the index backends): each of `paths` replaced or
    rewritten inside the block ends up dated after the file it replaced."""
    before = {path: _seconds_and_identity(path) for path in paths}
    try:
        yield
    finally:
        _date_replaced(before)


def _date_replaced(before: dict[Path, tuple[int, Identity] | None]) -> None:
    for path, previous in before.items():
        if previous is None:
            continue
        now = _seconds_and_identity(path)
        if now is not None and now[1] != previous[1]:
            _date_after(path, previous[0])
