"""Index and publish timings for channels of 1,000 and 10,000 small packages.

Measures, per channel size: a cold index of the full subdir; a re-index after one package
is added; and publish-to-installable: one new package staged, validated, placed, indexed
and then installed by py-rattler through NGINX (HTTPS, basic auth) on 127.0.0.1. Where
conda-index is importable (CONDAPORT_CONDA_PYTHON, default this python) it is measured
beside rattler. Prints a table; nothing is asserted.

Usage: python bench/bench_index.py [--sizes 1000,10000]
"""

from __future__ import annotations

import argparse
import functools
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from condaport import index, publish
from tests.support.client import run_install, write_auth_file
from tests.support.pkgbuild import build_conda, build_tar_bz2

REPO = Path(__file__).resolve().parents[1]


USER, PASSWORD = "bench", "bench-password-1234"


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def make_channel(root: Path, count: int) -> None:
    noarch = root / "main" / "noarch"
    noarch.mkdir(parents=True)
    (root / "main" / "linux-64").mkdir()
    for n in range(count):
        build_tar_bz2(noarch, f"pkg{n:05d}", version="1.0", build="0")


def conda_python() -> str | None:
    import os

    python = os.environ.get("CONDAPORT_CONDA_PYTHON", sys.executable)
    probe = subprocess.run([python, "-c", "import conda_index"], capture_output=True)
    return python if probe.returncode == 0 else None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def make_tls(prefix: Path) -> None:
    """A CA and a localhost leaf it signs: rustls refuses a CA used as the server cert."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=prefix)

    curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    openssl(
        "req",
        "-x509",
        *curve,
        "-days",
        "1",
        "-subj",
        "/CN=bench CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    )
    openssl("req", *curve, "-subj", "/CN=localhost", "-keyout", "key.pem", "-out", "leaf.csr")
    (prefix / "leaf.ext").write_text("subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n")
    openssl(
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "leaf.ext",
        "-out",
        "cert.pem",
    )


class Nginx:
    """A throwaway NGINX with TLS and basic auth serving `channels_root` on 127.0.0.1."""

    def __init__(self, prefix: Path, channels_root: Path) -> None:
        from passlib.hash import sha512_crypt

        self.prefix, self.port = prefix, free_port()
        prefix.mkdir(parents=True, exist_ok=True)
        prefix.chmod(0o755)
        (prefix / "tmp").mkdir(exist_ok=True)
        (prefix / "users").write_text(f"{USER}:{sha512_crypt.using(rounds=5000).hash(PASSWORD)}\n")
        make_tls(prefix)
        (prefix / "nginx.conf").write_text(f"""
worker_processes 2;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log;
events {{ worker_connections 256; }}
http {{
    include /etc/nginx/mime.types;
    access_log off;
    client_body_temp_path {prefix}/tmp; proxy_temp_path {prefix}/tmp;
    fastcgi_temp_path {prefix}/tmp; uwsgi_temp_path {prefix}/tmp; scgi_temp_path {prefix}/tmp;
    server {{
        listen 127.0.0.1:{self.port} ssl;
        ssl_certificate {prefix}/cert.pem; ssl_certificate_key {prefix}/key.pem;
        root {channels_root};
        location ~ /\\. {{ return 404; }}
        location / {{ auth_basic "bench"; auth_basic_user_file {prefix}/users;
                     try_files $uri =404; }}
    }}
}}
""")
        self.nginx = shutil.which("nginx") or "/usr/sbin/nginx"

    def __enter__(self) -> Nginx:
        subprocess.run(
            [self.nginx, "-p", str(self.prefix), "-c", str(self.prefix / "nginx.conf")], check=True
        )
        time.sleep(0.2)
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run(
            [
                self.nginx,
                "-p",
                str(self.prefix),
                "-c",
                str(self.prefix / "nginx.conf"),
                "-s",
                "stop",
            ],
            capture_output=True,
        )


def publish_to_installable(
    root: Path, state: Path, scratch: Path, server: Nginx, name: str
) -> float:
    staging = scratch / f"staging-{name}"
    package = build_conda(staging, name, version="1.0", build="0")
    channel_url = f"https://localhost:{server.port}/main"
    auth = write_auth_file(scratch / "auth.json", channel_url, USER, PASSWORD)
    start = time.perf_counter()
    outcome = publish.place(root, state, "main", staging, ["noarch", "linux-64"])
    assert outcome.added, outcome
    index.run(root, state, ["main"])
    result = run_install(
        channel_url,
        [name],
        scratch / f"env-{name}",
        auth_file=auth,
        ca_file=server.prefix / "ca.pem",
        cache_dir=scratch / f"c-{name}",
    )
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"install failed: {result.stderr}")
    assert package.name
    return elapsed


def bench_size(count: int, scratch: Path, conda_py: str | None) -> dict[str, float]:
    numbers: dict[str, float] = {}
    for backend in ["rattler"] + (["conda-index"] if conda_py else []):
        root, state = (
            scratch / f"{backend}-{count}" / "channels",
            scratch / f"{backend}-{count}" / "state",
        )
        t0 = time.perf_counter()
        make_channel(root, count)
        numbers["generate packages"] = time.perf_counter() - t0
        run_index = functools.partial(
            index.run, root, state, ["main"], backend=backend, conda_python=conda_py
        )
        numbers[f"{backend}: cold index"] = timed(run_index)
        build_tar_bz2(root / "main" / "noarch", "one-more", version="1.0", build="0")
        numbers[f"{backend}: re-index after +1"] = timed(run_index)
        if backend == "rattler":
            with Nginx(scratch / f"nginx-{count}", root) as server:
                publish_to_installable(root, state, scratch, server, "warmup-client")
                numbers["rattler: publish -> installable (HTTPS+auth)"] = publish_to_installable(
                    root, state, scratch, server, "fresh-package"
                )
        repodata = root / "main" / "noarch" / "repodata.json"
        numbers[f"{backend}: repodata.json MB"] = repodata.stat().st_size / 1e6
    return numbers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000")
    args = parser.parse_args()
    conda_py = conda_python()
    print(
        "conda-index:",
        "available"
        if conda_py
        else "not importable here (needs a conda installation); rattler only",
    )
    with tempfile.TemporaryDirectory(prefix="condaport-bench-") as scratch:
        Path(scratch).chmod(0o755)  # NGINX's unprivileged workers read the channel from here
        for count in (int(s) for s in args.sizes.split(",")):
            numbers = bench_size(count, Path(scratch), conda_py)
            print(f"\n{count} packages")
            for label, value in numbers.items():
                unit = "" if label.endswith("MB") else " s"
                print(f"  {label:<48} {value:8.2f}{unit}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
