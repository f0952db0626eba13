"""Replacing a served file so that readers see the old one or the new one, whole."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


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
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
