"""One archive of a channel host, and its restore onto a fresh host.

The archive (a tar stream, zstd-compressed) holds four sections and a manifest:

    channels/<channel>/...   the channel trees (condaport_channels_root)
    state/...                locks, index fingerprints, adjustments, provenance
    etc/...                  /etc/condaport: host configuration and the TLS material
    auth/...                 the htpasswd files and token maps NGINX reads
    manifest.json            last: what was taken, and the sha256 of every subdir's
                             repodata.json, so a restore proves it serves the same bytes

Consistency without stopping uploads: for each channel a child process, working as the
writer account, takes that channel's lock only long enough to hard-link the tree and the
channel's state files into a snapshot folder (renames never change a linked file: every
writer here replaces files by rename), then streams the snapshot after the lock is gone.
An upload waits for that link pass, a fraction of a second even at 10,000 packages, far
inside the upload service's lock timeout. Root itself never reads inside a tree the writer
can change: it only copies the child's tar stream into the archive and adds the root-only
sections.

A restore archive comes from an operator's storage and is treated as hostile: only plain
files and folders under the four sections are accepted (no links, devices, absolute names
or `..`), everything is staged in a root-only folder, checked against the manifest, and
only then moved into place. The trees must be absent or empty (a fresh host): a restore
never merges into live channels.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import hashlib
import io
import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

import zstandard

from condaport.account import become_writer
from condaport.config import CHANNEL_NAME, HostConfig
from condaport.locking import channel_lock
from condaport.subdir_index import SubdirIndex

FORMAT = 1
SECTIONS = ("channels", "state", "etc", "auth")
MANIFEST = "manifest.json"
# Left on a restored host so that a second run of the restore playbook changes nothing;
# never taken into a backup (a backup of a restored host is a backup of its own).
RESTORED_MARK = "restored-backup.json"
CHUNK = 1 << 20


class BackupError(RuntimeError):
    """The backup or restore cannot go on; the message says why and what to do."""


class HostileArchive(BackupError):
    """The archive holds something a backup of ours never holds: it is refused whole."""


@dataclass(frozen=True)
class Places:
    """Where each section lives on a host: from the host configuration, the etc and auth
    folders from the roles' defaults unless given."""

    channels_root: Path
    state_dir: Path
    etc_dir: Path = Path("/etc/condaport")
    auth_dir: Path = Path("/etc/nginx/condaport")
    staging_root: Path | None = None

    @classmethod
    def of(cls, host: HostConfig, etc_dir: Path | None = None) -> Places:
        return cls(
            channels_root=host.channels_root,
            state_dir=host.state_dir,
            etc_dir=etc_dir or Path("/etc/condaport"),
            auth_dir=host.auth_dir or Path("/etc/nginx/condaport"),
            staging_root=host.staging_root,
        )


@dataclass
class BackupReport:
    archive: str
    channels: list[str] = field(default_factory=list)
    repodata: dict[str, str] = field(default_factory=dict)
    files: int = 0
    bytes: int = 0
    longest_lock_seconds: float = 0.0
    seconds: float = 0.0
    skipped: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {**self.__dict__, "changed": True}


# --- backup -------------------------------------------------------------------------------


def _channel_of(relative: PurePosixPath, channels: list[str]) -> str | None:
    """Which channel a state file belongs to: `<folder>/<channel>` or `<folder>/<channel>.*`
    (fingerprints/main/..., provenance/main.json, locks/main.lock). The longest name wins,
    so `main.x.json` is channel main.x's, not main's."""
    if len(relative.parts) < 2:
        return None
    name = relative.parts[1]
    owners = [c for c in channels if name == c or name.startswith(c + ".")]
    return max(owners, key=len) if owners else None


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            raise
        shutil.copy2(source, target, follow_symlinks=False)


def _snapshot(source: Path, target: Path, skipped: list[str], only=None) -> None:
    """Mirror `source` into `target` as links (copies across filesystems): folders and
    plain files only; anything else is left out and reported."""
    for folder, dirs, files in os.walk(source):
        here = Path(folder)
        relative = here.relative_to(source)
        if only is not None and relative.parts and not only(PurePosixPath(*relative.parts)):
            dirs[:] = []
            continue
        (target / relative).mkdir(mode=0o700, exist_ok=True)
        for name in list(dirs):
            if (here / name).is_symlink():
                skipped.append(str(here / name))
                dirs.remove(name)
        for name in files:
            path = here / name
            if only is not None and not only(PurePosixPath(*relative.parts, name)):
                continue
            mode = os.lstat(path).st_mode
            if not stat.S_ISREG(mode):
                skipped.append(str(path))
                continue
            _link_or_copy(path, target / relative / name)


