"""condaport-verifier: allow/deny answers for NGINX's access check, from the htpasswd files.

NGINX asks `GET /check/<channel>` with the client's Authorization header. The answer is
200 (allow) or 401 with a Basic challenge (deny). NGINX keeps the 200s briefly, so the
slow, strong hash (bcrypt) is computed once per client session instead of once per request.
When more checks arrive than the workers hash and the queue holds, the excess gets 503 at
once (NGINX fails closed and tells the client to retry); a check whose NGINX connection is
gone by the time a worker is free is dropped without hashing.

The htpasswd files are the ones the condaport_nginx role renders (`<channel>.htpasswd`),
re-read whenever one changes on disk. Passwords are never logged; denials are, with the
channel, the client address and the user name when the channel knows it. A name the
channel does not know is logged as UNKNOWN_USER: people type passwords into the name field.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import functools
import logging
import os
import secrets
import select
import socket
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from passlib.context import CryptContext

from condaport.config import CHANNEL_NAME, DEFAULT_PATH, ConfigError, load
from condaport.service import listener_from_args

LOG = logging.getLogger("condaport-verifier")
# The schemes condaport_nginx may write; anything else in a file never verifies.
HASHES = CryptContext(schemes=["bcrypt", "sha512_crypt", "sha256_crypt", "apr_md5_crypt"])
# The decoys' password: random per process, and a decoy match never allows anyway.
_DECOY_PASSWORD = secrets.token_urlsafe(32)
DEFAULT_QUEUE = 32
# Reading the request of a check that is shed (NGINX sends it whole right after connecting).
SHED_READ_SECONDS = 0.5
SHED_RESPONSE = b"HTTP/1.0 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n"
# Overload is logged as a summary at most this often, not once per request of a flood.
OVERLOAD_LOG_SECONDS = 10.0


@dataclass(frozen=True)
class ChannelAuth:
    """One channel's htpasswd file as the checks use it.

    users: name -> hash, or None for an entry whose hash is empty or malformed (it never
    verifies). decoy: a hash of the scheme and rounds the file's users have, verified
    instead for unknown users and unusable entries, so that a miss costs what a hit costs
    and timing does not tell which users exist; None when the file has no usable hash
    (nobody can log in, there is nothing to tell apart).
    """

    users: dict[str, str | None] = field(default_factory=dict)
    decoy: str | None = None


# The uploaders' file (condaport_upload_auth_name): '@' never occurs in a channel name, so
# it cannot be mistaken for, or shadow, a channel's own file.
UPLOAD_AUTH_NAME = "@upload"


@dataclass(frozen=True)
class _Loaded:
    signature: tuple[int, int, int]
    auth: ChannelAuth


def hash_cost(hashed: str) -> tuple[str, int | None] | None:
    """(scheme, rounds) of a hash this verifier can check; None for anything else."""
    try:
        scheme = HASHES.identify(hashed)
        if scheme is None:
            return None
        parsed = HASHES.handler(scheme).from_string(hashed)
    except (ValueError, TypeError):
        return None
    if not parsed.checksum:  # a bare salt ("config string"), e.g. "$6$salt"
        return None
    return scheme, getattr(parsed, "rounds", None)


@functools.lru_cache(maxsize=16)
def decoy_hash(scheme: str, rounds: int | None) -> str:
    handler = HASHES.handler(scheme)
    return (handler.using(rounds=rounds) if rounds is not None else handler).hash(_DECOY_PASSWORD)


def channel_auth(users: dict[str, str]) -> ChannelAuth:
    """The usable hashes of `users`, and a decoy as costly as the most common of them (a
    file the role writes has one scheme and rounds: it re-hashes every user on a change)."""
    costs = {name: hash_cost(hashed) for name, hashed in users.items()}
    usable = Counter(cost for cost in costs.values() if cost is not None)
    decoy = decoy_hash(*usable.most_common(1)[0][0]) if usable else None
    return ChannelAuth(
        {name: hashed if costs[name] else None for name, hashed in users.items()}, decoy
    )


class HtpasswdStore:
    """The per-channel htpasswd files of one directory, re-read when a file changes."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._loaded: dict[str, _Loaded] = {}
        self._lock = threading.Lock()

    def channel(self, channel: str) -> ChannelAuth:
        """`channel`'s users; nobody when the channel has no file (or a bad name)."""
        if not (CHANNEL_NAME.match(channel) or channel == UPLOAD_AUTH_NAME):
            return ChannelAuth()
        path = self.directory / f"{channel}.htpasswd"
        try:
            info = path.stat()
        except FileNotFoundError:
            self._loaded.pop(channel, None)
            return ChannelAuth()
        signature = (info.st_ino, info.st_size, info.st_mtime_ns)
        cached = self._loaded.get(channel)
        if cached is not None and cached.signature == signature:
            return cached.auth
        with self._lock:
            auth = channel_auth(parse_htpasswd(path.read_text()))
            self._loaded[channel] = _Loaded(signature, auth)
        unusable = sorted(name for name, hashed in auth.users.items() if hashed is None)
        LOG.info("loaded %d users for channel %s", len(auth.users), channel)
        if unusable:
            LOG.warning("channel %s: no usable hash for %s (never allowed)", channel, unusable)
        return auth


