"""condaport-verifier: allow/deny answers for NGINX's access check, from the htpasswd files.

NGINX asks `GET /check/<channel>` with the client's Authorization header. The answer is
200 (allow) or 401 with a Basic challenge (deny). NGINX keeps the 200s briefly, so the
slow, strong hash (bcrypt) is computed once per client session instead of once per request.

The htpasswd files are the ones the condaport_nginx role renders (`<channel>.htpasswd`),
re-read whenever one changes on disk. Passwords are never logged; denials are, with the
user name, channel and client address.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import logging
import os
import socket
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from passlib.context import CryptContext
from passlib.hash import bcrypt

from condaport.config import CHANNEL_NAME, DEFAULT_PATH, ConfigError, load

LOG = logging.getLogger("condaport-verifier")
# The schemes condaport_nginx may write; anything else in a file never verifies.
HASHES = CryptContext(schemes=["bcrypt", "sha512_crypt", "sha256_crypt", "apr_md5_crypt"])
# Verified for unknown users too, so a miss costs what a hit costs (no user enumeration).
_DECOY = bcrypt.using(rounds=12).hash("condaport-decoy")
SYSTEMD_FIRST_FD = 3
# The uploaders' file (condaport_upload_auth_name): '@' never occurs in a channel name, so
# it cannot be mistaken for, or shadow, a channel's own file.
UPLOAD_AUTH_NAME = "@upload"


@dataclass(frozen=True)
class _Loaded:
    signature: tuple[int, int, int]
    users: dict[str, str]


class HtpasswdStore:
    """The per-channel htpasswd files of one directory, re-read when a file changes."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._loaded: dict[str, _Loaded] = {}
        self._lock = threading.Lock()

    def users(self, channel: str) -> dict[str, str]:
        """user -> hash for `channel`; empty when the channel has no file (or a bad name)."""
        if not (CHANNEL_NAME.match(channel) or channel == UPLOAD_AUTH_NAME):
            return {}
        path = self.directory / f"{channel}.htpasswd"
        try:
            info = path.stat()
        except FileNotFoundError:
            self._loaded.pop(channel, None)
            return {}
        signature = (info.st_ino, info.st_size, info.st_mtime_ns)
        cached = self._loaded.get(channel)
        if cached is not None and cached.signature == signature:
            return cached.users
        with self._lock:
            users = parse_htpasswd(path.read_text())
            self._loaded[channel] = _Loaded(signature, users)
        LOG.info("loaded %d users for channel %s", len(users), channel)
        return users


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


def verify(store: HtpasswdStore, channel: str, authorization: str | None) -> tuple[bool, str]:
    """(allowed, user name or '') for a request to `channel`."""
    credentials = basic_credentials(authorization)
    if credentials is None:
        return False, ""
    user, password = credentials
    hashed = store.users(channel).get(user)
    try:
        ok = HASHES.verify(password, hashed or _DECOY)
    except (ValueError, TypeError):  # a hash this context cannot read
        ok = False
    return ok and hashed is not None, user


class VerifierServer(ThreadingHTTPServer):
    daemon_threads = True
    # Unix sockets only (the systemd unit forbids every other address family).
    address_family = socket.AF_UNIX

    def __init__(self, listener: socket.socket, store: HtpasswdStore, workers: int) -> None:
        super().__init__("", CheckHandler, bind_and_activate=False)
        self.socket.close()
        self.socket = listener
        self.store = store
        # At most this many hashes at once: a flood queues instead of starving the host.
        self.hashing = threading.BoundedSemaphore(workers)


class CheckHandler(BaseHTTPRequestHandler):
    server: VerifierServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        prefix = "/check/"
        if not self.path.startswith(prefix):
            self._answer(404)
            return
        channel = self.path[len(prefix) :].split("?", 1)[0]
        with self.server.hashing:
            allowed, user = verify(self.server.store, channel, self.headers.get("Authorization"))
        if allowed:
            self._answer(200)
            return
        if user:
            client = self.headers.get("X-Condaport-Client", "?")
            LOG.warning("denied user=%r channel=%r client=%s", user, channel, client)
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


def listener_from_args(args: argparse.Namespace) -> socket.socket:
    if args.systemd_socket:
        if os.environ.get("LISTEN_PID") != str(os.getpid()) or os.environ.get("LISTEN_FDS") != "1":
            raise SystemExit("--systemd-socket: not started by a systemd socket with one listener")
        return socket.socket(fileno=SYSTEMD_FIRST_FD)
    path = Path(args.socket)
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    path.chmod(0o660)
    listener.listen(128)
    return listener


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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    if args.auth_dir is None:
        try:
            args.auth_dir = load(args.config).auth_dir
        except ConfigError as exc:
            parser.error(str(exc))
        if args.auth_dir is None:
            parser.error("the host configuration names no auth_dir; pass --auth-dir")
    server = VerifierServer(listener_from_args(args), HtpasswdStore(args.auth_dir), args.workers)
    LOG.info("verifying for %s with %d workers", args.auth_dir, args.workers)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


def run_cli() -> None:
    raise SystemExit(main())


if __name__ == "__main__":
    run_cli()
