"""A client run inside a container of molecule/edges, with the container's python3 alone.

test_client_addresses.py copies it into client containers (and into the primary, as a host
that is not the balancer) so the edges see requests from those containers' own addresses.
It trusts the scenario's CA at /tmp/condaport-ca.crt and asks for the name `localhost`,
which every edge's certificate carries, whatever address it connects to. It prints JSON.

    probe HOST PORT PATH COUNT           COUNT requests, each on a fresh connection
    check HOST PORT PATH COUNT           the same, each with a failing credential
    flood HOST PORT PATH SECONDS CONNS   failing credential checks on CONNS keep-alive
                                         connections until one answers 503, then SECONDS more
    spoof HOST PORT PATH ADDRESS         a PROXY protocol v2 header claiming ADDRESS, then
                                         TLS and one request
"""

from __future__ import annotations

import http.client
import ipaddress
import itertools
import json
import socket
import ssl
import struct
import sys
import threading
import time
from collections import Counter

CA_FILE = "/tmp/condaport-ca.crt"
SERVER_NAME = "localhost"
# The PROXY protocol v2 signature, then version 2 / command PROXY, then TCP over IPv4.
PROXY_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
PROXY_V2_PROXY_COMMAND = 0x21
PROXY_V2_TCP4 = 0x11
# How long a flood may take to reach the limit before it gives up.
FLOOD_LIMIT_SECONDS = 60


def tls_context() -> ssl.SSLContext:
    return ssl.create_default_context(cafile=CA_FILE)


class EdgeConnection(http.client.HTTPSConnection):
    """HTTPS to an address, checking the certificate for SERVER_NAME (the edges' certificates
    name their container and localhost, not the balancer's address on a client network)."""

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._context.wrap_socket(self.sock, server_hostname=SERVER_NAME)


def connection(host: str, port: int) -> EdgeConnection:
    return EdgeConnection(host, port, context=tls_context(), timeout=30)


def ask(conn: http.client.HTTPSConnection, path: str, headers: dict[str, str]) -> int:
    conn.request("GET", path, headers=headers)
    answer = conn.getresponse()
    answer.read()
    return answer.status


def failing_credential(number: int) -> dict[str, str]:
    """Not even Basic: the verifier refuses it without hashing. Each differs, so the edge
    asks the verifier (through its gate) for every one instead of waiting for one answer."""
    return {"Authorization": f"Basic !not-base64-{number}"}


def probe(host: str, port: int, path: str, count: int, credentials: bool) -> list[int]:
    statuses = []
    for number in range(count):
        conn = connection(host, port)
        try:
            statuses.append(ask(conn, path, failing_credential(number) if credentials else {}))
        finally:
            conn.close()
    return statuses


def flood(host: str, port: int, path: str, seconds: float, connections: int) -> dict:
    """Failing credential checks on keep-alive connections, fast enough to run past the
    per-network rate of the verifier's gate."""
    counter = itertools.count()
    phase = ["before"]
    seen: dict[str, Counter] = {"before": Counter(), "after": Counter()}
    throttled = threading.Event()
    stop = threading.Event()
    lock = threading.Lock()

    def run() -> None:
        conn = connection(host, port)
        while not stop.is_set():
            try:
                status = ask(conn, path, failing_credential(next(counter)))
            except (OSError, http.client.HTTPException):
                conn.close()
                status = 0
            with lock:
                seen[phase[0]][status] += 1
            if status == 503:
                throttled.set()
        conn.close()

    threads = [threading.Thread(target=run, daemon=True) for _ in range(connections)]
    for thread in threads:
        thread.start()
    reached = throttled.wait(FLOOD_LIMIT_SECONDS)
    with lock:
        phase[0] = "after"
    # The caller checks the other network while this one stays over its limit.
    print(json.dumps({"throttled": reached}), flush=True)
    if reached:
        time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join(35)
    return {name: {str(k): v for k, v in counts.items()} for name, counts in seen.items()}


def proxy_v2_header(claimed: str, sock: socket.socket) -> bytes:
    destination, destination_port = sock.getpeername()[:2]
    addresses = (
        ipaddress.IPv4Address(claimed).packed
        + ipaddress.IPv4Address(destination).packed
        + struct.pack("!HH", 40000, destination_port)
    )
    return (
        PROXY_V2_SIGNATURE
        + bytes([PROXY_V2_PROXY_COMMAND, PROXY_V2_TCP4])
        + struct.pack("!H", len(addresses))
        + addresses
    )


def spoof(host: str, port: int, path: str, claimed: str) -> int:
    """The status of one request sent after a PROXY header claiming `claimed`; 0 when the
    edge drops the connection instead of answering."""
    try:
        with socket.create_connection((host, port), timeout=10) as raw:
            raw.sendall(proxy_v2_header(claimed, raw))
            with tls_context().wrap_socket(raw, server_hostname=SERVER_NAME) as tls:
                request = f"GET {path} HTTP/1.1\r\nHost: {SERVER_NAME}\r\nConnection: close\r\n\r\n"
                tls.sendall(request.encode())
                status_line = tls.makefile("rb").readline().decode("latin-1")
    except (OSError, ssl.SSLError):
        return 0
    parts = status_line.split()
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def main(argv: list[str]) -> None:
    command, host, port, path, *rest = argv
    if command in ("probe", "check"):
        result: object = probe(host, int(port), path, int(rest[0]), command == "check")
    elif command == "flood":
        result = flood(host, int(port), path, float(rest[0]), int(rest[1]))
    elif command == "spoof":
        result = spoof(host, int(port), path, rest[0])
    else:
        raise SystemExit(f"unknown command {command!r}")
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
