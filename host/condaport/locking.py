"""One writer per channel: publishes, removals and index runs take the same lock."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class LockTimeout(RuntimeError):
    """Another writer held the channel for longer than we were willing to wait."""


def lock_path(state_dir: Path, channel: str) -> Path:
    return state_dir / "locks" / f"{channel}.lock"


@contextmanager
def channel_lock(state_dir: Path, channel: str, timeout: float = 900.0) -> Iterator[None]:
    """Hold the channel's exclusive lock; the kernel releases it if the process dies.

    flock on a lock file (never deleted) rather than a pid file: a `kill -9` cannot leave
    a stale lock behind.
    """
    path = lock_path(state_dir, channel)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Read-only is enough for flock, so every writer (root, the upload service's group)
    # can take a lock file another one created.
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o660)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockTimeout(
                        f"channel {channel!r} stayed locked by another writer for {timeout:.0f} s"
                        f" ({path})"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)
