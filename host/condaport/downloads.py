"""Download counts: the one owner of how many times each package file was served.

NGINX writes one JSON line per complete 200 answer of a package file into a dedicated log
(condaport_nginx: `escape=json`, buffered, on primaries and edges alike); nothing runs in
Python on the request path. `condaport-downloads collect`, started by a timer, reads the
new part of that log (its inode and offset are kept, so a rotation loses no line and a
line NGINX has not finished is read next time), adds the lines to the counts and saves
counts and position in one atomic write: a crash repeats or loses no line.

Edges count the installs they serve from their cache and report them to the primary:
`condaport-downloads push` POSTs the edge's *cumulative* counts, tagged with the edge's
own random instance id, to the primary's upload service. The primary keeps, per instance,
the highest count it has seen for each file, so a retried, repeated or reordered push
never counts twice, and a rebuilt edge (new state, new id) starts a new tally instead of
being hidden under its old one. The primary does not count the edges' own fetches (their
login is excluded in its NGINX map), only what clients download.

The log is written by NGINX's workers: every line is hostile input (a URL may carry
quotes, newlines or anything percent-decoding gives), checked against the shapes of
channel, subdir and file names before it counts.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import re
import secrets
import ssl
import sys
import urllib.request
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote

from condaport.config import CHANNEL_NAME
from condaport.files import replace_atomically

LOG = logging.getLogger("condaport-downloads")
STATE_FILE = "counts.json"
# The counter's folder on a host (the web account's, readable by NGINX and every account),
# and in it, on a primary, the edges' reports (the upload service's).
DEFAULT_FOLDER = Path("/var/lib/condaport-downloads")
EDGE_REPORTS = "edges"
PUBLISHED_SUFFIX = ".json"
SUBDIR_SHAPE = re.compile(r"^[a-z0-9_]+(-[a-z0-9_]+)?$")
# A conda file name: name-version-build.ext, none of them empty, no separator, quote,
# space or control character (conda's own rules are stricter; this is what may count).
FILE_SHAPE = re.compile(
    r"^[A-Za-z0-9_.+!~-]+-[A-Za-z0-9_.+!~]+-[A-Za-z0-9_.+!~]+\.(conda|tar\.bz2)$"
)
INSTANCE_SHAPE = re.compile(r"^[0-9a-f]{32}$")
# A line longer than this is no line NGINX wrote for a package file: skipped whole.
LONGEST_LINE = 16 << 10
READ_CHUNK = 1 << 20


@dataclass(frozen=True, order=True)
class FileKey:
    """One package file of one channel."""

    channel: str
    subdir: str
    filename: str

    def __str__(self) -> str:
        return f"{self.channel}/{self.subdir}/{self.filename}"

    @property
    def package(self) -> str:
        return split_filename(self.filename)[0]

    @property
    def version(self) -> str:
        return split_filename(self.filename)[1]


def split_filename(filename: str) -> tuple[str, str, str]:
    """(name, version, build) of a conda file name (names may hold dashes, the others not)."""
    stem = filename.removesuffix(".conda").removesuffix(".tar.bz2")
    name, version, build = stem.rsplit("-", 2)
    return name, version, build


def file_key(path: str) -> FileKey | None:
    """The file a served path names (/<channel>/<subdir>/<file>), or None for anything
    else: another path, or one whose parts are not names a channel can hold."""
    if not isinstance(path, str):
        return None
    parts = path.split("/")
    if len(parts) != 4 or parts[0] != "":
        return None
    _, channel, subdir, filename = parts
    if not CHANNEL_NAME.match(channel) or not SUBDIR_SHAPE.match(subdir):
        return None
    if not FILE_SHAPE.match(filename) or "\n" in path:
        return None
    return FileKey(channel, subdir, filename)


def counted_line(line: bytes) -> FileKey | None:
    """The file one log line counts, or None: not JSON, not a complete 200 GET, or a path
    that names no package file."""
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    if not isinstance(entry, dict) or entry.get("status") != "200":
        return None
    if entry.get("method", "GET") != "GET":
        return None
    return file_key(entry.get("uri"))


@dataclass
class Position:
    """Where the reader stopped: the log file's inode and the offset after the last whole
    line read."""

    inode: int = 0
    offset: int = 0


def _whole_lines(handle: BinaryIO, start: int) -> Iterator[tuple[bytes, int]]:
    """(line, offset after it) for each newline-ended line from `start`; a last line
    without its newline is left for the next read (NGINX may be writing it). A line longer
    than any NGINX writes for us comes back empty, so memory stays bounded."""
    handle.seek(start)
    offset, pending, oversized = start, b"", False
    while chunk := handle.read(READ_CHUNK):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            offset += len(line) + 1
            yield (b"" if oversized or len(line) > LONGEST_LINE else line), offset
            oversized = False
        if len(pending) > LONGEST_LINE:
            offset += len(pending)
            pending, oversized = b"", True
    if oversized:  # the oversized line is not finished: read it again next time
        return


def read_new_lines(log: Path, position: Position) -> Iterator[tuple[bytes, Position]]:
    """The lines added to `log` since `position`, each with the position after it.

    After a rotation (the path names another inode) the rest of the old file is read from
    its rotated name `<log>.1` (logrotate's, Debian's NGINX default) when that is the file
    read before, then the new file from its start. A file shorter than the offset was
    truncated: read from its start."""
    try:
        current = os.stat(log)
    except FileNotFoundError:
        return
    if position.inode and current.st_ino != position.inode:
        rotated = log.with_name(log.name + ".1")
        try:
            with rotated.open("rb") as handle:
                if os.fstat(handle.fileno()).st_ino == position.inode:
                    for line, offset in _whole_lines(handle, position.offset):
                        yield line, Position(position.inode, offset)
        except FileNotFoundError:
            pass
        position = Position(current.st_ino, 0)
    with log.open("rb") as handle:
        inode = os.fstat(handle.fileno()).st_ino
        start = position.offset if inode == position.inode else 0
        if os.fstat(handle.fileno()).st_size < start:
            start = 0
        if inode != position.inode:
            yield b"", Position(inode, start)  # the new file, even with no line yet
        for line, offset in _whole_lines(handle, start):
            yield line, Position(inode, offset)


@dataclass
class Counts:
    """This host's counts (from its own log), the edges' reports (primary), the reader's
    position and this host's instance id (what its pushes are known by)."""

    local: dict[FileKey, int] = field(default_factory=dict)
    position: Position = field(default_factory=Position)
    instance: str = field(default_factory=lambda: secrets.token_hex(16))

    def add(self, key: FileKey, count: int = 1) -> None:
        self.local[key] = self.local.get(key, 0) + count


