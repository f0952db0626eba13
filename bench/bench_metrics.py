"""Serving a package file with the metrics on, against off, in one run.

"On" is the role's NGINX metrics configuration (condaport-metrics.conf: the shared-memory
counters every request's log phase increments, stub_status and the counters' loopback
server) plus an access log, which is what per-file download counting reads; "off" has
neither. Two throwaway NGINX instances on 127.0.0.1 (their own prefixes, no root paths
touched) serve the same file over HTTPS; wrk measures them in turn, alternating the order
for --rounds rounds, and the ratio is taken within each round (a shared VM drifts by
10-30 % within minutes); the median is printed. Target: 95 % or more.

Usage: python -m bench.bench_metrics [--duration 3] [--rounds 5] [--size 65536]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import jinja2

from bench.bench_auth import LUA_MODULES, free_port, self_signed, throwaway_nginx_conf, wrk

REPO = Path(__file__).resolve().parents[1]
METRICS_TEMPLATE = REPO / "roles" / "condaport_nginx" / "templates" / "etc" / "nginx" / "conf.d"
PACKAGE = "main/noarch/bench-1.0-0.conda"
# The role's access log line (condaport.conf), without its user-name maps.
LOG_FORMAT = (
    "log_format condaport '$remote_addr - $remote_user [$time_local] "
    '"$request_method $uri $server_protocol" $status '
    '$body_bytes_sent "-" "$http_user_agent"\';'
)


def metrics_conf(status_port: int) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(METRICS_TEMPLATE), autoescape=False)
    env.filters["comment"] = lambda text: f"# {text}"
    return env.get_template("condaport-metrics.conf.j2").render(
        ansible_managed="rendered by bench/bench_metrics.py",
        condaport_metrics_token="",
        condaport_nginx_status_port=status_port,
    )


def site(prefix: Path, port: int, metrics: bool) -> Path:
    """One NGINX serving the package over HTTPS, with or without the metrics."""
    tls = self_signed(prefix)
    extra, load = "", ""
    if metrics:
        (prefix / "metrics.conf").write_text(metrics_conf(free_port()))
        extra = f"include {prefix}/metrics.conf;\n{LOG_FORMAT}"
        load = "".join(f"load_module {module};\n" for module in LUA_MODULES)
    logging = f"access_log {prefix}/access.log condaport;" if metrics else ""
    servers = f"""
    {extra}
    server {{
        listen 127.0.0.1:{port} {tls}
        {logging}
        root {prefix}/www;
        location /main/ {{ try_files $uri =404; }}
    }}
"""
    conf = prefix / "nginx.conf"
    conf.write_text(throwaway_nginx_conf(prefix, servers, load))
    return conf


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size", type=int, default=65536, help="package file size in bytes")
    args = parser.parse_args()
    for tool in ("nginx", "wrk"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            raise SystemExit(f"{tool} is not installed (apt-get install nginx wrk)")
    if not all(module.exists() for module in LUA_MODULES):
        raise SystemExit("the metrics need Lua (apt-get install libnginx-mod-http-lua)")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    rates: dict[str, list[float]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory(prefix="condaport-bench-metrics-") as scratch:
        confs, urls = {}, {}
        for name in ("off", "on"):
            prefix = Path(scratch) / name
            for folder in ("www/main/noarch", "tmp"):
                (prefix / folder).mkdir(parents=True)
            Path(scratch).chmod(0o755)
            prefix.chmod(0o755)  # NGINX's workers run unprivileged
            (prefix / "www" / PACKAGE).write_bytes(b"x" * args.size)
            port = free_port()
            confs[name] = site(prefix, port, metrics=name == "on")
            urls[name] = f"https://127.0.0.1:{port}/{PACKAGE}"
        started = []
        try:
            for conf in confs.values():
                subprocess.run([nginx, "-p", str(conf.parent), "-c", str(conf)], check=True)
                started.append(conf)
            time.sleep(0.3)
            for n in range(args.rounds):
                for name in ("off", "on") if n % 2 == 0 else ("on", "off"):
                    rates[name].append(wrk(urls[name], args.duration))
                    time.sleep(1)
            logged = (confs["on"].parent / "access.log").stat().st_size
        finally:
            for conf in started:
                stop = [nginx, "-p", str(conf.parent), "-c", str(conf), "-s", "stop"]
                subprocess.run(stop, check=False)
    ratios = [on / off for on, off in zip(rates["on"], rates["off"], strict=True)]
    print(
        f"HTTPS, wrk -t2 -c10, {args.rounds} rounds of {args.duration}s, {args.size}-byte"
        f" package; 'on' logged {logged} bytes"
    )
    for name in ("off", "on"):
        values = rates[name]
        print(
            f"{name:<4} {statistics.median(values):>10.1f} req/s"
            f"  ({min(values):.0f}-{max(values):.0f})"
        )
    print(f"metrics on / off: {statistics.median(ratios):.1%} (median of per-round ratios)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
