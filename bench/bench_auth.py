"""Requests per second for a small package file through NGINX, per auth mode and hash scheme.

With auth_basic NGINX verifies the htpasswd hash on every request inside its worker, so
the scheme and its cost decide throughput. In verifier mode (`cached:<scheme>`) the role's
Lua access check (condaport_auth.lua) asks condaport-verifier and keeps the positive answer
in shared memory, configured as the condaport_nginx role does. This starts a throwaway NGINX on
127.0.0.1 (its own prefix and config, no root paths touched) and, for cached specs, the
verifier on a unix socket; generates one htpasswd per spec with passlib, and runs wrk
against each. Prints req/s and the ratio to no auth.

Usage: python bench/bench_auth.py [--duration 3] [--rounds 5] [--plain-http]
                                  [--schemes none,sha512_crypt,cached:bcrypt:12]
HTTPS (TLS 1.3, ECDSA P-256, keep-alive) by default, as condaport serves; --plain-http
measures without TLS, where the auth overhead is a larger share of each request.
Each round runs every scheme once, in a new random order, and the ratio to no auth is taken
within each round: a shared VM's throughput drifts by 10-30 % within minutes, and a single
run per scheme would mostly measure that drift. The table shows medians over the rounds.
"""

from __future__ import annotations

import argparse
import base64
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from passlib import hash as passlib_hash

USER, PASSWORD = "bench", "bench-password-1234"
DEFAULT_SCHEMES = (
    "none,apr_md5_crypt,sha512_crypt:5000,bcrypt:5,bcrypt:8,bcrypt:12,cached:bcrypt:12"
)
SETTLE_SECONDS = 2
REPO = Path(__file__).resolve().parents[1]
LUA_CHECK_DIR = REPO / "roles" / "condaport_nginx" / "files"
LUA_MODULES = [
    Path("/usr/lib/nginx/modules/ndk_http_module.so"),
    Path("/usr/lib/nginx/modules/ngx_http_lua_module.so"),
]


def make_hash(spec: str) -> str:
    scheme, _, rounds = spec.partition(":")
    handler = getattr(passlib_hash, scheme)
    if rounds:
        handler = handler.using(rounds=int(rounds))
    if scheme == "bcrypt":
        handler = handler.using(ident="2b")
    return handler.hash(PASSWORD)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def self_signed(prefix: Path) -> str:
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(prefix / "key.pem"),
            "-out",
            str(prefix / "cert.pem"),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ],
        check=True,
        capture_output=True,
    )
    return (
        f"ssl ; ssl_certificate {prefix}/cert.pem; ssl_certificate_key {prefix}/key.pem;"
        " ssl_protocols TLSv1.2 TLSv1.3;"
    )


def nginx_conf(prefix: Path, port: int, specs: list[str], tls: str) -> str:
    locations = []
    cached = False
    for n, spec in enumerate(specs):
        auth = ""
        if spec.startswith("cached:"):
            cached = True
            (prefix / "auth" / f"c{n}.htpasswd").write_text(f"{USER}:{make_hash(spec[7:])}\n")
            auth = f'access_by_lua_block {{ require("condaport_auth").check("c{n}", "bench") }}'
        elif spec != "none":
            (prefix / f"{n}.htpasswd").write_text(f"{USER}:{make_hash(spec)}\n")
            auth = f'auth_basic "bench"; auth_basic_user_file {prefix}/{n}.htpasswd;'
        locations.append(f"location /s{n}/ {{ {auth} alias {prefix}/www/; }}")
    verifier_mode = ""
    if cached:
        verifier_mode = f"""
    lua_package_path "{LUA_CHECK_DIR}/?.lua;;";
    lua_shared_dict condaport_auth_answers 8m;
    init_by_lua_block {{ require("condaport_auth").init(600, "{prefix}/verifier.sock") }}
"""
    load = "".join(f"load_module {module};" for module in LUA_MODULES) if cached else ""
    server = f"""
    server {{
        listen 127.0.0.1:{port} {tls}
        {" ".join(locations)}
    }}
"""
    return throwaway_nginx_conf(prefix, verifier_mode + server, main_context=load)


