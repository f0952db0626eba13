"""One publish run in one process: `condaport-publish publish`.

playbooks/publish.yml uploads the CI folder as one tar bundle and runs this once; every
step that used to be a task of its own (a round trip each) happens here: abandoned staging
is swept, the bundle unpacked into a private staging folder and deleted, the packages
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
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from condaport import index
from condaport.config import HostConfig
from condaport.locking import LockTimeout
from condaport.packages import Rejected
from condaport.publish import Outcome, place, prune

_AGE = re.compile(r"^([0-9]+)([smhdw]?)$")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
BUNDLE_PREFIX = "publish-"


class VersionMismatch(RuntimeError):
    """The host's condaport is not the one the playbook was written for."""


def installed_version() -> str:
    try:
        return version("condaport")
    except PackageNotFoundError:
        return "unknown"


def age_seconds(text: str) -> int:
    """find-style age (`1d`, `12h`, `30m`, `90`: seconds) in seconds."""
    found = _AGE.match(text.strip())
    if not found:
        raise Rejected(f"staging max age {text!r} is not a number with an optional s/m/h/d/w")
    return int(found.group(1)) * _UNIT[found.group(2)]


def private_folder(path: Path) -> Path:
    """`path` as a folder only this process's user controls, made if missing (0700).

    The staging root is shared with the upload service's group (2770), so any member could
    put a link or a folder of its own where a channel's staging belongs; root would then
    sweep or unpack through it. Anything but our own real, private folder is refused."""
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    info = path.lstat()
    if (
        not stat.S_ISDIR(info.st_mode)
        or info.st_uid != os.geteuid()
        or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    ):
        raise PermissionError(
            f"staging folder {path} is not a private folder of this user (a link, or"
            " writable by others): remove it and publish again"
        )
    return path


def sweep_staging(staging_root: Path, channel: str, max_age: int, keep: Path | None) -> list[str]:
    """Delete what killed runs left: staging folders of the channel and publish bundles,
    once older than `max_age` seconds. A live run's are younger (or `keep`)."""
    cutoff = time.time() - max_age
    gone = []
    candidates = list(private_folder(staging_root / channel).iterdir())
    candidates += staging_root.glob(f"{BUNDLE_PREFIX}{channel}-*.tar")
    for path in candidates:
        try:
            if path == keep or path.lstat().st_mtime > cutoff:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:
            continue  # another run swept it first
        gone.append(str(path))
    return gone


def unpack(bundle: Path, staging: Path) -> list[dict[str, str]]:
    """Extract the bundle's regular files, by bare name, into `staging`.

    The bundle is written by the playbook from a CI folder, yet read as hostile: only
    regular files with plain names are extracted (streamed, never whole in memory);
    anything else is refused by name and never written.
    """
    refused = []
    private_folder(staging.parent)
    staging.mkdir(mode=0o700)
    with tarfile.open(bundle, "r:") as archive:
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
        }


def publish(
    host: HostConfig,
    channel: str,
    *,
    bundle: Path | None = None,
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
    staging_root = host.staging_root or (bundle.parent if bundle else None)
    if staging_root is not None and staging_root.is_dir():
        try:
            report.swept = sweep_staging(staging_root, channel, staging_max_age, bundle)
        except OSError as exc:
            report.errors.append(str(exc))
    if bundle is not None:
        staging = (staging_root or bundle.parent) / channel / bundle.name.removesuffix(".tar")
        try:
            refused = unpack(bundle, staging)
            if not (all_or_nothing and refused):
                report.outcome = place(
                    host.channels_root,
                    host.state_dir,
                    channel,
                    staging,
                    allowed_subdirs,
                    overwrite=overwrite,
                    all_or_nothing=all_or_nothing,
                )
            report.outcome.rejected[:0] = refused
        except (OSError, LockTimeout, tarfile.TarError) as exc:
            report.errors.append(str(exc))
        finally:
            bundle.unlink(missing_ok=True)
            # Never through a planted link (unpack refused to use one).
            if not staging.parent.is_symlink():
                shutil.rmtree(staging, ignore_errors=True)
    if (remove or keep_versions > 0) and not report.errors:
        try:
            pruned = prune(host.channels_root, host.state_dir, channel, remove or [], keep_versions)
            report.removed, report.not_found = pruned["removed"], pruned["not_found"]
        except (OSError, LockTimeout) as exc:
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
    except (index.IndexFailed, OSError, LockTimeout) as exc:
        report.errors.append(str(exc))
    return report
