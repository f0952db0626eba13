"""condaport-upload: publish packages over HTTPS, with the requests CI tools already send.

NGINX, in front, turns these into requests on this service's unix socket:

    PUT    /<channel>/<subdir>/<file>          rattler-build/pixi `upload artifactory`, curl -T
    DELETE /<channel>/<subdir>/<file>          remove a package (overwrite right)
    POST   /api/channels/<channel>/upload/<file>?force=&sha256=   rattler-build `upload quetz`

and the channel management API (condaport.manage), JSON in and out:

    POST   /api/channels/<channel>/packages/<subdir>/<file>/patch    {"depends": [...], ...}
    DELETE /api/channels/<channel>/packages/<subdir>/<file>/patch    take the patch back
    POST   /api/channels/<channel>/packages/<subdir>/<file>/broken   {"reason": "..."}
    DELETE /api/channels/<channel>/packages/<subdir>/<file>/broken   unmark
    POST   /api/downloads/edges/<instance>   {"instance": ..., "counts": {...}}  an edge's
                                             download counts (condaport.downloads)
    POST   /api/channels/<target>/promote   {"from": "<channel>", "file": "<subdir>/<file>",
                                             "move": false, "force": false}

Patches and broken marks need the maintainer (overwrite) right on the channel; a promotion
the read right on the source and the upload right on the target (move: also the delete
right on the source; force: the overwrite right on the target).

NGINX has authenticated the client (password or upload token) and passes only who it is,
in X-Condaport-Uploader (`user:<name>` / `token:<name>`), never the secret; a header of
that name sent by the client never gets through. NGINX also reads the whole body first
(chunked or not) and forwards it with a Content-Length: this service frames no body itself
and refuses one without that length. It authorizes against the settings file
(condaport.rights), streams the body into staging with a size cap, and hands it to
condaport.intake, which validates, places and indexes it under the channel lock. It
answers only when a client can install the package:

    201 added   200 identical file already there (or replaced, with force and the right)
    400 the file's subdir is not the URL's, or a bad request   401 no identity
    403 no upload right here   404 unknown channel or file   409 same name, other bytes
    411 no length   413 too large   422 not a valid package (the reason says why)
    503 the channel stayed locked (Retry-After)

Every answer is a small JSON object. Logs name the identity, never a secret: a read token
in the URL (conda's /t/<token>/ form, a channel URL pasted as the upload URL) is refused
and logged as /t/<redacted>/, as NGINX's access log shows it.
"""

from __future__ import annotations

import argparse
import errno
import functools
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import socket
import stat
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import parse_qs, quote, unquote, urlsplit

from condaport.adjustments import BadAdjustment, check_file
from condaport.browse import write_channel_page
from condaport.config import (
    CHANNEL_NAME,
    DEFAULT_PATH,
    ChannelConfig,
    ConfigError,
    HostConfig,
    config_path,
)
from condaport.config import load as load_config
from condaport.counters import Counters
from condaport.downloads import DEFAULT_FOLDER, EDGE_REPORTS, INSTANCE_SHAPE, merge_report
from condaport.index_backends import backend_named
from condaport.intake import ChannelGuard, Conflict, Missing, Result, WrongSubdir, accept, remove
from condaport.locking import LockTimeout
from condaport.manage import promote, set_broken, set_patch
from condaport.packages import Rejected, split_name
from condaport.rights import DEFAULT_PATH as DEFAULT_SETTINGS
from condaport.rights import IDENTITY, Grant, Settings, SettingsError, SettingsFile
from condaport.service import listener_from_args
from condaport.subdir_index import Indexes

