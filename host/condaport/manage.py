"""Channel management: repodata patches, broken marks, and promoting a package from one
channel to another on the host, without a download and an upload.

Each change is made under the channel lock and published by the subdir's index owner
(condaport.subdir_index) in both the monolithic and the sharded repodata before the call
returns; the adjustments themselves are kept and logged by condaport.adjustments. The
upload service calls these for its HTTPS API (with the upload rights model), and
`condaport-channels adjust` / `promote` for the playbooks.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from condaport import adjustments
from condaport.adjustments import BadAdjustment
from condaport.config import ChannelConfig, HostConfig
from condaport.intake import ChannelGuard, Missing, Result, accept, remove
from condaport.subdir_index import Indexes

Hold = Callable[[str], AbstractContextManager[object]]


@dataclass(frozen=True)
class Change:
    result: str  # patched, unpatched, broken, unbroken, unchanged
    channel: str
    file: str  # <subdir>/<file>

    def as_dict(self) -> dict[str, str]:
        return {"result": self.result, "channel": self.channel, "file": self.file}


def _package(
    host: HostConfig, channel: str, where: str, *, must_exist: bool = True
) -> tuple[str, str]:
    subdir, filename = adjustments.check_file(where)
    if must_exist and not (host.channels_root / channel / subdir / filename).is_file():
        raise Missing(f"{where} is not in channel {channel!r}")
    return subdir, filename


def _publish(host: HostConfig, channel: str, subdir: str, filename: str, indexes: Indexes) -> None:
    """Publish the file's record as the adjustments now say (nothing to do before the file
    is there: its upload will publish it adjusted)."""
    if (host.channels_root / channel / subdir / filename).is_file():
        indexes.of(host.channels_root / channel, subdir).readjust([filename])


def set_patch(
    host: HostConfig,
    channel: str,
    where: str,
    patch: object | None,
    *,
    who: str,
    hold: Hold,
    indexes: Indexes,
    source: str = "api",
    must_exist: bool = True,
) -> Change:
    """Patch the record of `where` (`<subdir>/<file>`) with `patch`; None takes the patch
    back. Raises BadAdjustment (bad input) or Missing (no such file, when it must exist:
    the inventory may declare a patch for a package still to come)."""
    fields = None if patch is None else adjustments.check_patch(patch)
    with hold(channel):
        subdir, filename = _package(host, channel, where, must_exist=must_exist)
        current = adjustments.load(host.state_dir, channel)
        before = current.patches.get(where)
        if fields is None:
            if before is None:
                return Change("unchanged", channel, where)
            del current.patches[where]
            result = "unpatched"
        else:
            if before is not None and before.get("fields") == fields:
                return Change("unchanged", channel, where)
            current.patches[where] = adjustments.entry(source, who, fields=fields)
            result = "patched"
        logged = adjustments.entry(
            source,
            who,
            action=result,
            file=where,
            before=(before or {}).get("fields"),
            after=fields,
        )
        adjustments.save(host.state_dir, channel, current, [logged])
        _publish(host, channel, subdir, filename, indexes)
    return Change(result, channel, where)


def set_broken(
    host: HostConfig,
    channel: str,
    where: str,
    broken: bool,
    *,
    reason: str = "",
    who: str,
    hold: Hold,
    indexes: Indexes,
    source: str = "api",
    must_exist: bool = True,
) -> Change:
    """Mark `where` broken (its record leaves the index, the file stays) or take the mark
    back. Raises BadAdjustment or Missing (as set_patch)."""
    if len(reason) > 1000:
        raise BadAdjustment("the reason is longer than 1000 characters")
    with hold(channel):
        subdir, filename = _package(host, channel, where, must_exist=must_exist)
        current = adjustments.load(host.state_dir, channel)
        if broken == (where in current.broken):
            return Change("unchanged", channel, where)
        if broken:
            current.broken[where] = adjustments.entry(source, who, reason=reason)
            result = "broken"
        else:
            del current.broken[where]
            result = "unbroken"
        logged = adjustments.entry(source, who, action=result, file=where, reason=reason)
        adjustments.save(host.state_dir, channel, current, [logged])
        _publish(host, channel, subdir, filename, indexes)
    return Change(result, channel, where)


def converge(
    host: HostConfig,
    channel: str,
    declared_patches: dict[str, object],
    declared_broken: dict[str, str],
    *,
    hold: Hold,
    indexes: Indexes,
    dry_run: bool = False,
) -> list[Change]:
    """Make the channel's inventory-set adjustments the declared ones: add and change
    what is declared, take back inventory entries no longer declared; what was set over
    HTTPS is left alone unless the inventory now declares that file. A declared package
    not published yet is adjusted from its first upload on."""
    for where in (*declared_patches, *declared_broken):
        adjustments.check_file(where)
    checked = {where: adjustments.check_patch(p) for where, p in declared_patches.items()}
    current = adjustments.load(host.state_dir, channel)
    plan: list[tuple[str, str, object]] = []
    for where, fields in sorted(checked.items()):
        entry = current.patches.get(where)
        if entry is None or entry.get("fields") != fields:
            plan.append(("patch", where, fields))
    for where, entry in sorted(current.patches.items()):
        if entry.get("source") == "inventory" and where not in declared_patches:
            plan.append(("patch", where, None))
    for where, reason in sorted(declared_broken.items()):
        if where not in current.broken:
            plan.append(("broken", where, reason))
    for where, entry in sorted(current.broken.items()):
        if entry.get("source") == "inventory" and where not in declared_broken:
            plan.append(("unbroken", where, ""))
    changes = []
    for action, where, value in plan:
        if dry_run:
            changes.append(Change(f"would {action}", channel, where))
            continue
        if action == "patch":
            change = set_patch(
                host, channel, where, value, who="inventory", hold=hold,
                indexes=indexes, source="inventory", must_exist=False,
            )  # fmt: skip
        else:
            change = set_broken(
                host, channel, where, action == "broken", reason=str(value or ""),
                who="inventory", hold=hold, indexes=indexes, source="inventory",
                must_exist=False,
            )  # fmt: skip
        changes.append(change)
    return changes


def _stage_copy(source: Path, staging: Path) -> tuple[Path, str]:
    """A private copy of a placed package file in `staging`; returns it and its md5."""
    folder = staging / secrets.token_hex(8)
    folder.mkdir(mode=0o700, parents=True)
    target = folder / source.name
    md5 = hashlib.md5(usedforsecurity=False)
    descriptor = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(descriptor, "rb") as reader, target.open("xb") as writer:
        for block in iter(lambda: reader.read(1 << 20), b""):
            md5.update(block)
            writer.write(block)
    return target, md5.hexdigest()


def promote(
    host: HostConfig,
    source: ChannelConfig,
    target: ChannelConfig,
    where: str,
    *,
    staging: Path,
    move: bool,
    overwrite: bool,
    guard: ChannelGuard,
    lock_timeout: float,
    indexes: Indexes,
    uploader_without_delete_right: str | None = None,
) -> Result:
    """Copy (or, with move, move) a package from one channel of this host to another.

    The copy enters the target as an upload does (validated again, placed and indexed
    under the target's lock), so a promotion can never put into a channel what an upload
    could not; with move, the source's file and record go once the target has it. A
    patch or broken mark of the source stays with the source."""
    if source.name == target.name:
        raise BadAdjustment("the source and the target are the same channel")
    subdir, filename = _package(host, source.name, where)
    staged, md5 = _stage_copy(host.channels_root / source.name / subdir / filename, staging)
    try:
        result = accept(
            host,
            target,
            staged,
            md5=md5,
            url_subdir=subdir,
            overwrite=overwrite,
            guard=guard,
            lock_timeout=lock_timeout,
            indexes=indexes,
            uploader_without_delete_right=uploader_without_delete_right,
        )
    finally:
        shutil.rmtree(staged.parent, ignore_errors=True)
    if move:
        remove(
            host, source, subdir, filename, guard=guard, lock_timeout=lock_timeout, indexes=indexes
        )
    return result
