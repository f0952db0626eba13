"""Wrong-password flood against a channel host, run INSIDE its container.

test_verifier.py runs this file with the container's own python3 (`python3 -c`, standard
library only), so the attacker's addresses differ from the controller's: the controller's
legitimate clients come through the published port from another address. Sources:

- `loopback`: every request from 127.0.0.1.
- `one-network`: every request from a new random address in the IPv6 /64 NETWORK:1::/64.
- `networks`: every request from a random address in a random other /64 of NETWORK::/48.

The IPv6 sources need `ip -6 route add local NETWORK::/48 dev lo` in the container's
network namespace (the test adds it); the sockets bind them with IPV6_FREEBIND.

Runs until stdin closes (`--requests 0`) or for `--requests` per thread; with `--together`
every thread first completes its TLS handshake, then all send at once. The last stdout line
is JSON: {"statuses": {"401": n, ...}}; "ready" is printed once the first answer arrived.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import socket
import ssl
import sys
import threading
import time
from collections import Counter

NETWORK = "fd00:c0da:0"  # a /48: three groups of 16 bits
IPV6_FREEBIND = 78  # linux/in6.h; not in Python's socket module


def source(mode: str) -> tuple[int, str, str]:
    """(family, source address, destination address) of one request."""
    if mode == "loopback":
        return socket.AF_INET, "127.0.0.1", "127.0.0.1"
    subnet = 1 if mode == "one-network" else random.randrange(2, 0x10000)
    host = ":".join(f"{random.randrange(0x10000):x}" for _ in range(4))
    return socket.AF_INET6, f"{NETWORK}:{subnet:x}:{host}", "::1"


def connect(mode: str, port: int, context: ssl.SSLContext) -> ssl.SSLSocket:
    family, address, destination = source(mode)
    raw = socket.socket(family, socket.SOCK_STREAM)
    raw.settimeout(30)
    if family == socket.AF_INET6:
        raw.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
    raw.bind((address, 0))
    raw.connect((destination, port))
    return context.wrap_socket(raw, server_hostname="localhost")


def ask(connection: ssl.SSLSocket, path: str, user: str) -> int:
    password = f"wrong-{random.getrandbits(64):x}"  # never the same: never an answer kept
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic {token}\r\n"
        "Connection: close\r\n\r\n"
    )
    with connection, connection.makefile("rb") as answer:
        connection.sendall(request.encode())
        return int(answer.readline().split()[1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["loopback", "one-network", "networks"], required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--requests", type=int, default=0, help="per thread; 0: until stdin closes")
    parser.add_argument("--together", action="store_true")
    args = parser.parse_args()

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the attacker does not care who answers
    statuses: Counter[str] = Counter()
    lock = threading.Lock()
    stop = threading.Event()
    ready = threading.Event()
    start = threading.Barrier(args.threads)

    def attacker() -> None:
        done = 0
        while not stop.is_set() and (args.requests == 0 or done < args.requests):
            try:
                connection = connect(args.mode, args.port, context)
                if args.together:
                    start.wait(timeout=60)
                status = str(ask(connection, args.path, args.user))
            except (OSError, ValueError, IndexError, threading.BrokenBarrierError) as error:
                status = type(error).__name__
            with lock:
                statuses[status] += 1
            ready.set()
            done += 1

    threads = [threading.Thread(target=attacker, daemon=True) for _ in range(args.threads)]
    for thread in threads:
        thread.start()
    if args.requests == 0:
        ready.wait(timeout=60)
        print("ready", flush=True)
        sys.stdin.read()  # until the test closes it
        stop.set()
    deadline = time.monotonic() + 120
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    with lock:
        print(json.dumps({"statuses": dict(statuses)}), flush=True)


if __name__ == "__main__":
    main()
