"""Requests per second for a cached package through an edge, as a share of the same NGINX
serving the file from disk, both with auth, in one run.

Starts one throwaway NGINX on 127.0.0.1 (its own prefix, no root paths touched) with two
HTTPS servers: the origin, which serves the package from disk the way a primary does, and
an edge configured from roles/condaport_edge's own templates (rendered here with the
role's directives: proxy_cache, lock, revalidation, the edge's own credential, TLS
verification of the origin). Both check the client's password with auth_basic
(--scheme; "none" for no auth). After one request has filled the cache, wrk measures each
in turn, alternating for --rounds rounds; the ratio is taken within each round (a shared
VM drifts by 10-30 % within minutes) and the median printed. Target: 90 % or more.

Usage: python -m bench.bench_edge [--duration 3] [--rounds 5] [--size 65536]
                                  [--scheme apr_md5_crypt]
"""

from __future__ import annotations

import argparse
import base64
import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import jinja2

from bench.bench_auth import (
    PASSWORD,
    USER,
    free_port,
    make_hash,
    self_signed,
    throwaway_nginx_conf,
    wrk,
)

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = REPO / "roles" / "condaport_edge" / "templates" / "etc" / "nginx" / "condaport-edge"
# What the edge's snippets include: condaport_nginx's shared cache settings.
CACHE_TEMPLATE = REPO / "roles" / "condaport_nginx" / "templates" / "etc" / "nginx" / "snippets"
PACKAGE = "main/noarch/bench-1.0-0.conda"


def render_edge(prefix: Path, origin_port: int) -> dict[str, Path]:
    """The role's snippets, rendered with this run's paths, port and credential."""
    edge_dir = prefix / "edge"
    edge_dir.mkdir()
    files = {kind: edge_dir / f"{kind}.conf" for kind in ("http", "proxy", "package", "index")}
    files["ca"] = prefix / "cert.pem"
    files["cache"] = edge_dir / "condaport-cache.conf"
    context = {
        "ansible_managed": "rendered by bench/bench_edge.py",
        "condaport_edge_cache_dir": str(prefix / "cache"),
        "condaport_edge_cache_max_size": "1g",
        "condaport_edge_cache_inactive": "1d",
        "condaport_edge_connect_timeout": 3,
        "condaport_edge_index_validity": 5,
        "condaport_edge_package_validity": 31536000,
        "condaport_edge_nginx_files": {k: str(v) for k, v in files.items()},
        "condaport_nginx_cache_snippet": str(files["cache"]),
        "condaport_metrics_enabled": False,
        "__condaport_nginx_error_log": str(prefix / "error.log"),
        "__condaport_edge_upstream_host": "localhost",
        "__condaport_edge_upstream_port": origin_port,
        "__condaport_edge_authorization": "Basic "
        + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode(),
    }
    loader = jinja2.FileSystemLoader([TEMPLATES, CACHE_TEMPLATE])
    env = jinja2.Environment(loader=loader, autoescape=False)
    env.filters["comment"] = lambda text: f"# {text}"
    env.filters["bool"] = bool
    for kind in ("http", "proxy", "package", "index"):
        files[kind].write_text(env.get_template(f"{kind}.conf.j2").render(context))
    files["cache"].write_text(env.get_template("condaport-cache.conf.j2").render(context))
    return files


def nginx_conf(prefix: Path, origin: int, edge: int, scheme: str) -> str:
    files = render_edge(prefix, origin)
    auth = ""
    if scheme != "none":
        (prefix / "users.htpasswd").write_text(f"{USER}:{make_hash(scheme)}\n")
        auth = f'auth_basic "bench"; auth_basic_user_file {prefix}/users.htpasswd;'
    tls = self_signed(prefix)
    servers = f"""
    include {files["http"]};
    server {{
        listen 127.0.0.1:{origin} {tls}
        root {prefix}/www;
        location /main/ {{ {auth} try_files $uri =404; }}
    }}
    server {{
        listen 127.0.0.1:{edge} {tls}
        location /main/ {{ {auth} include {files["package"]}; }}
    }}
"""
    return throwaway_nginx_conf(prefix, servers)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size", type=int, default=65536, help="package file size in bytes")
    parser.add_argument("--scheme", default="apr_md5_crypt", help="htpasswd scheme, or none")
    args = parser.parse_args()
    for tool in ("nginx", "wrk"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            raise SystemExit(f"{tool} is not installed (apt-get install nginx wrk)")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    with tempfile.TemporaryDirectory(prefix="condaport-bench-edge-") as scratch:
        prefix = Path(scratch)
        prefix.chmod(0o755)  # NGINX's workers run unprivileged
        for folder in ("www/main/noarch", "tmp", "cache"):
            (prefix / folder).mkdir(parents=True)
        (prefix / "cache").chmod(0o777)
        (prefix / "www" / PACKAGE).write_bytes(b"x" * args.size)
        origin, edge = free_port(), free_port()
        conf = prefix / "nginx.conf"
        conf.write_text(nginx_conf(prefix, origin, edge, args.scheme))
        subprocess.run([nginx, "-p", str(prefix), "-c", str(conf)], check=True)
        try:
            time.sleep(0.3)
            urls = {
                "disk": f"https://127.0.0.1:{origin}/{PACKAGE}",
                "edge": f"https://127.0.0.1:{edge}/{PACKAGE}",
            }
            status = fill_cache(prefix, urls["edge"])
            rates: dict[str, list[float]] = {"disk": [], "edge": []}
            for n in range(args.rounds):
                for name in ("disk", "edge") if n % 2 == 0 else ("edge", "disk"):
                    rates[name].append(wrk(urls[name], args.duration))
                    time.sleep(1)
        finally:
            subprocess.run([nginx, "-p", str(prefix), "-c", str(conf), "-s", "stop"], check=False)
    ratios = [e / d for e, d in zip(rates["edge"], rates["disk"], strict=True)]
    print(
        f"HTTPS, wrk -t2 -c10, {args.rounds} rounds of {args.duration}s, {args.size}-byte"
        f" package, auth: {args.scheme}; the edge's first answer was {status}"
    )
    for name in ("disk", "edge"):
        values = rates[name]
        print(
            f"{name:<5} {statistics.median(values):>10.1f} req/s"
            f"  ({min(values):.0f}-{max(values):.0f})"
        )
    print(f"edge (cache HIT) / disk: {statistics.median(ratios):.1%} (median of per-round ratios)")
    return 0


def fill_cache(prefix: Path, url: str) -> str:
    """One request through the edge, so wrk measures cache hits; returns its cache status."""
    import ssl

    context = ssl.create_default_context(cafile=str(prefix / "cert.pem"))
    context.check_hostname = False
    request = urllib.request.Request(url)
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, context=context, timeout=10) as answer:
        answer.read()
        return answer.headers.get("X-Condaport-Cache", "?")


if __name__ == "__main__":
    raise SystemExit(main())