def _key_from_text(text: object) -> FileKey | None:
    return file_key("/" + text) if isinstance(text, str) else None


def _counts_from(data: object) -> dict[FileKey, int]:
    """{"<channel>/<subdir>/<file>": n} as read from a file or a push; anything else in
    it is dropped."""
    found: dict[FileKey, int] = {}
    if not isinstance(data, dict):
        return found
    for text, count in data.items():
        key = _key_from_text(text)
        if key is not None and isinstance(count, int) and not isinstance(count, bool):
            if 0 < count < 1 << 53:
                found[key] = count
    return found


def _counts_to(counts: dict[FileKey, int]) -> dict[str, int]:
    return {str(key): counts[key] for key in sorted(counts)}


def load(directory: Path) -> Counts:
    """The saved counts; fresh ones (and a new instance id) if there are none yet."""
    try:
        data = json.loads((directory / STATE_FILE).read_bytes())
    except FileNotFoundError:
        return Counts()
    position = data.get("position", {})
    instance = data.get("instance")
    return Counts(
        local=_counts_from(data.get("counts")),
        position=Position(int(position.get("inode", 0)), int(position.get("offset", 0))),
        instance=instance if INSTANCE_SHAPE.match(str(instance)) else secrets.token_hex(16),
    )


def save(directory: Path, counts: Counts) -> None:
    """Counts and position in one atomic write."""
    document = {
        "instance": counts.instance,
        "position": {"inode": counts.position.inode, "offset": counts.position.offset},
        "counts": _counts_to(counts.local),
    }
    replace_atomically(directory / STATE_FILE, json.dumps(document).encode())


def collect(log: Path, directory: Path) -> int:
    """Count the log's new lines into the state in `directory`; the number counted."""
    counts = load(directory)
    added = 0
    for line, position in read_new_lines(log, counts.position):
        counts.position = position
        key = counted_line(line) if line else None
        if key is not None:
            counts.add(key)
            added += 1
    save(directory, counts)
    return added


def merge_report(reports: Path, instance: str, report: object) -> int:
    """Keep an edge's cumulative report: per file the highest count seen from that
    instance (a retried or late push changes nothing). The number of files it raised."""
    if not INSTANCE_SHAPE.match(instance):
        raise ValueError("an edge instance id is 32 hex digits")
    incoming = _counts_from(report)
    target = reports / f"{instance}.json"
    try:
        kept = _counts_from(json.loads(target.read_bytes()))
    except FileNotFoundError:
        kept = {}
    raised = {key: n for key, n in incoming.items() if n > kept.get(key, 0)}
    if raised:
        kept.update(raised)
        reports.mkdir(mode=0o755, parents=True, exist_ok=True)
        replace_atomically(target, json.dumps(_counts_to(kept)).encode())
    return len(raised)


def totals(directory: Path, reports: Path | None = None) -> dict[FileKey, int]:
    """This host's counts plus every edge instance's latest report."""
    combined: dict[FileKey, int] = defaultdict(int)
    for key, count in load(directory).local.items():
        combined[key] += count
    if reports is not None and reports.is_dir():
        for report in sorted(reports.glob("*.json")):
            if not INSTANCE_SHAPE.match(report.stem):
                continue
            try:
                data = json.loads(report.read_bytes())
            except (OSError, ValueError):
                continue
            for key, count in _counts_from(data).items():
                combined[key] += count
    return dict(combined)