LOG = logging.getLogger("condaport-upload")
IDENTITY_HEADER = "X-Condaport-Uploader"
STAGING_FOLDER = ".uploads"
CHUNK = 1 << 20
# A refused request's body is read and dropped up to this much, so NGINX can deliver the
# answer; past it the connection is simply closed.
DRAIN_LIMIT = 64 << 20
MANAGE_BODY_LIMIT = 64 << 10
# An edge's report names every file it served: about 100 bytes a file.
DOWNLOAD_REPORT_LIMIT = 32 << 20
SUBDIR_SHAPE = re.compile(r"^[a-z0-9_]+(-[a-z0-9_]+)?$")
TRUE_WORDS = {"1", "true", "yes", "on"}
CONTENT_LENGTH = re.compile(r"^[0-9]{1,19}$")
# conda's token form: a `t` segment (either case, as NGINX's access log masks it) and the
# token after it, wherever it appears once decoded (NGINX refuses these before the service
# sees them; this is the service's own guard).
TOKEN_SEGMENT = re.compile(r"(?i)(^|/)t/+[^/]*")
REDACTED = "<redacted>"
# Characters a logged path keeps as they are; everything else (control characters, spaces,
# non-ASCII) stays percent-encoded, so a path cannot forge or split a log line.
LOGGED_AS_IS = "/<>@:+,;=!$&'()*~"


# Metric labels: outcomes as condaport-metrics names them (a closed set, whatever a
# request carries).
KNOWN_RESULTS = frozenset(
    {"added", "replaced", "unchanged", "deleted", "patched", "unpatched", "broken", "unbroken"}
)
REFUSAL_REASONS = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "missing",
    405: "wrong_method",
    409: "conflict",
    411: "no_length",
    413: "too_large",
    422: "invalid_package",
    500: "internal_error",
    503: "busy",
    507: "disk_full",
}


class Answer(Exception):
    """An HTTP answer decided before the end of the handler (status and a message)."""

    def __init__(self, status: int, message: str, **extra: object) -> None:
        super().__init__(message)
        self.status = status
        self.extra = extra


@dataclass(frozen=True)
class Target:
    api: str  # artifactory or quetz
    channel: str
    subdir: str | None  # from the URL (artifactory only)
    filename: str
    force: bool
    sha256: str | None  # quetz sends the sha256 it expects


def loggable_path(path: str) -> str:
    """The request path as the journal may show it: without the query, decoded once (as
    the service reads it) so that no encoding hides a token, the segment after a `t`
    segment replaced, and re-encoded."""
    api, _, rest = urlsplit(path).path.lstrip("/").partition("/")
    masked = TOKEN_SEGMENT.sub(rf"\1t/{REDACTED}", unquote(rest))
    return f"/{api}/{quote(masked, safe=LOGGED_AS_IS)}"


@dataclass(frozen=True)
class Managed:
    """A channel management request: a patch or broken mark of one package, or a promotion."""

    channel: str
    action: str  # patch, broken, promote
    where: str  # <subdir>/<file>; "" for promote (named in the body)


MANAGED_ACTIONS = ("patch", "broken")


def parse_managed(path: str) -> Managed | None:
    """/<api>/api/channels/<channel>/packages/<subdir>/<file>/(patch|broken), or
    /<api>/api/channels/<channel>/promote; None for any other path."""
    _, _, rest = urlsplit(path).path.lstrip("/").partition("/")
    segments = [unquote(s) for s in rest.split("/")]
    if segments[:2] != ["api", "channels"] or len(segments) < 4:
        return None
    if TOKEN_SEGMENT.search(unquote(rest)):
        return None  # parse_target refuses it with its reason
    if len(segments) == 4 and segments[3] == "promote":
        return Managed(segments[2], "promote", "")
    if len(segments) == 7 and segments[3] == "packages" and segments[6] in MANAGED_ACTIONS:
        return Managed(segments[2], segments[6], f"{segments[4]}/{segments[5]}")
    return None


def parse_edge_report(path: str) -> str | None:
    """/<api>/api/downloads/edges/<instance>: the edge instance id; None for other paths."""
    _, _, rest = urlsplit(path).path.lstrip("/").partition("/")
    segments = rest.split("/")
    if len(segments) == 4 and segments[:3] == ["api", "downloads", "edges"]:
        return segments[3]
    return None