def _add_tree(archive: tarfile.TarFile, root: Path, prefix: str) -> None:
    """Add every folder and plain file below `root` as `prefix/...`, opened without
    following links."""
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        here = Path(folder)
        relative = here.relative_to(root)
        name = "/".join((prefix, *relative.parts))
        info = archive.gettarinfo(str(here), arcname=name)
        if info.isdir():
            archive.addfile(info)
        for entry in sorted(files):
            path = here / entry
            if path.name == RESTORED_MARK and prefix == "etc" and not relative.parts:
                continue
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENXIO):
                    continue  # a link or a socket: never part of a backup
                raise
            with os.fdopen(fd, "rb") as handle:
                info = archive.gettarinfo(arcname=f"{name}/{entry}", fileobj=handle)
                if info.isreg():
                    archive.addfile(info, handle)


def _writer_part(places: Places, channels: list[str], snapshot: Path, out: IO[bytes]) -> None:
    """As the writer account: link each channel's part under its lock, then stream it."""
    skipped: list[str] = []
    holds: dict[str, float] = {}
    (snapshot / "channels").mkdir(mode=0o700)
    (snapshot / "state").mkdir(mode=0o700)
    for channel in channels:
        started = time.monotonic()
        with channel_lock(places.state_dir, channel, timeout=600.0):
            _snapshot(places.channels_root / channel, snapshot / "channels" / channel, skipped)
            _snapshot(
                places.state_dir,
                snapshot / "state",
                skipped,
                only=lambda rel, c=channel: len(rel.parts) < 2 or _channel_of(rel, channels) == c,
            )
        holds[channel] = time.monotonic() - started
    # What belongs to no channel (the lock folder itself, files of removed channels).
    _snapshot(
        places.state_dir,
        snapshot / "state",
        skipped,
        only=lambda rel: len(rel.parts) < 2 or _channel_of(rel, channels) is None,
    )
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as archive:
        _add_tree(archive, snapshot / "channels", "channels")
        _add_tree(archive, snapshot / "state", "state")
        notes = json.dumps({"skipped": skipped, "holds": holds}).encode()
        info = tarfile.TarInfo(".writer-notes.json")
        info.size = len(notes)
        archive.addfile(info, io.BytesIO(notes))


class _Hashing(io.RawIOBase):
    """Reads through to `inner`, hashing what passes (a member's bytes, once)."""

    def __init__(self, inner: IO[bytes]) -> None:
        self.inner, self.digest = inner, hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        data = self.inner.read(len(buffer))
        buffer[: len(data)] = data
        self.digest.update(data)
        return len(data)


