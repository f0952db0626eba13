"""Upload-to-installable over HTTPS, through NGINX with TLS and an upload token, into a
channel of 10,000 packages: the path a CI job takes.

Runs against the demo host (`make demo` first: container condaport-demo, channel `bench`
as its scratch channel). Fills `bench/noarch` with N small packages once (copied into the
container and fully indexed, timed: the cost every upload would pay without the in-place
update), then, each round, uploads 20 new packages one after another over one keep-alive
HTTPS connection with the demo's upload token, timing each request until its answer
(which comes only once repodata.json and .zst list the package), and the same into `main`
(a channel of a few packages) in the same round, for the ratio. After the last round
py-rattler installs the last package through auth (the answer meant installable), and
that install is timed too. Prints numbers; asserts nothing.

Usage: python -m bench.bench_upload_https [--packages 10000] [--uploads 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import http.client
import os
import ssl
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.client import run_install, write_auth_file
from tests.support.pkgbuild import build_tar_bz2
from tests.support.playbook import copy_to_host

REPO = Path(__file__).resolve().parents[1]
CONTAINER = "condaport-demo"
HOST, PORT = "localhost", 8443
CA = REPO / "artifacts" / "ca" / f"{CONTAINER}.crt"
CHANNELS_ROOT = "/srv/condaport/channels"
USER = "demo"


def password() -> str:
    return os.environ.get("CONDAPORT_DEMO_PASSWORD", "demo-only-password")


def upload_token() -> str:
    return os.environ.get("CONDAPORT_DEMO_UPLOAD_TOKEN", "demo-only-upload-token-0123456789")


def on_host(*argv: str) -> str:
    return subprocess.run(
        ["podman", "exec", CONTAINER, *argv], check=True, capture_output=True, text=True
    ).stdout


def fill(folder: Path, packages: int) -> None:
    """Put `packages` small packages into bench/noarch and index them once."""
    present = on_host("find", f"{CHANNELS_ROOT}/bench/noarch", "-name", "fill*.tar.bz2")
    if len(present.split()) >= packages:
        print(f"bench/noarch already holds {len(present.split())} packages")
        return
    started = time.perf_counter()
    for n in range(packages):
        build_tar_bz2(folder, f"fill{n:05d}")
    print(f"built {packages} packages in {time.perf_counter() - started:.1f} s")
    copy_to_host(CONTAINER, folder, f"{CHANNELS_ROOT}/bench/noarch")
    started = time.perf_counter()
    on_host("condaport-index", "run", "--channel", "bench")
    print(f"full index of bench ({packages} packages): {time.perf_counter() - started:.1f} s")


def upload_round(folder: Path, channel: str, tag: str, uploads: int) -> list[float]:
    context = ssl.create_default_context(cafile=str(CA))
    connection = http.client.HTTPSConnection(HOST, PORT, context=context, timeout=120)
    headers = {"Authorization": f"Bearer {upload_token()}"}
    timings = []
    try:
        for n in range(uploads):
            package = build_tar_bz2(folder, f"up-{tag}-{n:02d}")
            body = package.read_bytes()
            started = time.perf_counter()
            connection.request("PUT", f"/{channel}/noarch/{package.name}", body, headers)
            response = connection.getresponse()
            answer = response.read()
            timings.append(time.perf_counter() - started)
            if response.status != 201:
                raise SystemExit(f"upload {package.name}: HTTP {response.status} {answer[:200]!r}")
    finally:
        connection.close()
    return timings


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--packages", type=int, default=10_000)
    parser.add_argument("--uploads", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if not CA.exists():
        raise SystemExit(f"{CA} is missing: run `make demo` first")
    run = os.urandom(3).hex()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        fill(root / "fill", args.packages)
        large, small = [], []
        print(f"{'round':>5} {'10k p50':>9} {'10k p95':>9} {'small p50':>10} {'ratio':>6}")
        for r in range(args.rounds):
            big = upload_round(root / f"big{r}", "bench", f"{run}-{r}", args.uploads)
            few = upload_round(root / f"small{r}", "main", f"{run}-{r}", args.uploads)
            large += big
            small += few
            print(
                f"{r + 1:>5} {statistics.median(big) * 1000:>7.0f}ms "
                f"{percentile(big, 0.95) * 1000:>7.0f}ms "
                f"{statistics.median(few) * 1000:>8.0f}ms "
                f"{statistics.median(big) / statistics.median(few):>6.2f}"
            )
        p50, p95 = statistics.median(large), percentile(large, 0.95)
        print(
            f"10,000-package channel, {len(large)} uploads: p50 {p50 * 1000:.0f} ms, "
            f"p95 {p95 * 1000:.0f} ms, max {max(large) * 1000:.0f} ms "
            "(answer = listed in repodata.json and .zst)"
        )
        url = f"https://{HOST}:{PORT}/bench"
        auth = write_auth_file(root / "auth.json", url, USER, password())
        last = f"up-{run}-{args.rounds - 1}-{args.uploads - 1:02d}"
        started = time.perf_counter()
        installed = run_install(
            url, [last], root / "env", auth_file=auth, ca_file=CA, cache_dir=root / "cache"
        )
        if installed.returncode != 0:
            raise SystemExit(f"py-rattler could not install {last}: {installed.stderr[-800:]}")
        print(
            f"py-rattler installed {last} through auth right after its answer "
            f"(solve over {args.packages:,}+ records, cold cache: "
            f"{time.perf_counter() - started:.1f} s)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