def parse_htpasswd(text: str) -> dict[str, str]:
    users = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#") or ":" not in line:
            continue
        name, hashed = line.split(":", 1)
        users[name] = hashed.strip()
    return users


def basic_credentials(authorization: str | None) -> tuple[str, str] | None:
    if not authorization:
        return None
    scheme, _, encoded = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, colon, password = decoded.partition(":")
    return (user, password) if colon and user else None


UNKNOWN_USER = "(not a user of this channel)"


def verify(store: HtpasswdStore, channel: str, authorization: str | None) -> tuple[bool, str]:
    """(allowed, who) for a request to `channel`: `who` is '' without credentials, the user
    name when the channel has that user, and UNKNOWN_USER otherwise (never the raw name,
    which may be a password typed into the wrong field)."""
    credentials = basic_credentials(authorization)
    if credentials is None:
        return False, ""
    user, password = credentials
    auth = store.channel(channel)
    hashed = auth.users.get(user)
    who = user if user in auth.users else UNKNOWN_USER
    target = hashed or auth.decoy
    if target is None:
        return False, who
    try:
        ok = HASHES.verify(password, target)
    except (ValueError, TypeError):  # e.g. a password bcrypt refuses
        ok = False
    # Only the user's own, usable hash can allow; a decoy match (unknown user, empty or
    # malformed entry) never does.
    return ok and hashed is not None, who