def _is_repodata(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 4 and parts[0] == "channels" and parts[3] == "repodata.json"


def backup(
    places: Places, channels: list[str], archive_path: Path, *, writer: str | None
) -> BackupReport:
    """Write one archive of the host to `archive_path` (mode 0600: it holds the keys)."""
    started = time.monotonic()
    for channel in channels:
        if not CHANNEL_NAME.match(channel):
            raise BackupError(f"{channel!r} is not a channel name")
    channels = [c for c in channels if (places.channels_root / c).is_dir()]
    report = BackupReport(archive=str(archive_path), channels=channels)
    # The snapshot folder is the child's, made and removed as the writer: root never
    # works inside the writer's folders.
    snapshot_parent = places.staging_root or places.channels_root.parent
    partial = archive_path.with_name(f".{archive_path.name}.partial")
    # A child process of its own (not a fork of this one, which may run threads): it drops
    # to the writer account before it touches a tree, and streams its part as a tar.
    spec = {
        "channels_root": str(places.channels_root),
        "state_dir": str(places.state_dir),
        "snapshot_parent": str(snapshot_parent),
        "writer": writer,
        "channels": channels,
    }
    child = subprocess.Popen(
        [sys.executable, "-m", "condaport.backup", json.dumps(spec)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
    )
    assert child.stdout is not None
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        os.fchmod(fd, 0o600)
        with (
            os.fdopen(fd, "wb") as raw,
            zstandard.ZstdCompressor(level=3, threads=-1).stream_writer(raw) as packed,
            tarfile.open(fileobj=packed, mode="w|", format=tarfile.PAX_FORMAT) as archive,
        ):
            try:
                notes = _copy_writer_part(child.stdout, archive, report)
            except tarfile.TarError as exc:
                # A stream cut short: the writer's own error (on stderr) says why.
                child.wait()
                raise BackupError("the writer part of the backup failed (see above)") from exc
            for section, where in (("etc", places.etc_dir), ("auth", places.auth_dir)):
                if where.is_dir():
                    _add_tree(archive, where, section)
            manifest = {
                "format": FORMAT,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "channels": channels,
                "repodata": report.repodata,
            }
            data = json.dumps(manifest, indent=1, sort_keys=True).encode()
            info = tarfile.TarInfo(MANIFEST)
            info.size, info.mode, info.mtime = len(data), 0o600, int(time.time())
            archive.addfile(info, io.BytesIO(data))
        if child.wait() != 0:
            raise BackupError("the writer part of the backup failed (see above)")
        os.replace(partial, archive_path)
    except BaseException:
        with contextlib.suppress(OSError):
            partial.unlink()
        child.kill()
        child.wait()
        raise
    report.skipped = notes.get("skipped", [])
    report.longest_lock_seconds = round(max(notes.get("holds", {}).values(), default=0.0), 3)
    report.bytes = archive_path.stat().st_size
    report.seconds = round(time.monotonic() - started, 3)
    return report


def _copy_writer_part(stream: IO[bytes], archive: tarfile.TarFile, report: BackupReport) -> dict:
    """Copy the writer's tar stream into the archive, checking each member as a restore
    would, and hash the repodata on the way."""
    notes: dict = {}
    with stream, tarfile.open(fileobj=stream, mode="r|") as part:
        for member in part:
            if member.name == ".writer-notes.json":
                handle = part.extractfile(member)
                notes = json.loads(handle.read()) if handle else {}
                continue
            _check_member(member)
            if member.isdir():
                archive.addfile(member)
                continue
            handle = part.extractfile(member)
            assert handle is not None
            hashing = _Hashing(handle)
            archive.addfile(member, io.BufferedReader(hashing, CHUNK))
            report.files += 1
            if _is_repodata(member.name):
                report.repodata[member.name.removeprefix("channels/")] = hashing.digest.hexdigest()
    return notes


# --- restore ------------------------------------------------------------------------------


def _check_member(member: tarfile.TarInfo) -> PurePosixPath:
    """The member's name if it is a plain file or folder inside a known section; refused
    otherwise, naming what was wrong."""
    name = member.name
    if not (member.isreg() or member.isdir()):
        kind = "link" if member.issym() or member.islnk() else "device or special file"
        raise HostileArchive(f"refused: {name!r} is a {kind}; a condaport backup holds none")
    if name.startswith("/") or "\\" in name or "\x00" in name:
        raise HostileArchive(f"refused: {name!r} is an absolute or malformed name")
    path = PurePosixPath(name)
    if any(part in ("..", ".", "") for part in name.rstrip("/").split("/")):
        raise HostileArchive(f"refused: {name!r} steps outside its folder")
    if name != MANIFEST and path.parts[0] not in SECTIONS:
        raise HostileArchive(f"refused: {name!r} is in no section of a condaport backup")
    if (
        path.parts[0] == "channels"
        and len(path.parts) > 1
        and not CHANNEL_NAME.match(path.parts[1])
    ):
        raise HostileArchive(f"refused: {path.parts[1]!r} is not a channel name")
    return path


def _archive_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class _Staged:
    """What the archive held, unpacked in root's own folder: the manifest, and each file's
    mode (never setuid, setgid, sticky or world-writable) and group name from the archive."""

    manifest: dict
    modes: dict[Path, int] = field(default_factory=dict)
    groups: dict[Path, str] = field(default_factory=dict)


def _stage(archive_path: Path, stage: Path) -> _Staged:
    """Unpack into `stage` (root's own new folder), member by member, each checked first."""
    staged = _Staged(manifest={})
    manifest: object = None
    with (
        archive_path.open("rb") as raw,
        zstandard.ZstdDecompressor().stream_reader(raw) as unpacked,
        tarfile.open(fileobj=unpacked, mode="r|") as archive,
    ):
        for member in archive:
            path = _check_member(member)
            if manifest is not None:
                raise HostileArchive(f"refused: {member.name!r} comes after the manifest")
            target = stage.joinpath(*path.parts)
            if member.isdir():
                target.mkdir(mode=0o700, parents=True, exist_ok=True)
                continue
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            handle = archive.extractfile(member)
            assert handle is not None
            if member.name == MANIFEST:
                if member.size > 64 << 20:
                    raise HostileArchive("refused: the manifest is implausibly large")
                manifest = json.loads(handle.read())
                continue
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            try:
                fd = os.open(target, flags, 0o600)
            except FileExistsError:
                raise HostileArchive(f"refused: {member.name!r} appears twice") from None
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(handle, out, CHUNK)
            os.utime(target, (member.mtime, member.mtime))
            staged.modes[target] = member.mode & 0o775
            staged.groups[target] = member.gname or "root"
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise HostileArchive("refused: no manifest of a condaport backup at the end (truncated?)")
    staged.manifest = manifest
    return staged


def _verify(stage: Path, manifest: dict) -> None:
    """Every subdir's repodata.json is the one the backup hashed, and no other is there."""
    declared = manifest.get("repodata")
    if not isinstance(declared, dict):
        raise HostileArchive("refused: the manifest lists no repodata")
    found = {
        str(p.relative_to(stage / "channels")): _archive_sha256(p)
        for p in (stage / "channels").glob("*/*/repodata.json")
    }
    if found != declared:
        differing = sorted(set(found) ^ set(declared)) or sorted(
            name for name in found if found[name] != declared[name]
        )
        raise BackupError(f"the archive's repodata does not match its manifest: {differing[:5]}")


def _empty_or_absent(path: Path) -> None:
    if path.is_symlink():
        raise BackupError(f"{path} is a link: restore only onto a fresh host")
    if path.exists() and any(path.iterdir()):
        raise BackupError(
            f"{path} is not empty: restore only onto a fresh host (before its first converge)"
        )


def _hand_over(
    top: Path, staged: _Staged, section: Path, uid: int, gid: int, folder_mode: int
) -> None:
    """Give a restored tree to its owner bottom-up, so that no folder is handed over before
    everything inside it is done (root never works inside a tree the writer owns)."""
    for folder, dirs, files in os.walk(top, topdown=False):
        for name in files:
            path = Path(folder) / name
            # Modes were noted where the file was staged (`section`), before it moved here.
            mode = staged.modes.get(section / path.relative_to(top), 0o600)
            os.chmod(path, mode, follow_symlinks=False)
            os.lchown(path, uid, gid)
        for name in dirs:
            os.chmod(Path(folder) / name, folder_mode, follow_symlinks=False)
            os.lchown(Path(folder) / name, uid, gid)
    os.chmod(top, folder_mode)
    os.lchown(top, uid, gid)


def _install_root_files(source: Path, target: Path, staged: _Staged) -> None:
    """Root-owned files (configuration, TLS material, htpasswd files): each replaced by a
    rename, owned by root, group kept when it exists here (NGINX's for the htpasswd files),
    never readable by others beyond what the archive said, never world-writable."""
    for folder, _dirs, files in os.walk(source):
        relative = Path(folder).relative_to(source)
        destination = target / relative
        if destination.is_symlink():
            raise BackupError(f"{destination} is a link: restore only onto a fresh host")
        destination.mkdir(mode=0o755, parents=True, exist_ok=True)
        for name in files:
            path = Path(folder) / name
            gid = 0
            with contextlib.suppress(KeyError):
                gid = grp.getgrnam(staged.groups.get(path, "root")).gr_gid
            os.chmod(path, staged.modes.get(path, 0o600) & 0o754)
            os.chown(path, 0, gid)
            shutil.move(str(path), str(destination / name))


def _move_tree(source: Path, target: Path) -> None:
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    for entry in source.iterdir():
        shutil.move(str(entry), str(target / entry.name))


def restore(
    archive_path: Path,
    places: Places,
    *,
    writer: str | None,
    work_dir: Path = Path("/var/lib"),
    dry_run: bool = False,
) -> dict[str, object]:
    """Restore `archive_path` onto a fresh host, checked whole before anything is placed;
    a second run with the same archive changes nothing (the mark in the etc folder)."""
    started = time.monotonic()
    digest = _archive_sha256(archive_path)
    mark = places.etc_dir / RESTORED_MARK
    with contextlib.suppress(OSError, ValueError, AttributeError):
        if json.loads(mark.read_text()).get("sha256") == digest:
            return {"changed": False, "archive_sha256": digest, "result": "restored already"}
    for top in (places.channels_root, places.state_dir):
        _empty_or_absent(top)
    stage = Path(tempfile.mkdtemp(prefix="condaport-restore-", dir=work_dir))
    try:
        staged = _stage(archive_path, stage)
        _verify(stage, staged.manifest)
        if dry_run:
            return {"changed": True, "archive_sha256": digest, "result": "would restore"}
        uid, gid = os.geteuid(), os.getegid()
        if writer:
            entry = pwd.getpwnam(writer)
            uid, gid = entry.pw_uid, entry.pw_gid
        # Channel folders are served (NGINX reads them); the state is the writer's alone.
        for section, target, mode in (
            ("channels", places.channels_root, 0o755),
            ("state", places.state_dir, 0o700),
        ):
            if (stage / section).is_dir():
                _move_tree(stage / section, target)
            else:
                target.mkdir(mode=mode, parents=True, exist_ok=True)
            _hand_over(target, staged, stage / section, uid, gid, mode)
        for section, target in (("etc", places.etc_dir), ("auth", places.auth_dir)):
            if (stage / section).is_dir():
                _install_root_files(stage / section, target, staged)
        manifest = staged.manifest
        adopted = _adopt_indexes(places, manifest, writer)
        places.etc_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        fd = os.open(mark, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump({"sha256": digest, "created": manifest.get("created")}, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return {
        "changed": True,
        "archive_sha256": digest,
        "channels": manifest.get("channels", []),
        "repodata": manifest.get("repodata"),
        "adopted": adopted,
        "seconds": round(time.monotonic() - started, 3),
    }


def _adopt_indexes(places: Places, manifest: dict, writer: str | None) -> list[str]:
    """Have each restored subdir's index owner take the restored index files as its own
    (as the writer, in a child process like the backup's), so that the converge after the
    restore serves the very bytes the backup hashed instead of indexing anew."""
    spec = {
        "action": "adopt",
        "channels_root": str(places.channels_root),
        "state_dir": str(places.state_dir),
        "writer": writer,
        "repodata": manifest.get("repodata", {}),
    }
    child = subprocess.run(
        [sys.executable, "-m", "condaport.backup", json.dumps(spec)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
    )
    if child.returncode != 0:
        raise BackupError(f"adopting the restored indexes failed: {child.stderr.strip()}")
    return json.loads(child.stdout)


def _adopt_as_writer(channels_root: Path, state_dir: Path, declared: dict[str, str]) -> list[str]:
    """Each subdir whose repodata.json is still the one the manifest names, adopted."""
    adopted = []
    for name, checksum in sorted(declared.items()):
        relative = PurePosixPath(name)
        if len(relative.parts) != 3 or not CHANNEL_NAME.match(relative.parts[0]):
            continue
        path = channels_root / relative
        if _archive_sha256(path) != checksum:
            continue
        owner = SubdirIndex.at(channels_root / relative.parts[0], relative.parts[1], state_dir)
        if owner.adopt():
            adopted.append(str(relative.parent))
    return adopted


def _writer_main(argv: list[str]) -> int:
    """The child's entry point (`python -m condaport.backup SPEC`): become the writer, then
    link and stream the trees to stdout."""
    spec = json.loads(argv[0])
    try:
        become_writer(spec["writer"])
        if spec.get("action") == "adopt":
            adopted = _adopt_as_writer(
                Path(spec["channels_root"]), Path(spec["state_dir"]), spec["repodata"]
            )
            print(json.dumps(adopted))
            return 0
        places = Places(Path(spec["channels_root"]), Path(spec["state_dir"]))
        snapshot = Path(tempfile.mkdtemp(prefix=".backup-", dir=spec["snapshot_parent"]))
        try:
            _writer_part(places, list(spec["channels"]), snapshot, sys.stdout.buffer)
        finally:
            shutil.rmtree(snapshot, ignore_errors=True)
    except (OSError, RuntimeError) as exc:
        print(f"condaport backup (writer part): {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_writer_main(sys.argv[1:]))
