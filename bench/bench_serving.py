"""Serving a package file with download counting and metrics on, against both off, in one run.

The primary's channel vhost is rendered from roles/condaport_nginx (tests/support/render.py)
into a scratch prefix and served by Debian's NGINX on loopback over HTTPS; wrk fetches one
package file. "On" is what a primary runs with both features: the download log (one JSON
line per complete GET of a package file) and condaport-metrics.conf (Lua's shared-memory
counters in every request's log phase, stub_status and the counters' loopback server,
scraped once a second during the round, as Prometheus would far less often). "Off" is the
same vhost without the download log line and without the metrics file. `--only` keeps one
feature on to see its share.

Rounds alternate their order, to spread the machine's drift (10-30 % within minutes) over
both; each round's ratio is on / off, and the median of those is printed. Target: 95 %.

Usage: python -m bench.bench_serving [--rounds 6] [--seconds 3] [--channel public|main]
"""

from __future__ import annotations

import argparse
import base64
import re
import shutil
import statistics
import subprocess
import tempfile
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.bench_auth import LUA_MODULES, free_port, self_signed
from tests.support.nginx import running
from tests.support.render import Renderer, scratch_host_paths

PACKAGE = "noarch/bench-pkg-1.0-0.conda"
READER = ("reader", "reader-password-0815")
NGINX_CONF = """
{load}
user root root;
worker_processes 1;
pid {prefix}/condaport.pid;
error_log {prefix}/error.log;
events {{ worker_connections 256; }}
http {{
    types {{ application/json json; }}
    client_body_temp_path {prefix}/tmp; proxy_temp_path {prefix}/tmp;
    fastcgi_temp_path {prefix}/tmp; uwsgi_temp_path {prefix}/tmp; scgi_temp_path {prefix}/tmp;
    {metrics}
    include {prefix}/upload-http.conf;
    include {prefix}/condaport.conf;
}}
"""
DOWNLOADS_LOG_LINE = re.compile(r"^\s*access_log \S+ condaport_downloads .*\n", re.MULTILINE)
CHANNELS = [{"name": "public", "anonymous": True}, {"name": "main", "users": [READER[0]]}]


def render_primary(
    prefix: Path,
    port: int,
    channels: list[dict],
    *,
    counting: bool = True,
    metrics_port: int | None = None,
) -> Path:
    """A primary's NGINX configuration in `prefix` (channels under prefix/local, the
    download log at prefix/downloads.log, its documents in prefix/public; with
    `metrics_port`, the role's metrics file with its loopback server there); the main file."""
    prefix.chmod(0o755)
    for folder in ("tmp", "auth", "run", "local", "public", "staging"):
        (prefix / folder).mkdir(exist_ok=True)
    self_signed(prefix)
    inventory = {
        "condaport_auth_mode": "basic",
        "condaport_nginx_https_port": port,
        "condaport_nginx_http_port": 0,
        "condaport_nginx_listen_ipv6": False,
        "condaport_channels": channels,
        "condaport_nginx_users": [{"name": READER[0], "password": READER[1]}],
        "condaport_edge_upstream_user": "edge",
        **scratch_host_paths(prefix),
        "condaport_nginx_status_port": metrics_port or 0,
        "condaport_metrics_token": "",
    }
    renderer = Renderer(["condaport", "condaport_nginx"], inventory)
    out = {
        "condaport.conf": "etc/nginx/conf.d/condaport.conf.j2",
        "upload-http.conf": "etc/nginx/conf.d/condaport-upload.conf.j2",
        "upload-server.conf": "etc/nginx/snippets/condaport-upload.conf.j2",
        "cache.conf": "etc/nginx/snippets/condaport-cache.conf.j2",
        "auth/tokens.map": "etc/nginx/condaport/tokens.map.j2",
        "auth/upload-tokens.map": "etc/nginx/condaport/upload-tokens.map.j2",
    }
    if metrics_port:
        out["metrics.conf"] = "etc/nginx/conf.d/condaport-metrics.conf.j2"
    for name, template in out.items():
        text = renderer.render("condaport_nginx", template)
        if name == "condaport.conf" and not counting:
            text = DOWNLOADS_LOG_LINE.sub("", text)
        (prefix / name).write_text(text)
    (prefix / "auth/generation.conf").write_text('return 200 "test\\n";\n')
    conf = prefix / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            prefix=prefix,
            load="".join(f"load_module {module};\n" for module in LUA_MODULES)
            if metrics_port
            else "",
            metrics=f"include {prefix}/metrics.conf;" if metrics_port else "",
        )
    )
    return conf