def parse_target(path: str) -> Target:
    """The request line's target, as NGINX forwards it: /<api><the client's request URI>."""
    parts = urlsplit(path)
    query = parse_qs(parts.query)
    force = query.get("force", [""])[-1].lower() in TRUE_WORDS
    api, _, rest = parts.path.lstrip("/").partition("/")
    if TOKEN_SEGMENT.search(unquote(rest)):
        # Refused before any part of it is echoed into an answer (and so into the log).
        raise Answer(
            404,
            "an upload URL has no /t/<token>/ part (a read token is no upload credential):"
            " PUT /<channel>/<subdir>/<file> with a password or an upload token",
        )
    segments = [unquote(s) for s in rest.split("/")]
    if api == "artifactory" and len(segments) == 3:
        channel, subdir, filename = segments
        if not SUBDIR_SHAPE.match(subdir):
            raise Answer(400, f"{subdir!r} is not a subdir name")
        return Target(api, channel, subdir, filename, force, None)
    if api == "quetz" and len(segments) == 5 and segments[:2] == ["api", "channels"]:
        if segments[3] == "upload":
            sha256 = query.get("sha256", [""])[-1].lower() or None
            return Target(api, segments[2], None, segments[4], force, sha256)
    raise Answer(
        404,
        "not an upload URL: PUT /<channel>/<subdir>/<file> or "
        "POST /api/channels/<channel>/upload/<file>",
    )


class PageRefresher(threading.Thread):
    """Rewrites the browse pages of channels that changed, at most every `interval` seconds
    and off the request path: the page is for people, the repodata for installs. A page
    that took long to render (seconds at 100,000 packages) waits `PACING` times as long
    before the next, so rendering never takes more than a small share of the service."""

    PACING = 5.0

    def __init__(self, service: UploadService, interval: float = 2.0) -> None:
        super().__init__(daemon=True, name="browse-pages")
        self.service, self.interval = service, interval
        self.pause = interval
        self._dirty: set[str] = set()
        self._wake = threading.Event()
        self._lock = threading.Lock()

    def request(self, channel: str) -> None:
        with self._lock:
            self._dirty.add(channel)
        self._wake.set()

    def run(self) -> None:
        while True:
            self._wake.wait()
            time.sleep(self.pause)
            with self._lock:
                todo, self._dirty = self._dirty, set()
                self._wake.clear()
            started = time.monotonic()
            for channel in sorted(todo):
                self._refresh(channel)
            self.pause = max(self.interval, self.PACING * (time.monotonic() - started))

    def _refresh(self, channel: str) -> None:
        """Without the channel lock: the page is rendered from repodata files that are
        only ever replaced whole, and written by rename; a change landing meanwhile asks
        for another refresh. Uploads never wait for a page."""
        host = self.service.host()
        try:
            channel_url = (
                f"{self.service.public_url}/{channel}/" if self.service.public_url else None
            )
            write_channel_page(host.channels_root / channel, channel, channel_url)
        except OSError as exc:
            LOG.warning("browse page of %s not rewritten: %s", channel, exc)