class VerifierServer(ThreadingHTTPServer):
    daemon_threads = True
    # Unix sockets only (the systemd unit forbids every other address family).
    address_family = socket.AF_UNIX

    def __init__(
        self,
        listener: socket.socket,
        store: HtpasswdStore,
        workers: int,
        queue: int = DEFAULT_QUEUE,
    ) -> None:
        super().__init__("", CheckHandler, bind_and_activate=False)
        self.socket.close()
        self.socket = listener
        self.store = store
        # At most this many hashes at once: a flood queues instead of starving the host.
        self.hashing = threading.BoundedSemaphore(workers)
        # At most this many checks hashing or waiting (one thread each); more are shed.
        self.capacity = workers + queue
        self.in_progress = 0
        self._admission = threading.Lock()
        self._overload = Counter[str]()
        self._overload_logged = 0.0
        self._overload_lock = threading.Lock()

    def process_request(self, request, client_address) -> None:  # noqa: ANN001 - socketserver's
        with self._admission:
            admitted = self.in_progress < self.capacity
            if admitted:
                self.in_progress += 1
        if not admitted:
            self.shed(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # the thread did not start: its place is free again
            self._leave()
            raise

    def process_request_thread(self, request, client_address) -> None:  # noqa: ANN001
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._leave()

    def _leave(self) -> None:
        with self._admission:
            self.in_progress -= 1

    def shed(self, request: socket.socket) -> None:
        """503 from the accepting thread, without starting one: the queue is full."""
        try:
            request.settimeout(SHED_READ_SECONDS)
            # Read the request first: closing a unix socket with unread data resets it.
            received = b""
            while b"\r\n\r\n" not in received and len(received) < 65536:
                chunk = request.recv(65536)
                if not chunk:
                    break
                received += chunk
            request.sendall(SHED_RESPONSE)
        except OSError:
            pass
        finally:
            self.shutdown_request(request)
        self.note_overload("shed (queue full)")

    def note_overload(self, what: str) -> None:
        with self._overload_lock:
            self._overload[what] += 1
            now = time.monotonic()
            if now - self._overload_logged < OVERLOAD_LOG_SECONDS:
                return
            summary = ", ".join(f"{count} {kind}" for kind, count in sorted(self._overload.items()))
            self._overload.clear()
            self._overload_logged = now
        LOG.warning("overloaded: checks %s", summary)


def peer_closed(connection: socket.socket) -> bool:
    """True when the other end has closed (or reset) the connection; never blocks."""
    poller = select.poll()
    poller.register(connection, select.POLLIN)
    if not poller.poll(0):
        return False
    try:
        # Readable: end of stream (b"") means closed; NGINX sends nothing after its request.
        return connection.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


class CheckHandler(BaseHTTPRequestHandler):
    server: VerifierServer
    protocol_version = "HTTP/1.1"
    # Socket reads and writes only (not the hash): a stalled peer cannot pin a thread.
    timeout = 10

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        prefix = "/check/"
        if not self.path.startswith(prefix):
            self._answer(404)
            return
        channel = self.path[len(prefix) :].split("?", 1)[0]
        with self.server.hashing:
            # NGINX gave up waiting (its timeout, or the client left): nobody would read
            # the answer, so the hash is not worth a worker's time.
            if peer_closed(self.connection):
                self.close_connection = True
                self.server.note_overload("dropped (NGINX gone)")
                return
            allowed, who = verify(self.server.store, channel, self.headers.get("Authorization"))
        if allowed:
            self._answer(200)
            return
        if who:
            client = self.headers.get("X-Condaport-Client", "?")
            LOG.warning("denied user=%r channel=%r client=%s", who, channel, client)
        self._answer(401, {"WWW-Authenticate": f'Basic realm="condaport {channel}"'})

    do_HEAD = do_GET  # noqa: N815

    def _answer(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """No access log: NGINX keeps one, and request lines are all this would add."""

    def address_string(self) -> str:
        return "nginx"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="condaport-verifier", description=__doc__)
    parser.add_argument("--config", type=Path, help=f"host configuration (default {DEFAULT_PATH})")
    parser.add_argument(
        "--auth-dir", type=Path, help="the <channel>.htpasswd files (default: the configuration's)"
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--systemd-socket", action="store_true", help="listen on fd 3 from systemd")
    where.add_argument("--socket", help="bind this unix socket path (tests, benchmarks)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="hashes at once")
    parser.add_argument(
        "--queue",
        type=int,
        default=DEFAULT_QUEUE,
        help=f"checks waiting beyond the workers before 503s (default {DEFAULT_QUEUE})",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    if args.auth_dir is None:
        try:
            args.auth_dir = load(args.config).auth_dir
        except ConfigError as exc:
            parser.error(str(exc))
        if args.auth_dir is None:
            parser.error("the host configuration names no auth_dir; pass --auth-dir")
    if args.workers < 1 or args.queue < 0:
        parser.error("--workers must be at least 1 and --queue at least 0")
    store = HtpasswdStore(args.auth_dir)
    server = VerifierServer(listener_from_args(args), store, args.workers, args.queue)
    LOG.info(
        "verifying for %s with %d workers, %d waiting at most",
        args.auth_dir,
        args.workers,
        args.queue,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


def run_cli() -> None:
    raise SystemExit(main())


if __name__ == "__main__":
    run_cli()
