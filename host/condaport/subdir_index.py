"""The one owner of a subdir's index: its fingerprint, its records and every file rendered
from them (repodata.json, repodata.json.zst, the shard index and the shards).

A subdir is fresh when it has repodata and its package files (names, sizes, mtimes,
inodes, ctimes) are those its index was last built from; the fingerprint is recorded only
after a successful index, so a run that dies midway is simply repeated by the next one.

Changes come two ways. `apply` edits the records of the files that changed, in the
Document kept in memory while repodata.json on disk is the file it describes, and
rewrites only what depends on them: the changed names' shards, the shard index, and the
monolithic files. `rebuild` has the backend index the whole subdir, then renders the
shards of the names whose records changed. `refresh` picks one of the two for whatever
the files are now (the index handler's path). Callers hold the channel lock.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from condaport import adjustments, repodata, shards
from condaport.channel_files import ChannelFiles, NotAFolder, Rows, row_of
from condaport.config import CHANNEL_NAME
from condaport.files import dated_after_their_predecessors, replace_atomically
from condaport.index_backends import Backend, IndexFailed, RattlerBackend
from condaport.packages import SUFFIXES, Rejected

Changes = Mapping[str, dict | None]  # filename -> its record, None: gone


class RowsText:
    """What is recorded of a subdir's rows, the fingerprint (sha256 of one line per file,
    in name order) and the rows file (JSON), kept formatted between calls: successive rows
    of one subdir differ in a few files, and formatting 100,000 rows again costs 0.5 s
    where joining and hashing the kept text costs 0.03 s."""

    def __init__(self) -> None:
        self._rows: Rows = {}
        # Sorted file names, and each one's fingerprint line and rows-file member.
        self._names: list[str] = []
        self._lines: list[str] = []
        self._members: list[str] = []
        self._digest: str | None = None  # of the kept lines, until they change

    def digest(self, rows: Rows) -> str:
        self._update(rows)
        if self._digest is None:
            self._digest = hashlib.sha256("".join(self._lines).encode()).hexdigest()
        return self._digest

    def digest_and_json(self, rows: Rows) -> tuple[str, str]:
        """The fingerprint and the rows file's text."""
        return self.digest(rows), "{" + ",".join(self._members) + "}"

    def _update(self, rows: Rows) -> None:
        old = self._rows
        if rows == old:  # a tenth of the cost of finding what differs
            return
        gone = old.keys() - rows.keys()
        changed = [name for name, row in rows.items() if old.get(name) != row]
        self._digest = None
        if len(gone) + len(changed) > len(rows) // 16:  # cheaper all at once
            self._names = sorted(rows)
            self._lines = [_line(name, rows[name]) for name in self._names]
            self._members = [_member(name, rows[name]) for name in self._names]
        else:
            names = self._names
            for name in gone:
                at = bisect.bisect_left(names, name)
                del names[at], self._lines[at], self._members[at]
            for name in changed:
                at = bisect.bisect_left(names, name)
                line, member = _line(name, rows[name]), _member(name, rows[name])
                if at < len(names) and names[at] == name:
                    self._lines[at], self._members[at] = line, member
                else:
                    names.insert(at, name)
                    self._lines.insert(at, line)
                    self._members.insert(at, member)
        self._rows = dict(rows)


def _line(name: str, row: tuple[int, ...]) -> str:
    return name + "".join(f"\t{v}" for v in row) + "\n"


def _member(name: str, row: tuple[int, ...]) -> str:
    plain = name.isascii() and name.isprintable() and '"' not in name and "\\" not in name
    key = f'"{name}"' if plain else json.dumps(name)
    return f"{key}:[{','.join(str(v) for v in row)}]"


def rows_digest(rows: Rows) -> str:
    return RowsText().digest(rows)


def state_folder(state_dir: Path, channel: str) -> Path:
    """Where a channel's index state lives (one file pair per subdir)."""
    return state_dir / "fingerprints" / channel


def fingerprint_file(state_dir: Path, channel: str, subdir: str) -> Path:
    return state_folder(state_dir, channel) / f"{subdir}.sha256"