def throwaway_nginx_conf(prefix: Path, http: str, main_context: str = "") -> str:
    """A whole NGINX configuration that keeps every file it writes under `prefix`, with
    `http` as the body of its http block (no access log: the benches measure serving)."""
    return f"""
{main_context}
worker_processes auto;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/tmp; proxy_temp_path {prefix}/tmp;
    fastcgi_temp_path {prefix}/tmp; uwsgi_temp_path {prefix}/tmp; scgi_temp_path {prefix}/tmp;
{http}
}}
"""


def start_verifier(prefix: Path) -> subprocess.Popen[bytes]:
    socket_path = prefix / "verifier.sock"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "condaport.verifier",
            "--socket",
            str(socket_path),
            "--auth-dir",
            str(prefix / "auth"),
        ]
    )
    for _ in range(100):
        if socket_path.exists():
            socket_path.chmod(0o666)  # NGINX's workers run as nobody here
            return process
        time.sleep(0.05)
    process.kill()
    raise RuntimeError("the verifier did not create its socket")


def wrk(url: str, duration: int) -> float:
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    out = subprocess.run(
        ["wrk", "-t2", "-c10", f"-d{duration}s", "-H", f"Authorization: Basic {token}", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"wrk saw errors for {url}:\n{out}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not match:
        raise RuntimeError(f"no Requests/sec in wrk output:\n{out}")
    return float(match.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--schemes", default=DEFAULT_SCHEMES)
    parser.add_argument("--plain-http", action="store_true", help="measure without TLS")
    args = parser.parse_args()
    for tool in ("nginx", "wrk"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            raise SystemExit(f"{tool} is not installed (apt-get install nginx wrk)")
    specs = args.schemes.split(",")
    with tempfile.TemporaryDirectory(prefix="condaport-bench-") as scratch:
        prefix = Path(scratch)
        prefix.chmod(0o755)  # NGINX's workers run unprivileged and must read the files
        (prefix / "www").mkdir()
        (prefix / "tmp").mkdir()
        (prefix / "auth").mkdir()
        (prefix / "www" / "pkg.conda").write_bytes(b"x" * 100)
        port = free_port()
        tls = ";" if args.plain_http else self_signed(prefix)
        scheme = "http" if args.plain_http else "https"
        (prefix / "nginx.conf").write_text(nginx_conf(prefix, port, specs, tls))
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        verifier = None
        if any(spec.startswith("cached:") for spec in specs):
            if not all(module.exists() for module in LUA_MODULES):
                raise SystemExit("cached mode needs Lua (apt-get install libnginx-mod-http-lua)")
            verifier = start_verifier(prefix)
        subprocess.run([nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf")], check=True)
        try:
            time.sleep(0.3)
            results: dict[str, list[float]] = {spec: [] for spec in specs}
            for _ in range(args.rounds):
                for n, spec in random.sample(list(enumerate(specs)), len(specs)):
                    url = f"{scheme}://127.0.0.1:{port}/s{n}/pkg.conda"
                    results[spec].append(wrk(url, args.duration))
                    # wrk stops, NGINX does not: let a slow hash's queued requests drain
                    # before the next run, or they would be counted against it.
                    time.sleep(SETTLE_SECONDS)
        finally:
            subprocess.run(
                [nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-s", "stop"],
                check=False,
            )
            if verifier is not None:
                verifier.terminate()
                verifier.wait(timeout=10)
    medians = {spec: statistics.median(rates) for spec, rates in results.items()}
    print(
        f"{scheme.upper()}, wrk -t2 -c10, {args.rounds} rounds of {args.duration}s in random"
        " order, 100-byte file on 127.0.0.1"
    )
    print("req/s: median (range); vs no auth: median of each round's ratio to that round's no auth")
    print(f"{'mode:scheme':<30} {'req/s':>10} {'vs no auth':>11}  range")
    for spec, rate in medians.items():
        ratio = "-"
        if "none" in results:
            pairs = zip(results[spec], results["none"], strict=True)
            per_round = [mine / base for mine, base in pairs]
            ratio = f"{statistics.median(per_round):.1%}"
        label = spec if spec.startswith("cached:") or spec == "none" else f"auth_basic:{spec}"
        spread = f"{min(results[spec]):.0f}-{max(results[spec]):.0f}"
        print(f"{label:<30} {rate:>10.1f} {ratio:>11}  {spread}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
