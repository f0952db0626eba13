"""Serving a package file with download counting on vs off, in one run.

The channel vhost is rendered from roles/condaport_nginx (tests/support/render.py) into a
scratch prefix and served by Debian's NGINX on loopback; wrk fetches one package file of
an anonymous channel. "Off" is the same configuration without the download log (the
`access_log ... condaport_downloads` line removed), so the ratio is the cost of the log.
Rounds alternate, to spread the machine's noise over both. Prints the ratio of the
medians (counting on / off); the goal is at least 0.95.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.bench_auth import free_port, self_signed
from tests.support.nginx import running
from tests.support.render import Renderer

PACKAGE = "noarch/bench-pkg-1.0-0.conda"
NGINX_CONF = """
user root root;
worker_processes 1;
pid {prefix}/condaport.pid;
error_log {prefix}/error.log;
events {{ worker_connections 256; }}
http {{
    types {{ application/json json; }}
    client_body_temp_path {prefix}/tmp; proxy_temp_path {prefix}/tmp;
    fastcgi_temp_path {prefix}/tmp; uwsgi_temp_path {prefix}/tmp; scgi_temp_path {prefix}/tmp;
    include {prefix}/upload-http.conf;
    include {prefix}/condaport.conf;
}}
"""
DOWNLOADS_LOG_LINE = re.compile(r"^\s*access_log \S+ condaport_downloads .*\n", re.MULTILINE)


def render_primary(prefix: Path, port: int, channels: list[dict], *, counting: bool = True) -> Path:
    """A primary's NGINX configuration in `prefix` (channels under prefix/local, the
    download log at prefix/downloads.log, its documents in prefix/public); the main file."""
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
        "condaport_nginx_users": [{"name": "reader", "password": "reader-password-0815"}],
        "condaport_edge_upstream_user": "edge",
        "condaport_auth_dir": str(prefix / "auth"),
        "condaport_channels_root": str(prefix / "local"),
        "condaport_staging_root": str(prefix / "staging"),
        "condaport_server_certificate_path": str(prefix / "cert.pem"),
        "condaport_server_key_path": str(prefix / "key.pem"),
        "condaport_upload_socket": str(prefix / "run/upload.sock"),
        "condaport_nginx_cache_snippet": str(prefix / "cache.conf"),
        "__condaport_nginx_access_log": str(prefix / "access.log"),
        "__condaport_nginx_downloads_log": str(prefix / "downloads.log"),
        "__condaport_nginx_downloads_public": str(prefix / "public"),
        "__condaport_nginx_error_log": str(prefix / "error.log"),
        "__condaport_nginx_run_dir": str(prefix / "run"),
        "__condaport_nginx_upload_server_conf": str(prefix / "upload-server.conf"),
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
    for name, template in out.items():
        text = renderer.render("condaport_nginx", template)
        if name == "condaport.conf" and not counting:
            text = DOWNLOADS_LOG_LINE.sub("", text)
        (prefix / name).write_text(text)
    (prefix / "auth/generation.conf").write_text('return 200 "test\\n";\n')
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_CONF.format(prefix=prefix))
    return conf


@contextmanager
def serving(prefix: Path, *, counting: bool, size: int) -> Iterator[int]:
    """NGINX serving one package file of the anonymous channel `public`; its port."""
    port = free_port()
    conf = render_primary(prefix, port, [{"name": "public", "anonymous": True}], counting=counting)
    package = prefix / "local/public" / PACKAGE
    package.parent.mkdir(parents=True, exist_ok=True)
    package.write_bytes(b"x" * size)
    with running(prefix, conf):
        yield port


def requests_per_second(port: int, seconds: int, connections: int) -> float:
    url = f"https://127.0.0.1:{port}/public/{PACKAGE}"
    run = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", url],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(re.search(r"Requests/sec:\s+([0-9.]+)", run.stdout).group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--size", type=int, default=20_000, help="bytes of the package file")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    results: dict[bool, list[float]] = {True: [], False: []}
    with tempfile.TemporaryDirectory() as scratch:
        for round_number in range(args.rounds):
            for counting in (round_number % 2 == 0, round_number % 2 == 1):
                prefix = Path(scratch) / f"{round_number}-{counting}"
                prefix.mkdir()
                with serving(prefix, counting=counting, size=args.size) as port:
                    rate = requests_per_second(port, args.seconds, args.connections)
                results[counting].append(rate)
                lines = (prefix / "downloads.log").read_text().count("\n") if counting else 0
                print(f"round {round_number + 1} counting {'on ' if counting else 'off'}: "
                      f"{rate:,.0f} req/s ({lines:,} download lines)")  # fmt: skip
    on, off = statistics.median(results[True]), statistics.median(results[False])
    print(f"median on {on:,.0f} req/s, off {off:,.0f} req/s: ratio {on / off:.3f} (goal >= 0.95)")


if __name__ == "__main__":
    main()