def _rows_file(state_dir: Path, channel: str, subdir: str) -> Path:
    return state_folder(state_dir, channel) / f"{subdir}.files.json"


def _digests(path: Path) -> tuple[str, str, int]:
    """sha256, md5 and size of a file, in one read."""
    sha256, md5, size = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha256.update(block)
            md5.update(block)
            size += len(block)
    return sha256.hexdigest(), md5.hexdigest(), size


def record_from_file(path: Path) -> dict:
    """The record of a placed package file, its digests taken in one read."""
    sha256, md5, size = _digests(path)
    return repodata.package_record(path, sha256=sha256, md5=md5, size=size)


def index_files(channel_dir: Path, subdir: str) -> list[Path]:
    """What an index backend may rewrite: the subdir's files that are not packages (nor
    dot files), and the channel's channeldata.json."""
    subdir_files = [
        path
        for path in (channel_dir / subdir).glob("*")
        if path.is_file() and not path.name.startswith(".") and not path.name.endswith(SUFFIXES)
    ]
    return [*sorted(subdir_files), channel_dir / "channeldata.json"]


def render_with_backend(channel_dir: Path, subdir: str, backend: Backend, force: bool) -> None:
    """The backend indexes the subdir, then the shards of the names whose records changed
    are rendered from what it wrote. Used by `SubdirIndex.rebuild`, in this process or in
    the child `condaport-index subdir` that services start."""
    subdir_dir = channel_dir / subdir
    try:
        before = repodata.read(subdir_dir)
    except repodata.RepodataUnusable:
        before = None
    with dated_after_their_predecessors(index_files(channel_dir, subdir)):
        backend.index(channel_dir, subdir, force)
    try:
        written = repodata.read(subdir_dir)
    except repodata.RepodataUnusable as exc:
        raise IndexFailed(f"{backend.name} wrote no usable repodata: {exc}") from None
    changed = shards.changed_names(before, written)
    shards.sync(subdir_dir, shards.by_name(written), changed, sweep_interval=0)


def listed_records(subdir_dir: Path) -> dict[str, dict]:
    """filename -> record of every package a subdir's index lists ({} without repodata),
    for readers outside the channel lock."""
    try:
        return repodata.Document.load(subdir_dir).records()
    except repodata.RepodataUnusable:
        return {}