@contextmanager
def serving(
    prefix: Path, *, counting: bool, metrics: bool, size: int
) -> Iterator[tuple[int, int | None]]:
    """NGINX serving one package file in each channel of CHANNELS; its HTTPS port and its
    metrics port (None without the metrics)."""
    port, metrics_port = free_port(), free_port() if metrics else None
    conf = render_primary(prefix, port, CHANNELS, counting=counting, metrics_port=metrics_port)
    hashed = subprocess.run(
        ["openssl", "passwd", "-apr1", READER[1]], capture_output=True, text=True, check=True
    ).stdout.strip()
    (prefix / "auth/main.htpasswd").write_text(f"{READER[0]}:{hashed}\n")
    for channel in CHANNELS:
        package = prefix / "local" / channel["name"] / PACKAGE
        package.parent.mkdir(parents=True, exist_ok=True)
        package.write_bytes(b"x" * size)
    with running(prefix, conf):
        yield port, metrics_port


@contextmanager
def scraping(metrics_port: int | None) -> Iterator[list[int]]:
    """Read stub_status and the counters once a second while the round runs; the number of
    scrapes that answered."""
    answered = [0]
    stop = threading.Event()

    def scrape() -> None:
        while not stop.wait(1.0):
            for path in ("/stub_status", "/metrics"):
                url = f"http://127.0.0.1:{metrics_port}{path}"
                with urllib.request.urlopen(url, timeout=5) as answer:
                    answer.read()
                answered[0] += 1

    worker = threading.Thread(target=scrape, daemon=True)
    if metrics_port:
        worker.start()
    try:
        yield answered
    finally:
        stop.set()
        if metrics_port:
            worker.join()


def requests_per_second(port: int, channel: str, seconds: int, connections: int) -> float:
    command = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s"]
    if channel != "public":
        token = base64.b64encode(":".join(READER).encode()).decode()
        command += ["-H", f"Authorization: Basic {token}"]
    run = subprocess.run(
        [*command, f"https://127.0.0.1:{port}/{channel}/{PACKAGE}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(re.search(r"Requests/sec:\s+([0-9.]+)", run.stdout).group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--size", type=int, default=20_000, help="bytes of the package file")
    parser.add_argument(
        "--channel",
        choices=["public", "main"],
        default="public",
        help="public: anonymous; main: basic auth (apr1)",
    )
    parser.add_argument("--only", choices=["downloads", "metrics"], help="one feature on")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    if not all(module.exists() for module in LUA_MODULES):
        raise SystemExit("the metrics need Lua (apt-get install libnginx-mod-http-lua)")
    features = {
        "on": {"counting": args.only != "metrics", "metrics": args.only != "downloads"},
        "off": {"counting": False, "metrics": False},
    }
    rates: dict[str, list[float]] = {"on": [], "off": []}
    with tempfile.TemporaryDirectory() as scratch:
        for round_number in range(args.rounds):
            for name in ("on", "off") if round_number % 2 == 0 else ("off", "on"):
                prefix = Path(scratch) / f"{round_number}-{name}"
                prefix.mkdir()
                with (
                    serving(prefix, size=args.size, **features[name]) as (port, metrics_port),
                    scraping(metrics_port) as scrapes,
                ):
                    rate = requests_per_second(port, args.channel, args.seconds, args.connections)
                rates[name].append(rate)
                log = prefix / "downloads.log"
                lines = log.read_text().count("\n") if log.exists() else 0
                print(
                    f"round {round_number + 1} {name:<3}: {rate:>9,.0f} req/s"
                    f" ({lines:,} download lines, {scrapes[0]} scrapes)"
                )
    ratios = [on / off for on, off in zip(rates["on"], rates["off"], strict=True)]
    on_features = [key for key, value in features["on"].items() if value]
    print(
        f"{args.channel} channel, {args.size:,}-byte package, wrk -t2 -c{args.connections},"
        f" {args.rounds} rounds of {args.seconds} s; on = {' + '.join(on_features)}"
    )
    print(
        f"median on {statistics.median(rates['on']):,.0f} req/s,"
        f" off {statistics.median(rates['off']):,.0f} req/s;"
        f" on / off {statistics.median(ratios):.1%} (median of per-round ratios;"
        f" range {min(ratios):.1%}-{max(ratios):.1%}; target >= 95 %)"
    )


if __name__ == "__main__":
    main()
