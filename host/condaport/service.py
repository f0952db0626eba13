"""What the socket-activated services (verifier, upload, metrics) share: where they listen."""

from __future__ import annotations

import argparse
import os
import socket
from pathlib import Path

SYSTEMD_FIRST_FD = 3


def systemd_listener() -> socket.socket:
    """The one listening socket systemd handed over (socket activation)."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()) or os.environ.get("LISTEN_FDS") != "1":
        raise SystemExit("--systemd-socket: not started by a systemd socket with one listener")
    return socket.socket(fileno=SYSTEMD_FIRST_FD)


def listener_from_args(args: argparse.Namespace) -> socket.socket:
    """The systemd socket (--systemd-socket), or a unix socket bound here (--socket)."""
    if args.systemd_socket:
        return systemd_listener()
    path = Path(args.socket)
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    path.chmod(0o660)
    listener.listen(128)
    return listener