class UploadService:
    """What every request needs: host configuration, settings, locks, limits."""

    def __init__(
        self,
        config: Path | None,
        settings: Path,
        workers: int,
        edge_reporter: str = "",
        public_url: str = "",
        edge_reports: Path = DEFAULT_FOLDER / EDGE_REPORTS,
    ) -> None:
        self.edge_reports = edge_reports
        # Where people reach the channels (the browse page's snippets): https://NAME[:PORT].
        self.public_url = public_url.rstrip("/")
        # The one identity (the edges' login at this primary) whose download reports count.
        self.edge_reporter = f"user:{edge_reporter}" if edge_reporter else ""
        self._config_path = config_path(config)
        self._host: HostConfig = load_config(self._config_path)
        self._host_signature = self._signature(self._config_path)
        self.settings = SettingsFile(settings)
        self.guard = ChannelGuard()
        self._indexes: Indexes | None = None
        # Validation unpacks whole packages: at most this many at once.
        self.validating = threading.BoundedSemaphore(workers)
        self.pages = PageRefresher(self)
        self.counters = Counters(self._host.state_dir, "upload")

    @staticmethod
    def _signature(path: Path) -> tuple[int, int, int] | None:
        try:
            info = path.stat()
        except OSError:
            return None
        return (info.st_ino, info.st_size, info.st_mtime_ns)

    def host(self) -> HostConfig:
        """The host configuration, re-read when a converge changed it (channels, subdirs)."""
        signature = self._signature(self._config_path)
        if signature != self._host_signature:
            try:
                self._host = load_config(self._config_path)
                self._host_signature = signature
            except ConfigError as exc:
                LOG.error("keeping the previous host configuration: %s", exc)
        return self._host

    def indexes(self) -> Indexes:
        """The subdirs' index owners, each keeping its records between requests; made
        anew when the host configuration names another state folder or backend."""
        host = self.host()
        current = self._indexes
        if (
            current is None
            or current.state_dir != host.state_dir
            or current.backend.name != host.index_backend
            or current.backend.conda_python != host.conda_python
        ):
            backend = backend_named(host.index_backend, host.conda_python)
            current = self._indexes = Indexes(host.state_dir, backend, in_child=True)
        return current

    def staging_root(self) -> Path:
        host = self.host()
        root = host.staging_root or host.channels_root.parent / "staging"
        return root / STAGING_FOLDER

    def sweep_staging(self) -> None:
        """At start no upload is under way: whatever a killed process left is garbage."""
        root = self.staging_root()
        root.mkdir(mode=0o700, exist_ok=True)
        info = root.lstat()
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
            raise ConfigError(f"{root} is not this service's own folder (a link?): remove it")
        for leftover in root.iterdir():
            shutil.rmtree(leftover, ignore_errors=True)
            LOG.info("removed abandoned staging folder %s", leftover.name)


class UploadServer(ThreadingHTTPServer):
    daemon_threads = True
    address_family = socket.AF_UNIX

    def __init__(self, listener: socket.socket, service: UploadService) -> None:
        super().__init__("", UploadHandler, bind_and_activate=False)
        self.socket.close()
        self.socket = listener
        self.service = service


class BodyReader:
    """The request body, as NGINX forwards it: read whole before, sent with its length.

    No framing is decoded here: a request without a single, plain Content-Length, or with
    any Transfer-Encoding, is refused (411). http.server is no HTTP implementation to trust
    with a client's framing, and NGINX in front never needs one."""

    def __init__(self, handler: BaseHTTPRequestHandler) -> None:
        self.stream = handler.rfile
        self.length: int | None = None
        lengths = handler.headers.get_all("Content-Length") or []
        if handler.headers.get("Transfer-Encoding") is not None:
            raise Answer(411, "the upload needs a Content-Length body (no Transfer-Encoding)")
        if len(lengths) != 1 or not CONTENT_LENGTH.match(lengths[0].strip()):
            raise Answer(411, "the upload needs a Content-Length")
        self.length = int(lengths[0])
        self._pieces: Iterator[bytes] | None = None

    def chunks(self) -> Iterator[bytes]:
        """The body's pieces; one iterator per request, so a drain picks up where the
        upload stopped reading."""
        if self._pieces is None:
            self._pieces = self._sized()
        return self._pieces

    def _sized(self) -> Iterator[bytes]:
        left = self.length or 0
        while left > 0:
            data = self.stream.read(min(CHUNK, left))
            if not data:
                raise Answer(400, "the body ended before its Content-Length")
            left -= len(data)
            yield data

    def drain(self, limit: int = DRAIN_LIMIT) -> bool:
        """Read and drop the rest of the body; False when it was longer than `limit`."""
        if self.length is not None and self.length > limit:
            return False
        try:
            for _ in self.chunks():
                pass
        except (Answer, OSError):
            return False
        return True


def rejected_status(exc: Rejected) -> int:
    """The HTTP status of a refused package: 422, unless the refusal names its own
    (`http_status`, e.g. 413 for a package that unpacks past a size limit)."""
    status = getattr(exc, "http_status", 422)
    if isinstance(status, int) and not isinstance(status, bool) and 400 <= status < 500:
        return status
    return 422


HOST_FAULTS = (
    OSError,
    MemoryError,
    ImportError,
    NameError,
    AssertionError,
    KeyboardInterrupt,
    SystemExit,
    GeneratorExit,
)


