"""condaport-metrics: condaport's own numbers in Prometheus' text exposition format.

Served on loopback only (a systemd socket on 127.0.0.1, or --listen for tests); NGINX
forwards https://HOST/.well-known/condaport/metrics/condaport to it for the monitoring host,
behind the same TLS and a bearer token. Everything is read at scrape time from what the
host already keeps, so nothing here runs between scrapes:
- uploads, publishes and refusals: the components' counter files (condaport.counters);
- quarantined files: the files in each channel's quarantine folder;
- index age and staleness per subdir: the subdir index owner's fingerprint and its one
  definition of fresh (SubdirIndex.is_fresh);
- certificate expiry: notAfter of the certificate NGINX serves.
NGINX itself exposes the verifier checks, their sheds, the answer cache's hits and the edge
cache's statuses (roles/condaport_nginx, condaport_auth.lua), and the request totals
through prometheus-nginx-exporter.

The text format is written by hand (a few lines), so the host package needs no client
library: https://prometheus.io/docs/instrumenting/exposition_formats/
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

from condaport import downloads
from condaport.channel_files import QUARANTINE
from condaport.config import DEFAULT_PATH, ConfigError, HostConfig, load
from condaport.counters import read_all
from condaport.service import systemd_listener
from condaport.subdir_index import SubdirIndex, fingerprint_file

LOG = logging.getLogger("condaport.metrics")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# What each counter family means; the counting components name only the family.
HELP = {
    "condaport_uploads_total": "Upload service requests (PUT/POST/DELETE) by method and result",
    "condaport_refusals_total": "Upload service requests refused, by reason",
    "condaport_publishes_total": "Playbook publish runs by result",
}
# A label value is escaped as the exposition format asks; names come from us, not input.
_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n"})


class Family:
    """One metric family: its name, type, help and samples (labels, value)."""

    def __init__(self, name: str, kind: str, help_text: str) -> None:
        self.name, self.kind, self.help_text = name, kind, help_text
        self.samples: list[tuple[dict[str, str], float]] = []

    def add(self, value: float, **labels: str) -> Family:
        self.samples.append((labels, value))
        return self

    def lines(self) -> Iterator[str]:
        yield f"# HELP {self.name} {self.help_text}"
        yield f"# TYPE {self.name} {self.kind}"
        for labels, value in self.samples:
            rendered = ",".join(f'{k}="{str(v).translate(_ESCAPES)}"' for k, v in labels.items())
            number = repr(float(value)) if value != int(value) else str(int(value))
            yield f"{self.name}{{{rendered}}} {number}" if rendered else f"{self.name} {number}"


def exposition(families: Iterable[Family]) -> str:
    return "".join(line + "\n" for family in families for line in family.lines())


def counter_families(host: HostConfig) -> list[Family]:
    families: dict[str, Family] = {}
    for (name, labels), value in sorted(read_all(host.state_dir).items()):
        if name not in HELP:  # a counter file from another version: not ours to name
            continue
        family = families.setdefault(name, Family(name, "counter", HELP[name]))
        family.add(value, **dict(labels))
    # Families present with no samples yet: dashboards and alerts see them exist.
    for name, help_text in HELP.items():
        families.setdefault(name, Family(name, "counter", help_text))
    return list(families.values())


def tree_families(host: HostConfig, now: float) -> list[Family]:
    quarantined = Family(
        "condaport_quarantined_files", "gauge", "Files the indexer moved out of the served tree"
    )
    age = Family(
        "condaport_index_age_seconds", "gauge", "Seconds since the subdir's index was last built"
    )
    stale = Family(
        "condaport_index_stale",
        "gauge",
        "1 when the subdir's package files are not those its index was built from",
    )
    for channel in host.channels:
        channel_dir = host.channels_root / channel.name
        if not channel_dir.is_dir():  # an edge, or a proxy channel: no tree, no index here
            continue
        for subdir in channel.subdirs:
            folder = channel_dir / QUARANTINE / subdir
            try:
                count = sum(1 for entry in os.scandir(folder) if entry.is_file())
            except OSError:
                count = 0
            quarantined.add(count, channel=channel.name, subdir=subdir)
            try:
                built = fingerprint_file(host.state_dir, channel.name, subdir).stat().st_mtime
            except OSError:
                built = None
            if built is not None:
                age.add(max(0.0, now - built), channel=channel.name, subdir=subdir)
            try:
                fresh = SubdirIndex.at(channel_dir, subdir, host.state_dir).is_fresh()
            except OSError:
                fresh = False
            stale.add(0 if fresh else 1, channel=channel.name, subdir=subdir)
    return [quarantined, age, stale]


_NOT_AFTER = re.compile(r"^notAfter=(.+)$", re.MULTILINE)


def certificate_not_after(path: Path) -> float | None:
    """notAfter of a PEM certificate as a Unix time, from Debian's openssl (no Python
    crypto library on the host for one date); None when unreadable."""
    try:
        done = subprocess.run(
            ["openssl", "x509", "-noout", "-enddate", "-in", str(path)],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = _NOT_AFTER.search(done.stdout)
    if done.returncode != 0 or not found:
        return None
    try:
        parsed = datetime.strptime(found.group(1).strip(), "%b %d %H:%M:%S %Y %Z")
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC).timestamp()


def certificate_families(certificates: list[Path]) -> list[Family]:
    expiry = Family(
        "condaport_certificate_expiry_timestamp_seconds",
        "gauge",
        "notAfter of the certificate NGINX serves (Unix time)",
    )
    for path in certificates:
        not_after = certificate_not_after(path)
        if not_after is not None:
            expiry.add(not_after, path=str(path))
    return [expiry]


def download_families(folder: Path = downloads.DEFAULT_FOLDER) -> list[Family]:
    """The package files this host's own NGINX served completely, per channel, subdir,
    package and version. Own downloads only, also on a primary that holds its edges'
    reports (those are in the channel's JSON document): every host, edge or primary,
    exports what it served, so a sum over hosts is the channel's total and nothing is
    counted twice."""
    family = Family("condaport_downloads_total", "counter", "Package files served completely")
    for (channel, subdir, package, version), total in sorted(
        downloads.counts_by_version(folder).items()
    ):
        family.add(total, channel=channel, subdir=subdir, package=package, version=version)
    return [family]


def collect(host: HostConfig, certificates: list[Path], now: float | None = None) -> str:
    now = time.time() if now is None else now
    families = [
        *counter_families(host),
        *tree_families(host, now),
        *certificate_families(certificates),
        *download_families(),
    ]
    up = Family("condaport_metrics_scrape_timestamp_seconds", "gauge", "When this was read")
    return exposition([*families, up.add(now)])


class MetricsServer(HTTPServer):
    def __init__(self, listener: socket.socket, host: HostConfig, certificates: list[Path]):
        super().__init__(listener.getsockname()[:2], MetricsHandler, bind_and_activate=False)
        self.socket.close()
        self.socket = listener
        self.host, self.certificates = host, certificates


class MetricsHandler(BaseHTTPRequestHandler):
    server: MetricsServer
    timeout = 10

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path.split("?", 1)[0] != "/metrics":
            self.send_error(404)
            return
        body = collect(self.server.host, self.server.certificates).encode()
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """No access log: a scrape every few seconds would only fill the journal."""


def loopback_listener(address: str) -> socket.socket:
    """A TCP listener on a loopback address only: the exporter is never exposed itself."""
    where, _, port = address.rpartition(":")
    where = where.strip("[]")
    if not ipaddress.ip_address(where).is_loopback:
        raise SystemExit(f"--listen {address}: metrics listen on loopback only")
    family = socket.AF_INET6 if ":" in where else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((where, int(port)))
    listener.listen(16)
    return listener


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="condaport-metrics", description=__doc__)
    parser.add_argument("--config", type=Path, help=f"host configuration (default {DEFAULT_PATH})")
    parser.add_argument(
        "--certificate", type=Path, action="append", default=[], help="a served certificate"
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--systemd-socket", action="store_true", help="listen on fd 3 from systemd")
    where.add_argument("--listen", help="loopback HOST:PORT (tests, benchmarks)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    try:
        host = load(args.config)
    except ConfigError as exc:
        parser.error(str(exc))
    listener = systemd_listener() if args.systemd_socket else loopback_listener(args.listen)
    server = MetricsServer(listener, host, args.certificate)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


def run_cli() -> None:
    raise SystemExit(main())


if __name__ == "__main__":
    run_cli()
