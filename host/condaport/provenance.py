"""Which package files an uploader without the delete right placed, per channel.

Retention (`condaport-publish prune --keep-versions N`) deletes the older versions of each
package name. Counted over every file, an uploader who may only add files could upload
`foo-99.0` and make the next retention run delete the maintainers' releases of `foo`:
deleting through retention what they could not delete themselves. So files such an
uploader placed neither count as newer versions nor are deleted by retention; a
maintainer removes them by name, or replaces them (which makes them a maintainer's).

The record lives in the state directory, written under the channel lock by the writer.
"""

from __future__ import annotations

import json
from pathlib import Path

from condaport.files import replace_atomically


def _record(state_dir: Path, channel: str) -> Path:
    return state_dir / "provenance" / f"{channel}.json"


def placed_by_uploaders(state_dir: Path, channel: str) -> dict[str, str]:
    """`subdir/filename` -> the identity that uploaded it, for uploaders without the
    delete right; {} when there are none (or the record is unreadable: then retention
    would count those files, as before this record existed)."""
    try:
        data = json.loads(_record(state_dir, channel).read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _write(state_dir: Path, channel: str, entries: dict[str, str]) -> None:
    target = _record(state_dir, channel)
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    replace_atomically(target, json.dumps(entries, sort_keys=True).encode())


def record_placement(
    state_dir: Path, channel: str, placed: list[str], uploader: str | None
) -> None:
    """Note who placed `placed` (`subdir/filename`): `uploader` for an identity without the
    delete right, None for a maintainer (whose files retention handles as usual)."""
    entries = placed_by_uploaders(state_dir, channel)
    before = dict(entries)
    for name in placed:
        if uploader is None:
            entries.pop(name, None)
        else:
            entries[name] = uploader
    if entries != before:
        _write(state_dir, channel, entries)


def forget_files(state_dir: Path, channel: str, gone: list[str]) -> None:
    """Drop removed files (`subdir/filename`) from the record."""
    record_placement(state_dir, channel, gone, None)