class ValidationSlot:
    """One of the service's validation slots, held while intake validates a package and
    builds its repodata record (the block intake.accept runs under `validating`).

    Whatever else that block raises, short of the host's own faults (HOST_FAULTS), comes
    from reading the package (py-rattler's parsers, the JSON of its info files): the
    package is at fault, so it becomes Rejected (422 with the reason), not a 500."""

    def __init__(self, slots: threading.BoundedSemaphore) -> None:
        self.slots = slots

    def __enter__(self) -> None:
        self.slots.acquire()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.slots.release()
        # The disk, memory, a missing module or our own slip stay the host's errors.
        if exc is None or isinstance(exc, (Rejected, *HOST_FAULTS)):
            return
        # rattler's panics surface as BaseException: a package that makes it panic is bad too.
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        LOG.warning("package unreadable while validating (%s): %s", type(exc).__name__, reason)
        raise Rejected(f"the package's metadata cannot be read: {reason}") from exc


class UploadHandler(BaseHTTPRequestHandler):
    server: UploadServer
    protocol_version = "HTTP/1.1"
    # Seconds a read or write on the connection may stall (NGINX streams the body).
    timeout = 300

    def do_PUT(self) -> None:  # noqa: N802 - http.server's naming
        self._dispatch()

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch()

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch()

    def do_GET(self) -> None:  # noqa: N802
        self._send(
            405, {"error": "uploads are PUT, POST or DELETE"}, {"Allow": "PUT, POST, DELETE"}
        )

    def _dispatch(self) -> None:
        started = time.monotonic()
        self.identity = self.headers.get(IDENTITY_HEADER, "")
        self.body: BodyReader | None = None
        self.body_consumed = False
        self.described = loggable_path(self.path)
        try:
            status, answer = self._handle()
        except Answer as refusal:
            status, answer = refusal.status, {"error": str(refusal), **refusal.extra}
        except OSError as exc:  # the disk: full (507), or a permission a converge should fix
            LOG.error("upload %s failed: %s", self.described, exc)
            status = 507 if exc.errno == errno.ENOSPC else 500
            reason = exc.strerror or type(exc).__name__
            answer = {"error": f"the host could not store the package ({reason})"}
        except Exception:  # a bug must not take the service down, nor leak a stack to clients
            LOG.exception("upload %s failed", self.described)
            status, answer = 500, {"error": "internal error; see the service's log"}
        if status >= 400 and self.body is not None and not self.body_consumed:
            if not self.body.drain():
                self.close_connection = True
        elif self.body is None and (self.command != "DELETE" or self._has_body()):
            # An upload refused for its framing, or a DELETE's body: what follows on the
            # connection is no next request.
            self.close_connection = True
        headers = {"Retry-After": "5"} if status == 503 else {}
        if status == 401:
            headers["WWW-Authenticate"] = 'Basic realm="condaport upload"'
        answer.setdefault("status", status)
        # Counted before the answer leaves: whoever saw it can read the count.
        self._count(status, answer)
        try:
            self._send(status, answer, headers)
        except OSError as exc:  # the client (NGINX) went away; nothing left to tell it
            LOG.info("answer %d to %s not delivered: %s", status, self.described, exc)
            self.close_connection = True
        LOG.info(
            "%s %s %s by %s: %d %s (%.3f s)",
            self.command,
            answer.get("channel", "-"),
            answer.get("file", self.described),
            self.identity or "nobody",
            status,
            answer.get("result", answer.get("error", "")),
            time.monotonic() - started,
        )

    def _count(self, status: int, answer: dict) -> None:
        """For condaport-metrics: each request by its outcome, each refusal by its kind
        (the status: the free-text reasons hold client input and are not a label set)."""
        counters = self.server.service.counters
        if status < 400:
            result = str(answer.get("result", "ok"))
            result = result if result in KNOWN_RESULTS else "ok"
        else:
            result = "failed" if status >= 500 and status != 503 else "refused"
            reason = REFUSAL_REASONS.get(status, "other")
            counters.count("condaport_refusals_total", reason=reason)
        counters.count("condaport_uploads_total", method=self.command, result=result)

    def _has_body(self) -> bool:
        return "Transfer-Encoding" in self.headers or (
            self.headers.get("Content-Length", "0").strip() not in ("", "0")
        )

    def _handle(self) -> tuple[int, dict]:
        service = self.server.service
        if self.command != "DELETE":
            self.body = BodyReader(self)
        if not IDENTITY.match(self.identity):
            raise Answer(401, "no authenticated uploader (NGINX passes who it is)")
        instance = parse_edge_report(self.path)
        if instance is not None:
            return self._edge_report(instance)
        managed = parse_managed(self.path)
        if managed is not None:
            return self._manage(managed)
        target = parse_target(self.path)
        if (self.command == "POST") != (target.api == "quetz"):
            raise Answer(405, f"{self.command} is not how this API uploads")
        host = service.host()
        channel = self._local_channel(host, target.channel)
        settings = service.settings.current()
        grant = settings.grant(self.identity, channel.name)
        if grant is None:
            raise Answer(403, f"{self.identity} may not upload to channel {channel.name!r}")
        try:
            split_name(target.filename)
        except Rejected as exc:
            raise Answer(rejected_status(exc), str(exc), file=target.filename) from None
        described = {"channel": channel.name, "file": target.filename}
        if self.command == "DELETE":
            if not grant.overwrite:
                raise Answer(403, f"{self.identity} may not delete in channel {channel.name!r}")
            try:
                result = remove(
                    host,
                    channel,
                    target.subdir or "",
                    target.filename,
                    guard=service.guard,
                    lock_timeout=settings.lock_timeout,
                    indexes=service.indexes(),
                )
            except Missing as exc:
                raise Answer(404, str(exc), **described) from None
            except LockTimeout as exc:
                raise Answer(503, str(exc), **described) from None
            return 200, self._described(channel.name, result)
        assert self.body is not None
        if self.body.length is not None and self.body.length > settings.max_size:
            raise Answer(413, f"larger than the limit of {settings.max_size} bytes", **described)
        staged_dir = service.staging_root() / secrets.token_hex(8)
        staged_dir.mkdir(parents=True, mode=0o700)
        try:
            staged = staged_dir / target.filename
            md5, sha256 = self._receive(staged, settings.max_size)
            if target.sha256 and target.sha256 != sha256:
                raise Answer(400, "the body's sha256 is not the one the request named", **described)
            try:
                result = accept(
                    host,
                    channel,
                    staged,
                    md5=md5,
                    url_subdir=target.subdir,
                    overwrite=target.force and grant.overwrite,
                    guard=service.guard,
                    lock_timeout=settings.lock_timeout,
                    indexes=service.indexes(),
                    validating=ValidationSlot(service.validating),
                    uploader_without_delete_right=None if grant.overwrite else self.identity,
                )
            except Rejected as exc:
                raise Answer(rejected_status(exc), str(exc), **described) from None
            except WrongSubdir as exc:
                raise Answer(400, str(exc), **described) from None
            except Conflict as exc:
                hint = "" if grant.overwrite else " (and this uploader may not overwrite)"
                raise Answer(409, f"{exc}{hint}", **described) from None
            except LockTimeout as exc:
                raise Answer(503, str(exc), **described) from None
        finally:
            shutil.rmtree(staged_dir, ignore_errors=True)
        if result.status != "unchanged":
            service.pages.request(channel.name)
        return (201 if result.status == "added" else 200), self._described(channel.name, result)

    def _json_body(self, limit: int = MANAGE_BODY_LIMIT) -> dict:
        """A management request's small JSON object body ({} when empty)."""
        assert self.body is not None
        if self.body.length is not None and self.body.length > limit:
            raise Answer(413, f"this request's body is at most {limit} bytes")
        raw = b"".join(self.body.chunks())
        self.body_consumed = True
        if not raw.strip():
            return {}
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise Answer(400, f"the body is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise Answer(400, "the body is not a JSON object")
        return data

    def _manage(self, managed: Managed) -> tuple[int, dict]:
        """Patches and broken marks (the maintainer right on the channel), promotions (the
        read right on the source, the upload right on the target)."""
        service = self.server.service
        host = service.host()
        channel = self._local_channel(host, managed.channel)
        settings = service.settings.current()
        grant = settings.grant(self.identity, channel.name)
        if grant is None:
            raise Answer(403, f"{self.identity} may not upload to channel {channel.name!r}")
        body = self._json_body() if self.command == "POST" else {}
        indexes = service.indexes()
        hold = functools.partial(service.guard.hold, host.state_dir, timeout=settings.lock_timeout)
        try:
            if managed.action == "promote":
                return self._promote(host, channel, grant, body, settings)
            if not grant.overwrite:
                raise Answer(
                    403,
                    f"{self.identity} may not patch or mark packages in channel"
                    f" {channel.name!r} (a maintainer's right)",
                )
            if managed.action == "patch":
                patch = body if self.command == "POST" else None
                change = set_patch(
                    host, channel.name, managed.where, patch,
                    who=self.identity, hold=hold, indexes=indexes,
                )  # fmt: skip
            else:
                reason = body.get("reason", "")
                if not isinstance(reason, str):
                    raise Answer(400, "reason must be a string")
                change = set_broken(
                    host, channel.name, managed.where, self.command == "POST", reason=reason,
                    who=self.identity, hold=hold, indexes=indexes,
                )  # fmt: skip
        except BadAdjustment as exc:
            raise Answer(400, str(exc), channel=channel.name) from None
        except Missing as exc:
            raise Answer(404, str(exc), channel=channel.name) from None
        except LockTimeout as exc:
            raise Answer(503, str(exc), channel=channel.name) from None
        if change.result != "unchanged":
            service.pages.request(channel.name)
        return 200, change.as_dict()

    def _edge_report(self, instance: str) -> tuple[int, dict]:
        """An edge's cumulative download counts, kept per edge instance at the highest
        count seen per file: a retried push changes nothing (condaport.downloads)."""
        service = self.server.service
        if self.command != "POST":
            raise Answer(405, "a download report is a POST")
        if not service.edge_reporter or self.identity != service.edge_reporter:
            raise Answer(403, f"{self.identity} does not report downloads here")
        if not INSTANCE_SHAPE.match(instance):
            raise Answer(400, "an edge instance id is 32 hex digits")
        body = self._json_body(limit=DOWNLOAD_REPORT_LIMIT)
        if body.get("instance") != instance:
            raise Answer(400, "the body's instance is not the URL's")
        raised = merge_report(service.edge_reports, instance, body.get("counts"))
        return 200, {"result": "kept", "raised": raised}

    def _local_channel(self, host: HostConfig, name: str) -> ChannelConfig:
        channel = host.channel(name) if CHANNEL_NAME.match(name) else None
        if channel is None or not (host.channels_root / name).is_dir():
            raise Answer(404, f"no channel {name!r} on this host")
        return channel

    def _promote(
        self,
        host: HostConfig,
        target: ChannelConfig,
        target_grant: Grant,
        body: dict,
        settings: Settings,
    ) -> tuple[int, dict]:
        if self.command != "POST":
            raise Answer(405, "a promotion is a POST")
        source_name, where = body.get("from"), body.get("file")
        if not isinstance(source_name, str) or not isinstance(where, str):
            raise Answer(400, 'a promotion names {"from": "<channel>", "file": "<subdir>/<file>"}')
        # Checked before it is echoed in an answer (and so in the journal's line).
        check_file(where)
        move, force = body.get("move", False), body.get("force", False)
        if not isinstance(move, bool) or not isinstance(force, bool):
            raise Answer(400, "move and force are true or false")
        source = self._local_channel(host, source_name)
        if not settings.may_read(self.identity, source.name):
            raise Answer(403, f"{self.identity} may not read channel {source.name!r}")
        source_grant = settings.grant(self.identity, source.name)
        if move and not (source_grant and source_grant.overwrite):
            raise Answer(403, f"{self.identity} may not delete in channel {source.name!r}")
        service = self.server.service
        described = {"channel": target.name, "from": source.name, "file": where}
        try:
            result = promote(
                host, source, target, where,
                staging=service.staging_root(),
                move=move,
                overwrite=force and target_grant.overwrite,
                guard=service.guard,
                lock_timeout=settings.lock_timeout,
                indexes=service.indexes(),
                uploader_without_delete_right=None if target_grant.overwrite else self.identity,
            )  # fmt: skip
        except Rejected as exc:
            raise Answer(rejected_status(exc), str(exc), **described) from None
        except (WrongSubdir, BadAdjustment) as exc:
            raise Answer(400, str(exc), **described) from None
        except Conflict as exc:
            raise Answer(409, str(exc), **described) from None
        except Missing as exc:
            raise Answer(404, str(exc), **described) from None
        if result.status != "unchanged":
            service.pages.request(target.name)
            if move:
                service.pages.request(source.name)
        answer = {**self._described(target.name, result), "from": source.name, "moved": move}
        return (201 if result.status == "added" else 200), answer

    @staticmethod
    def _described(channel: str, result: Result) -> dict:
        answer = {
            "result": result.status,
            "channel": channel,
            "subdir": result.subdir,
            "file": result.filename,
        }
        if result.sha256:
            answer.update(sha256=result.sha256, size=result.size)
        if result.indexed:
            answer["indexed"] = result.indexed
        return answer

    def _receive(self, staged: Path, max_size: int) -> tuple[str, str]:
        """Stream the body to `staged`, never more than `max_size` bytes; (md5, sha256)."""
        assert self.body is not None
        md5, sha256, total = hashlib.md5(usedforsecurity=False), hashlib.sha256(), 0
        with staged.open("xb") as handle:
            for data in self.body.chunks():
                total += len(data)
                if total > max_size:
                    raise Answer(413, f"larger than the limit of {max_size} bytes")
                md5.update(data)
                sha256.update(data)
                handle.write(data)
        self.body_consumed = True
        return md5.hexdigest(), sha256.hexdigest()

    def _send(self, status: int, answer: dict, headers: dict[str, str]) -> None:
        content = (json.dumps(answer) + "\n").encode()
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(content)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(content)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """Request lines are logged by _dispatch, with the outcome."""

    def address_string(self) -> str:
        return "nginx"


def build_server(
    listener: socket.socket,
    config: Path | None,
    settings: Path,
    workers: int,
    edge_reporter: str = "",
    public_url: str = "",
    edge_reports: Path = DEFAULT_FOLDER / EDGE_REPORTS,
) -> UploadServer:
    service = UploadService(config, settings, workers, edge_reporter, public_url, edge_reports)
    service.sweep_staging()
    service.pages.start()
    return UploadServer(listener, service)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="condaport-upload", description=__doc__)
    parser.add_argument("--config", type=Path, help=f"host configuration (default {DEFAULT_PATH})")
    parser.add_argument(
        "--settings", type=Path, default=DEFAULT_SETTINGS, help="upload rights and limits"
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--systemd-socket", action="store_true", help="listen on fd 3 from systemd")
    where.add_argument("--socket", help="bind this unix socket path (tests)")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 2, help="packages validated at once"
    )
    parser.add_argument(
        "--edge-reporter", default="", help="the edges' login, whose download reports count"
    )
    parser.add_argument(
        "--public-url", default="", help="https://NAME[:PORT] people reach the channels at"
    )
    parser.add_argument(
        "--edge-reports",
        type=Path,
        default=DEFAULT_FOLDER / EDGE_REPORTS,
        help="where the edges' download reports are kept",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    try:
        server = build_server(
            listener_from_args(args),
            args.config,
            args.settings,
            args.workers,
            args.edge_reporter,
            args.public_url,
            args.edge_reports,
        )
    except (ConfigError, SettingsError) as exc:
        parser.error(str(exc))
    LOG.info("accepting uploads with %d validation workers", args.workers)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


def run_cli() -> None:
    from condaport.cli import exit_now

    exit_now(main())


if __name__ == "__main__":
    run_cli()
