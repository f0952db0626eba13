"""A channel's adjustments to its published packages: repodata patches and broken marks.

A patch changes what the index says of one package file without touching the file (a
dependency bound that turned out wrong, a license field); a broken mark takes the file's
record out of the index while the file stays downloadable for lockfiles that name it.
Both are kept per channel in the index state (`<state>/adjustments/<channel>.json`,
the writer's own), applied by the subdir's index owner whenever it renders a record,
reversible (set a patch to nothing, unmark), and recorded: every change appends a line
to `<channel>.log.jsonl` (when, who, what, before and after).

Each entry has a source: `inventory` (the playbook's declared list, which it converges)
or `api` (set over HTTPS); a converge never removes what was set over HTTPS.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from condaport.files import replace_atomically
from condaport.packages import SUBDIR, Rejected, split_name

FOLDER = "adjustments"
# The fields of a record a patch may set: what a solver reads to decide what goes together,
# and the license. Name, version, build and digests are the file's identity: never patched.
PATCHABLE = {
    "depends": list,
    "constrains": list,
    "track_features": str,
    "license": str,
    "license_family": str,
}
SOURCES = ("inventory", "api")
MAX_ENTRIES = 10_000


class BadAdjustment(ValueError):
    """A patch or mark that cannot be applied (the message says why)."""


def check_file(where: str) -> tuple[str, str]:
    """`<subdir>/<file>` as (subdir, filename), refused unless both are plain names."""
    subdir, _, filename = where.partition("/")
    if not SUBDIR.match(subdir) or not filename or "/" in filename:
        raise BadAdjustment(f"{where!r} is not <subdir>/<package file>")
    try:
        split_name(filename)
    except Rejected as exc:
        raise BadAdjustment(str(exc)) from None
    return subdir, filename


def check_patch(patch: object) -> dict[str, object]:
    """A patch as given (JSON from a request or the inventory), refused field by field."""
    if not isinstance(patch, dict) or not patch:
        raise BadAdjustment('a patch is an object of fields to set, e.g. {"depends": [...]}')
    checked: dict[str, object] = {}
    for key, value in patch.items():
        kind = PATCHABLE.get(key)
        if kind is None:
            allowed = ", ".join(sorted(PATCHABLE))
            raise BadAdjustment(f"{key!r} cannot be patched (only {allowed})")
        if kind is list:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise BadAdjustment(f"{key} must be a list of match specs")
            for spec in value:
                _check_spec(key, spec)
            checked[key] = list(value)
        else:
            if not isinstance(value, str) or len(value) > 1000:
                raise BadAdjustment(f"{key} must be a string")
            checked[key] = value
    return checked


def _check_spec(key: str, spec: str) -> None:
    from rattler import MatchSpec

    try:
        MatchSpec(spec)
    except Exception as exc:  # rattler's parse errors have no common base to name
        raise BadAdjustment(f"{key}: {spec!r} is not a valid match spec ({exc})") from None


@dataclass
class Adjustments:
    """What one channel changes of its packages' records."""

    # "<subdir>/<file>" -> {"fields": {...}, "source": ..., "by": ..., "at": ...}
    patches: dict[str, dict] = field(default_factory=dict)
    # "<subdir>/<file>" -> {"reason": ..., "source": ..., "by": ..., "at": ...}
    broken: dict[str, dict] = field(default_factory=dict)

    def for_subdir(self, subdir: str) -> Adjustments:
        prefix = f"{subdir}/"
        return Adjustments(
            {k: v for k, v in self.patches.items() if k.startswith(prefix)},
            {k: v for k, v in self.broken.items() if k.startswith(prefix)},
        )

    def files(self, subdir: str) -> set[str]:
        """The file names of `subdir` that have a patch or a broken mark."""
        prefix = f"{subdir}/"
        return {
            key.removeprefix(prefix)
            for key in (*self.patches, *self.broken)
            if key.startswith(prefix)
        }

    def is_broken(self, subdir: str, filename: str) -> bool:
        return f"{subdir}/{filename}" in self.broken

    def adjusted(self, subdir: str, filename: str, record: dict) -> dict | None:
        """The record as the index publishes it: None when the file is marked broken,
        patched fields set otherwise (the package's own record is not changed)."""
        key = f"{subdir}/{filename}"
        if key in self.broken:
            return None
        patch = self.patches.get(key)
        if patch is None:
            return record
        return {**record, **patch["fields"]}


def _paths(state_dir: Path, channel: str) -> tuple[Path, Path]:
    folder = state_dir / FOLDER
    return folder / f"{channel}.json", folder / f"{channel}.log.jsonl"


def load(state_dir: Path, channel: str) -> Adjustments:
    """The channel's adjustments (none when it has no file). A file that cannot be read is
    an error, never silently nothing: the index would otherwise list broken packages."""
    path, _ = _paths(state_dir, channel)
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return Adjustments()
    except (OSError, ValueError) as exc:
        raise BadAdjustment(f"{path} is unreadable: {exc}") from None
    if not isinstance(data, dict):
        raise BadAdjustment(f"{path} is not an object")
    patches = data.get("patches") or {}
    broken = data.get("broken") or {}
    if not isinstance(patches, dict) or not isinstance(broken, dict):
        raise BadAdjustment(f"{path}: patches and broken must be objects")
    return Adjustments(dict(patches), dict(broken))


def save(state_dir: Path, channel: str, adjustments: Adjustments, changes: list[dict]) -> None:
    """Write the channel's adjustments and append `changes` to its log; the caller holds
    the channel lock."""
    if len(adjustments.patches) + len(adjustments.broken) > MAX_ENTRIES:
        raise BadAdjustment(f"a channel keeps at most {MAX_ENTRIES} patches and broken marks")
    path, log = _paths(state_dir, channel)
    path.parent.mkdir(mode=0o700, exist_ok=True)
    document = {"patches": adjustments.patches, "broken": adjustments.broken}
    content = json.dumps(document, indent=1, sort_keys=True).encode() + b"\n"
    replace_atomically(path, content)
    if changes:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
        descriptor = os.open(log, flags, 0o600)
        with os.fdopen(descriptor, "a", encoding="utf-8") as handle:
            for change in changes:
                handle.write(json.dumps(change, sort_keys=True) + "\n")


def history(state_dir: Path, channel: str) -> list[dict]:
    """Every recorded change of the channel's adjustments, oldest first."""
    _, log = _paths(state_dir, channel)
    try:
        lines = log.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in lines if line.strip()]


def entry(source: str, by: str, **values: object) -> dict:
    if source not in SOURCES:
        raise BadAdjustment(f"unknown source {source!r}")
    return {**values, "source": source, "by": by, "at": int(time.time())}
