"""One publish run in one process: `condaport-publish publish`.

playbooks/publish.yml uploads the CI folder as one tar bundle into root's private inbox
and runs this once, as root. Root only opens and deletes the bundle there (`take_bundle`),
then the command becomes the writer account (condaport.account) and does the rest from
the open file: abandoned staging is swept, the bundle unpacked into a private staging
folder, the packages
validated and placed under the channel lock (`condaport.publish.place`), removals and
retention applied (`condaport.publish.prune`), the channel's stale subdirs indexed
(`condaport.index.run`, as the `condaport channel changed` handler did), and one JSON
report printed for the playbook to show.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from condaport import index
from condaport.config import HostConfig
from condaport.locking import LockTimeout, channel_lock
from condaport.packages import Limits, Rejected
from condaport.publish import (
    Outcome,
    Validated,
    discard_staged,
    place_validated,
    prune,
    validate,
)
from condaport.release import installed_build, installed_version

_AGE = re.compile(r"^([0-9]+)([smhdw]?)$")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
BUNDLE_PREFIX = "publish-"


def age_seconds(text: str) -> int:
    """find-style age (`1d`, `12h`, `30m`, `90`: seconds) in seconds."""
    found = _AGE.match(text.strip())
    if not found:
        raise Rejected(f"staging max age {text!r} is not a number with an optional s/m/h/d/w")
    return int(found.group(1)) * _UNIT[found.group(2)]


def private_folder_of_this_user(path: Path, what: str) -> None:
    """Refuse `path` unless it is a real folder of this process's user that no one else
    may write."""
    info = path.lstat()
    if (
        not stat.S_ISDIR(info.st_mode)
        or info.st_uid != os.geteuid()
        or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    ):
        raise PermissionError(
            f"{what} {path} is not a private folder of this user (a link, or writable by"
            " others): remove it, converge the host, and publish again"
        )


def private_folder(path: Path) -> Path:
    """`path` as a folder only this process's user controls, made if missing (0700).

    Anything but our own real, private folder is refused: a link or a folder someone else
    put where a channel's staging belongs would lead the sweep or the unpacking elsewhere."""
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    private_folder_of_this_user(path, "staging folder")
    return path


def sweep_staging(staging_root: Path, channel: str, max_age: int) -> list[str]:
    """Delete what killed runs left in the channel's staging, once older than `max_age`
    seconds (a live run's folder is younger). Runs as the writer, in its own tree."""
    cutoff = time.time() - max_age
    gone = []
    candidates = list(private_folder(staging_root / channel).iterdir())
    # Bundles of versions that uploaded them into staging.
    candidates += staging_root.glob(f"{BUNDLE_PREFIX}{channel}-*.tar")
    for path in candidates:
        try:
            if path.lstat().st_mtime > cutoff:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:
            continue  # another run swept it first
        gone.append(str(path))
    return gone


def take_bundle(path: Path, channel: str, max_age: int) -> tuple[BinaryIO, list[str]]:
    """Open the playbook's bundle and delete its name; also delete the channel's bundles
    that killed runs left, once older than `max_age` seconds. Returns the open bundle and
    what was swept.

    This is the part of a publish that runs as root, so the inbox must be a folder only
    root can write (the playbook uploads there); anything else is refused, as is a bundle
    that is not a regular file of that folder. Everything after works on the open file.
    """
    inbox = path.parent
    private_folder_of_this_user(inbox, "publish inbox")
    cutoff = time.time() - max_age
    swept = []
    for old in inbox.glob(f"{BUNDLE_PREFIX}{channel}-*.tar"):
        if old != path and old.lstat().st_mtime <= cutoff:
            old.unlink(missing_ok=True)
            swept.append(str(old))
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot open the bundle {path}: {exc.strerror}") from None
    bundle = os.fdopen(descriptor, "rb")
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        bundle.close()
        raise PermissionError(f"the bundle {path} is not a regular file")
    path.unlink()
    return bundle, swept


def unpack(bundle: BinaryIO, staging: Path) -> list[dict[str, str]]:
    """Extract the bundle's regular files, by bare name, into `staging`.

    The bundle is written by the playbook from a CI folder, yet read as hostile: only
    regular files with plain names are extracted (streamed, never whole in memory);
    anything else is refused by name and never written.
    """
    refused = []
    private_folder(staging.parent)
    staging.mkdir(mode=0o700)
    with tarfile.open(fileobj=bundle, mode="r:") as archive:
        for member in archive:
            name = member.name.removeprefix("./")
            if not name or "/" in name or name in (".", ".."):
                refused.append({"file": member.name, "reason": "not a plain file name"})
                continue
            if not member.isfile():
                refused.append({"file": name, "reason": "not a regular file"})
                continue
            source = archive.extractfile(member)
            if source is None:
                refused.append({"file": name, "reason": "unreadable in the bundle"})
                continue
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
            try:
                descriptor = os.open(staging / name, flags, 0o600)
            except FileExistsError:
                refused.append({"file": name, "reason": "named twice in the bundle"})
                continue
            with source, os.fdopen(descriptor, "wb") as target:
                shutil.copyfileobj(source, target, 1 << 20)
    return refused