def counts_by_version(
    directory: Path, reports: Path | None = None
) -> dict[tuple[str, str, str, str], int]:
    """Downloads per (channel, subdir, package, version): the metrics exposition's
    `condaport_downloads_total` family."""
    found: dict[tuple[str, str, str, str], int] = defaultdict(int)
    for key, count in totals(directory, reports).items():
        found[(key.channel, key.subdir, key.package, key.version)] += count
    return dict(found)


def host_counts_by_version(
    folder: Path = DEFAULT_FOLDER,
) -> dict[tuple[str, str, str, str], int]:
    """`counts_by_version` of a converged host, from the counter's folder: its own counts
    and, on a primary, its edges' reports."""
    return counts_by_version(folder, folder / EDGE_REPORTS)


def channel_document(channel: str, counts: dict[FileKey, int], moment: datetime) -> dict:
    """The JSON endpoint's answer for one channel, after anaconda.org's: each file with
    its `ndownloads`, and a total per package and for the channel."""
    packages: dict[str, dict] = {}
    for key in sorted(k for k in counts if k.channel == channel):
        entry = packages.setdefault(key.package, {"ndownloads": 0, "versions": {}, "files": []})
        entry["ndownloads"] += counts[key]
        entry["versions"][key.version] = entry["versions"].get(key.version, 0) + counts[key]
        entry["files"].append(
            {
                "basename": f"{key.subdir}/{key.filename}",
                "version": key.version,
                "attrs": {"subdir": key.subdir},
                "ndownloads": counts[key],
            }
        )
    return {
        "channel": channel,
        "updated": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "ndownloads": sum(p["ndownloads"] for p in packages.values()),
        "packages": packages,
    }


def publish(
    public: Path, channels: Iterable[str], counts: dict[FileKey, int], moment: datetime
) -> None:
    """`<public>/<channel>.json` for each channel, which NGINX serves at
    /api/channels/<channel>/downloads with the channel's own access rule."""
    for channel in channels:
        document = channel_document(channel, counts, moment)
        content = json.dumps(document, separators=(",", ":")).encode()
        target = public / f"{channel}{PUBLISHED_SUFFIX}"
        try:
            if target.read_bytes() == content:
                continue
        except FileNotFoundError:
            pass
        replace_atomically(target, content)


def package_totals(public: Path, channel: str) -> dict[str, dict[str, int]]:
    """For the browse page: per package, `total` and per file (`<subdir>/<file>`) counts,
    from the published document (written by another account: read as untrusted)."""
    try:
        document = json.loads((public / f"{channel}{PUBLISHED_SUFFIX}").read_bytes())
        packages = document["packages"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    found: dict[str, dict[str, int]] = {}
    if not isinstance(packages, dict):
        return found
    for name, entry in packages.items():
        if not isinstance(entry, dict):
            continue
        files = {}
        for item in entry.get("files", []):
            if isinstance(item, dict) and isinstance(item.get("ndownloads"), int):
                files[str(item.get("basename"))] = item["ndownloads"]
        found[str(name)] = {"total": sum(files.values()), **files}
    return found


def push(directory: Path, url: str, user: str, password: str, ca_file: Path | None) -> int:
    """Send this edge's cumulative counts to the primary; the HTTP status."""
    counts = load(directory)
    save(directory, counts)  # the instance id must outlive this push
    body = json.dumps({"instance": counts.instance, "counts": _counts_to(counts.local)})
    request = urllib.request.Request(
        url.rstrip("/") + "/api/downloads/edges/" + quote(counts.instance),
        data=body.encode(),
        method="POST",
        headers={
            "Content-Type": "application/json",
            "Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode(),
        },
    )
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    with urllib.request.urlopen(request, timeout=30, context=context) as answer:  # noqa: S310 - https from configuration
        return answer.status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="condaport-downloads", description=__doc__)
    parser.add_argument("--state", type=Path, required=True, help="the counts' folder")
    commands = parser.add_subparsers(dest="command", required=True)
    collecting = commands.add_parser("collect", help="count the log's new lines")
    collecting.add_argument("--log", type=Path, required=True)
    collecting.add_argument("--public", type=Path, help="publish per-channel JSON here")
    collecting.add_argument("--reports", type=Path, help="the edges' reports (primary)")
    collecting.add_argument("--channel", action="append", default=[], help="channels to publish")
    pushing = commands.add_parser("push", help="report this edge's counts to the primary")
    pushing.add_argument("--primary", required=True, help="https://NAME[:PORT]")
    pushing.add_argument("--user", required=True)
    pushing.add_argument("--ca-file", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    if args.command == "collect":
        added = collect(args.log, args.state)
        if args.public is not None:
            all_counts = totals(args.state, args.reports)
            publish(args.public, args.channel, all_counts, datetime.now(tz=UTC))
        LOG.info("counted %d downloads", added)
        return 0
    # The password comes from the environment (a credentials file of the unit), never
    # from the command line, where any account could read it.
    password = os.environ.get("CONDAPORT_PRIMARY_PASSWORD", "")
    status = push(args.state, args.primary, args.user, password, args.ca_file)
    LOG.info("pushed counts to the primary: %d", status)
    return 0


def run_cli() -> None:
    from condaport.cli import exit_now

    exit_now(main())


if __name__ == "__main__":
    run_cli()
