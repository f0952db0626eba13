"""One writer per channel: publishes, removals and index runs take the same lock."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class LockTimeout(RuntimeError):
    """Another writer held the channel for longer than we were willing to wait."""


def lock_path(state_dir: Path, channel: str) -> Path:
    return state_dir / "locks" / f"{channel}.lock"


# The lock files this thread holds: a step that takes the lock inside a sequence already
# holding it (a publish holds it from placing to indexing) goes on under the outer hold.
_held = threading.local()


@contextmanager
def channel_lock(state_dir: Path, channel: str, timeout: float = 900.0) -> Iterator[None]:
    """Hold the channel's exclusive lock; the kernel releases it if the process dies.

    flock on a lock file (never deleted) rather than a pid file: a `kill -9` cannot leave
    a stale lock behind. Re-entrant within a thread.
    """
    path = lock_path(state_dir, channel)
    holding: set[Path] = _held.__dict__.setdefault("paths", set())
    if path in holding:
        yield
        return
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Read-only is enough for flock. Never through a link: whatever sits at this name is
    # opened as the lock itself or refused (ELOOP), so no writer creates files elsewhere.
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
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
        holding.add(path)
        try:
            yield
        finally:
            holding.discard(path)
    finally:
        os.close(fd)