class SubdirIndex:
    """The index of one subdir of one channel."""

    def __init__(
        self,
        files: ChannelFiles,
        subdir: str,
        state_dir: Path,
        backend: Backend,
        *,
        in_child: bool = False,
    ) -> None:
        self.files = files
        self.subdir = subdir
        self.state_dir = state_dir
        self.backend = backend
        # Long-running services index in a short-lived child process: rattler's full index
        # costs about 90 MB however small the subdir, plus every package it has not indexed
        # yet read whole into memory; a child returns all of it when it exits.
        self.in_child = in_child
        self._document: repodata.Document | None = None
        self._rows_text = RowsText()

    @classmethod
    def at(
        cls,
        channel_dir: Path,
        subdir: str,
        state_dir: Path,
        backend: Backend | None = None,
        *,
        in_child: bool = False,
    ) -> SubdirIndex:
        """The owner of `channel_dir/subdir` (rattler's index unless told otherwise)."""
        files = ChannelFiles(channel_dir)
        return cls(files, subdir, state_dir, backend or RattlerBackend(), in_child=in_child)

    @property
    def channel(self) -> str:
        return self.files.name

    @property
    def folder(self) -> Path:
        return self.files.subdir_dir(self.subdir)

    # -- what the index was built from -----------------------------------------------------

    def rows(self) -> Rows:
        return self.files.rows(self.subdir)

    def recorded_rows(self) -> Rows | None:
        """The files the last successful index saw, or None when unknown (first run,
        upgrade)."""
        try:
            data = json.loads(_rows_file(self.state_dir, self.channel, self.subdir).read_text())
            return {name: tuple(map(int, row)) for name, row in data.items()}  # type: ignore[misc]
        except (OSError, ValueError, TypeError, AttributeError):
            return None

    def is_fresh(self, rows: Rows | None = None) -> bool:
        """The one definition of an up-to-date subdir: it has repodata, and its package
        files (`rows`, read now when not given) are those its index was last built from."""
        if not (self.folder / repodata.REPODATA).is_file():
            return False
        try:
            recorded = fingerprint_file(self.state_dir, self.channel, self.subdir).read_text()
        except OSError:
            return False
        return recorded.strip() == self._rows_text.digest(self.rows() if rows is None else rows)

    def _record_fingerprint(self, rows: Rows) -> None:
        target = fingerprint_file(self.state_dir, self.channel, self.subdir)
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        digest, rows_json = self._rows_text.digest_and_json(rows)
        # The rows first: the fingerprint is what marks the subdir as done.
        # Not fsynced: a fingerprint lost in a crash only makes the next run index again.
        replace_atomically(
            _rows_file(self.state_dir, self.channel, self.subdir), rows_json.encode(), durable=False
        )
        replace_atomically(target, (digest + "\n").encode(), durable=False)

    def adopt(self) -> bool:
        """Take the index files found beside the package files as this subdir's index,
        when they list exactly those files (packages, and broken ones under `removed`): a
        restore has put back both, with the bytes its manifest proved, but not the inodes
        and ctimes the fingerprint was made of. Recording the rows as indexed keeps the
        restored bytes instead of rendering them anew. False, nothing recorded, otherwise."""
        try:
            document = repodata.Document.load(self.folder)
        except repodata.RepodataUnusable:
            return False
        rows = self.rows()
        listed = set(document.records())
        removed = document.top.get("removed", [])
        if not isinstance(removed, list) or listed & set(removed):
            return False
        if listed | set(removed) != set(rows):
            return False
        self._record_fingerprint(rows)
        return True

    def replaced_since_indexed(self, rows: Rows) -> bool:
        """Whether a file the last index saw under a name is now another file of that name
        (or whether that is unknown): the index must then read every record again, since
        the backends keep the record of a name they already list."""
        previous = self.recorded_rows()
        return previous is None or any(n in previous and previous[n] != r for n, r in rows.items())

    # -- reading the records ---------------------------------------------------------------

    def document(self) -> repodata.Document:
        """The subdir's repodata, read again only when repodata.json is another file than
        the one last read or written; RepodataUnusable when there is none usable."""
        path = self.folder / repodata.REPODATA
        try:
            signature = repodata.signature_of(path)
        except FileNotFoundError:
            self._document = None
            raise repodata.RepodataUnusable(f"{self.subdir} has no {repodata.REPODATA}") from None
        if self._document is None or self._document.signature != signature:
            self._document = repodata.Document.load(self.folder)
        return self._document

    def editable(self) -> bool:
        """Whether `apply` can edit this subdir's records (its backend writes the records
        condaport writes, and its repodata is readable)."""
        if not self.backend.edits_in_place:
            return False
        try:
            self.document()
        except repodata.RepodataUnusable:
            return False
        return True

    # -- changing it -----------------------------------------------------------------------

    def apply(self, changes: Changes, rows: Rows) -> None:
        """Set each file's record (None: remove it), rewrite what depends on them, and
        record `rows` (the files as they are now) as indexed. Records are published as the
        channel's adjustments say (patched, or left out when marked broken).
        RepodataUnusable when there is no repodata to edit; the caller then rebuilds."""
        self._publish(self.document(), changes, self._adjustments())
        self._record_fingerprint(rows)

    def _publish(
        self, document: repodata.Document, changes: Changes, adjusted: adjustments.Adjustments
    ) -> None:
        """Set each file's record as the adjustments say, and write the index files."""
        touched: set[str] = set()
        for filename, record in changes.items():
            if record is not None:
                record = adjusted.adjusted(self.subdir, filename, record)
            touched |= document.set(filename, record)
        self._mark_removed(document, adjusted)
        self._write(document, touched)

    def _adjustments(self) -> adjustments.Adjustments:
        try:
            return adjustments.load(self.state_dir, self.channel).for_subdir(self.subdir)
        except adjustments.BadAdjustment as exc:
            raise IndexFailed(str(exc)) from None

    def _mark_removed(self, document: repodata.Document, adjusted: adjustments.Adjustments) -> None:
        """repodata's `removed` lists the files whose records were taken out (broken)."""
        marked = sorted(key.partition("/")[2] for key in adjusted.broken)
        if marked or "removed" in document.top:
            document.set_top("removed", marked)

    def readjust(self, filenames: list[str]) -> None:
        """Publish these files' records again, from the files themselves, as the channel's
        adjustments now say (after a patch or broken mark was set or taken back)."""
        rows = self.rows()
        if not (self.is_fresh(rows) and self.editable()):
            self.rebuild()  # applies every adjustment
            if not self.backend.edits_in_place:
                return  # its records came from the files: nothing patched is left over
            rows = self.rows()
        changes: Changes = {
            name: record_from_file(self.folder / name)
            for name in filenames
            if (self.folder / name).is_file()
        }
        self.apply(changes, rows)

    def _reapply(self) -> None:
        """After a backend wrote the repodata: publish the adjusted files as adjusted."""
        adjusted = self._adjustments()
        names = adjusted.files(self.subdir)
        document = self.document()
        if not names and "removed" not in document.top:
            return
        listed = {name: document.record(name) for name in sorted(names)}
        changes = {name: record for name, record in listed.items() if record is not None}
        self._publish(document, changes, adjusted)

    def _begin_writing(self) -> None:
        """The index files are about to change: until the new fingerprint is recorded, the
        subdir counts as stale and as interrupted, so a writer killed between repodata.json
        and the shards is repaired by the next run (see `interrupted`)."""
        fingerprint_file(self.state_dir, self.channel, self.subdir).unlink(missing_ok=True)

    def interrupted(self) -> bool:
        """Whether the last write of the index files never finished: the files the last
        index saw are recorded, but not the fingerprint that closes a write."""
        rows_file = _rows_file(self.state_dir, self.channel, self.subdir)
        closed = fingerprint_file(self.state_dir, self.channel, self.subdir)
        return rows_file.exists() and not closed.exists()

    def _write(self, document: repodata.Document, touched: set[str]) -> None:
        self._begin_writing()
        try:
            repodata.write_bytes(self.folder, document.render())
            shards.sync(self.folder, document.names, touched)
        except BaseException:
            self._document = None  # the files on disk may be the old or the new ones
            raise
        document.signature = repodata.signature_of(self.folder / repodata.REPODATA)
        self._document = document

    def change(self, changes: Changes, rows_before: Rows, fresh: bool) -> str:
        """After the files in `changes` were placed or deleted: bring the index up to date,
        by editing when the index matched `rows_before`, fully otherwise. Returns how
        ("incremental" or "full")."""
        if fresh and self.backend.edits_in_place:
            rows = dict(rows_before)
            for filename, record in changes.items():
                if record is None:
                    rows.pop(filename, None)
                else:
                    rows[filename] = row_of((self.folder / filename).stat())
            try:
                self.apply(changes, rows)
            except repodata.RepodataUnusable:
                pass
            else:
                return "incremental"
        self.rebuild()
        return "full"

    def rebuild(self, *, force: bool = False) -> None:
        """Index the subdir fully as its files are now, and record them as indexed; every
        record is read again when a file was replaced under a name (or when forced)."""
        rows = self.rows()  # taken before indexing: a later change stays stale
        # After an interrupted write, no record on disk is trusted: all are read again
        # and every adjustment applied anew.
        force = force or self.replaced_since_indexed(rows) or self.interrupted()
        self._begin_writing()
        self._document = None
        if self.in_child:
            self._rebuild_in_child(force)
        else:
            render_with_backend(self.files.channel_dir, self.subdir, self.backend, force)
        self._reapply()
        self._record_fingerprint(rows)

    def _rebuild_in_child(self, force: bool) -> None:
        argv = [sys.executable, "-m", "condaport.index_command", "subdir"]
        argv += [str(self.files.channel_dir), self.subdir, "--backend", self.backend.name]
        argv += ["--conda-python", self.backend.conda_python] if self.backend.conda_python else []
        argv += ["--force"] if force else []
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            said = result.stderr.strip().splitlines()
            reason = said[-1].removeprefix("condaport-index: ") if said else ""
            raise IndexFailed(
                reason or f"index of {self.channel}/{self.subdir} exited {result.returncode}"
            )

    def refresh(self, *, force: bool = False, rows: Rows | None = None) -> list[dict[str, str]]:
        """Bring the index up to date with the files as they are (`rows`, read now when
        not given; the index handler's path): files that changed since the last index are
        screened (unreadable ones go to quarantine), then their records are edited in, or,
        when that cannot be, the subdir is indexed fully. Returns what was quarantined."""
        previous = self.recorded_rows()
        rows = self.rows() if rows is None else rows
        # Files the last successful index did not see as they are now; all of them when
        # that is unknown (first run, or a host upgraded from a version without them).
        changed = sorted(n for n, row in rows.items() if previous is None or previous.get(n) != row)
        try:
            quarantined = self.files.screen(self.subdir, changed)
            editing = previous is not None and self.backend.edits_in_place
            if editing and not force and not self.interrupted():
                edited = self._edit_from(previous, self.rows() if quarantined else rows)
                if edited is not None:
                    return quarantined + edited
            try:
                self.rebuild(force=force)
            except IndexFailed:
                # Something the screening of changed files could not see (a file swapped
                # in place by hand, keeping every stat): screen the rest, and retry once
                # if that found it.
                late = self.files.screen(self.subdir, sorted(set(rows) - set(changed)))
                if not late:
                    raise
                quarantined += late
                self.rebuild(force=True)
        except NotAFolder as exc:
            raise IndexFailed(str(exc)) from None
        return quarantined

    def _edit_from(self, previous: Rows, rows: Rows) -> list[dict[str, str]] | None:
        """Edit in the records of the files that changed from `previous` to `rows` (and
        record `rows` as indexed: the changes and the record come from one look at the
        files, each look costing a stat per file); None when there is no repodata to
        edit. A file whose record cannot be built goes to quarantine."""
        if not self.editable():
            return None
        rows = dict(rows)
        changes: dict[str, dict | None] = {name: None for name in previous if name not in rows}
        quarantined = []
        for name in sorted(n for n, row in rows.items() if previous.get(n) != row):
            try:
                changes[name] = record_from_file(self.folder / name)
            except (Rejected, ValueError, OSError) as exc:
                quarantined.append(self.files.quarantine(self.subdir, name, str(exc)))
                changes[name] = None  # an older file of that name was indexed: no longer
                del rows[name]
        try:
            self.apply(changes, rows)
        except repodata.RepodataUnusable:
            return None
        except OSError as exc:  # a full disk: the last good index stays, the subdir stale
            reason = exc.strerror or str(exc)
            raise IndexFailed(f"index of {self.channel}/{self.subdir} failed: {reason}") from None
        return quarantined


class Indexes:
    """The subdir owners of a long-running service, kept so each keeps its records in
    memory between requests."""

    def __init__(self, state_dir: Path, backend: Backend, *, in_child: bool = True) -> None:
        self.state_dir = state_dir
        self.backend = backend
        self.in_child = in_child
        self._owners: dict[tuple[Path, str], SubdirIndex] = {}

    def of(self, channel_dir: Path, subdir: str) -> SubdirIndex:
        key = (channel_dir, subdir)
        owner = self._owners.get(key)
        if owner is None:
            owner = SubdirIndex(
                ChannelFiles(channel_dir),
                subdir,
                self.state_dir,
                self.backend,
                in_child=self.in_child,
            )
            self._owners[key] = owner
        return owner


def forget(state_dir: Path, channel: str) -> bool:
    """Drop a removed channel's index state, so a channel of that name starts afresh."""
    if not CHANNEL_NAME.match(channel):
        raise IndexFailed(f"{channel!r} is not a channel name")
    folder = state_folder(state_dir, channel)
    if not folder.is_dir():
        return False
    shutil.rmtree(folder)
    return True