@dataclass
class Report:
    outcome: Outcome = field(default_factory=Outcome)
    removed: list[str] = field(default_factory=list)
    not_found: list[str] = field(default_factory=list)
    indexed: list[str] = field(default_factory=list)
    quarantined: list[dict[str, str]] = field(default_factory=list)
    swept: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(
            self.outcome.added
            or self.outcome.replaced
            or self.removed
            or self.indexed
            or self.swept
        )

    def as_dict(self) -> dict[str, object]:
        return {
            **self.outcome.as_dict(),
            "removed": self.removed,
            "not_found": self.not_found,
            "indexed": self.indexed,
            "quarantined": self.quarantined,
            "swept": self.swept,
            "errors": self.errors,
            "changed": self.changed,
            "version": installed_version(),
            "build": installed_build(),
        }


def _place_prune_index(
    host: HostConfig,
    channel: str,
    checked: Validated,
    report: Report,
    *,
    overwrite: bool,
    all_or_nothing: bool,
    remove: list[str],
    keep_versions: int,
) -> None:
    """The steps of a publish that change the channel; the caller holds its lock."""
    channel_dir = host.channels_root / channel
    try:
        report.outcome = place_validated(
            channel_dir,
            host.state_dir,
            checked,
            overwrite=overwrite,
            all_or_nothing=all_or_nothing,
        )
    except OSError as exc:
        report.errors.append(str(exc))
    if (remove or keep_versions > 0) and not report.errors:
        try:
            pruned = prune(host.channels_root, host.state_dir, channel, remove, keep_versions)
            report.removed, report.not_found = pruned["removed"], pruned["not_found"]
        except OSError as exc:
            report.errors.append(str(exc))
    try:
        done = index.run(
            host.channels_root,
            host.state_dir,
            [channel],
            backend=host.index_backend,
            conda_python=host.conda_python,
            quarantined=report.quarantined,
        )
        report.indexed = [f"{channel}/{subdir}" for subdir in done.get(channel, [])]
    except (index.IndexFailed, OSError) as exc:
        report.errors.append(str(exc))


def publish(
    host: HostConfig,
    channel: str,
    *,
    bundle: BinaryIO | None = None,
    run_name: str = "run",
    allowed_subdirs: list[str] | None = None,
    overwrite: bool = False,
    all_or_nothing: bool = False,
    remove: list[str] | None = None,
    keep_versions: int = 0,
    staging_max_age: int = 86400,
) -> Report:
    """Everything one playbook run asks of the host. Errors (a full disk, a busy lock, a
    failed index) are collected in the report; what succeeded before them stays done and
    the channel is indexed as far as it can be, so a rerun finishes the job."""
    channel_dir = host.channels_root / channel
    if not channel_dir.is_dir():
        raise FileNotFoundError(f"channel {channel!r} does not exist under {host.channels_root}")
    report = Report()
    staging_root = host.staging_root or host.channels_root.parent / "staging"
    if staging_root.is_dir():
        try:
            report.swept = sweep_staging(staging_root, channel, staging_max_age)
        except OSError as exc:
            report.errors.append(str(exc))
    staged: list[Path] = []
    checked = Validated()
    staging = staging_root / channel / run_name
    try:
        if bundle is not None:
            try:
                checked.rejected = unpack(bundle, staging)
                if not (all_or_nothing and checked.rejected):
                    limits = Limits(unpacked_size=host.package_max_unpacked_size)
                    staged, validated = validate(channel_dir, staging, allowed_subdirs, limits)
                    checked.accepted = validated.accepted
                    checked.rejected += validated.rejected
            except (OSError, tarfile.TarError) as exc:
                report.errors.append(str(exc))
            finally:
                bundle.close()
        # One hold from placing to indexing: no upload's catch-up index runs in between
        # (it would index a replaced file's name from its old record).
        with channel_lock(host.state_dir, channel):
            _place_prune_index(
                host,
                channel,
                checked,
                report,
                overwrite=overwrite,
                all_or_nothing=all_or_nothing,
                remove=remove or [],
                keep_versions=keep_versions,
            )
    except LockTimeout as exc:
        report.errors.append(str(exc))
    finally:
        discard_staged(staged)
        # Never through a planted link (unpack refused to use one).
        if bundle is not None and not staging.parent.is_symlink():
            shutil.rmtree(staging, ignore_errors=True)
    return report
