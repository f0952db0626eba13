"""The channel's browse page: one static HTML file rendered from its subdirs' repodata.

Written to `<channel>/index.html` after each index run (by temp file and rename, like the
repodata), so NGINX serves it at `/<channel>/` with the channel's own access rule.
Package metadata is untrusted input: the template escapes everything it shows.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from rattler import Version
from rattler.exceptions import InvalidVersionError

from condaport.files import replace_atomically
from condaport.repodata import RepodataUnusable, read

PAGE = "index.html"
TEMPLATE = "browse.html.j2"


@dataclass(frozen=True)
class PackageFile:
    name: str
    version: str
    build: str
    subdir: str
    filename: str
    size: int
    timestamp_ms: int | None

    @property
    def uploaded(self) -> str:
        if not self.timestamp_ms:
            return "—"
        moment = datetime.fromtimestamp(self.timestamp_ms / 1000, tz=UTC)
        return moment.strftime("%Y-%m-%d")

    @property
    def human_size(self) -> str:
        return human_size(self.size)


@dataclass
class PackageGroup:
    name: str
    files: list[PackageFile] = field(default_factory=list)

    @property
    def latest(self) -> str:
        return self.files[0].version if self.files else ""

    @property
    def versions(self) -> int:
        return len({f.version for f in self.files})


@dataclass(frozen=True)
class SubdirSummary:
    name: str
    indexed: bool
    count: int


def human_size(size: int) -> str:
    """Decimal units, one decimal place: 999 B, 1.0 kB, 12.3 MB (never "1000.0 kB")."""
    if size < 1000:
        return f"{max(size, 0)} B"
    value = size / 1000
    for unit in ("kB", "MB", "GB"):
        if round(value, 1) < 1000 or unit == "GB":
            return f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def _version_key(version: str) -> tuple[int, Version | str]:
    """Sort key for conda versions; unparseable ones sort after the valid ones, as text."""
    try:
        return (1, Version(version))
    except (InvalidVersionError, TypeError, ValueError):
        return (0, version)


def _milliseconds(timestamp: object) -> int | None:
    """repodata timestamps are milliseconds, but older packages carry seconds."""
    if isinstance(timestamp, bool) or not isinstance(timestamp, int | float) or timestamp <= 0:
        return None
    moment = timestamp if timestamp > 10**11 else timestamp * 1000
    return int(moment) if moment < 10**14 else None  # beyond year 5000: garbage, not a date


def _size(value: object) -> int:
    """A record's size; anything that is not a non-negative whole number counts as 0."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return 0
    try:
        size = int(value)
    except (ValueError, OverflowError):
        return 0
    return max(size, 0)


def _subdirs(channel_dir: Path) -> list[str]:
    names = [p.name for p in channel_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return sorted(names, key=lambda n: (n != "noarch", n))


def collect(channel_dir: Path) -> tuple[list[PackageGroup], list[SubdirSummary]]:
    """Package groups (by name, newest version first) and a summary per subdir."""
    groups: dict[str, PackageGroup] = {}
    summaries = []
    for subdir in _subdirs(channel_dir):
        try:
            repodata = read(channel_dir / subdir)
        except RepodataUnusable:
            summaries.append(SubdirSummary(subdir, indexed=False, count=0))
            continue
        count = 0
        for section in ("packages", "packages.conda"):
            records = repodata.get(section)
            if not isinstance(records, dict):
                continue
            for filename, record in records.items():
                if not isinstance(record, dict):
                    continue
                package = PackageFile(
                    name=str(record.get("name", "?")),
                    version=str(record.get("version", "?")),
                    build=str(record.get("build", "?")),
                    subdir=subdir,
                    filename=str(filename),
                    size=_size(record.get("size")),
                    timestamp_ms=_milliseconds(record.get("timestamp")),
                )
                groups.setdefault(package.name, PackageGroup(package.name)).files.append(package)
                count += 1
        summaries.append(SubdirSummary(subdir, indexed=True, count=count))
    for group in groups.values():
        group.files.sort(key=lambda f: (f.build, f.subdir), reverse=True)
        group.files.sort(key=lambda f: _version_key(f.version), reverse=True)
    return [groups[name] for name in sorted(groups, key=str.lower)], summaries


def render_channel_page(
    channel_dir: Path,
    channel_name: str,
    channel_url: str | None = None,
    generated_at: datetime | None = None,
) -> str:
    """The page's HTML. Without `channel_url` the snippets show the URL the browser used."""
    groups, subdirs = collect(channel_dir)
    environment = Environment(
        loader=FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )
    moment = generated_at or datetime.now(tz=UTC)
    return environment.get_template(TEMPLATE).render(
        channel=channel_name,
        channel_url=channel_url.rstrip("/") + "/" if channel_url else None,
        groups=groups,
        subdirs=subdirs,
        file_count=sum(len(g.files) for g in groups),
        total_size=human_size(sum(f.size for g in groups for f in g.files)),
        generated=moment.strftime("%Y-%m-%d %H:%M UTC"),
    )


def write_channel_page(
    channel_dir: Path, channel_name: str, channel_url: str | None = None
) -> Path:
    """Render and atomically replace `<channel_dir>/index.html` (mode 0644).

    The temp file is a dot file in the same directory (never served, same file system for
    the rename); it is removed if anything fails before the rename.
    """
    content = render_channel_page(channel_dir, channel_name, channel_url).encode()
    target = channel_dir / PAGE
    replace_atomically(target, content)
    directory = os.open(channel_dir, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return target
