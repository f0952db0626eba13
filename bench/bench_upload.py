"""Upload-to-installable latency of the upload service in a large channel.

Builds a channel whose noarch subdir holds N small packages (default 10,000), indexes it
fully once (timed: what every upload would cost without the in-place update), then starts
condaport-upload on a unix socket and sends one new package at a time, as NGINX would
forward it, timing each request until its answer (which comes only once repodata.json and
repodata.json.zst list the package). A client installs the last one with py-rattler from
the channel directory to prove the answer meant installable. Prints numbers; asserts
nothing. NGINX and TLS are not in the path (they add a few ms on loopback).

Usage: python -m bench.bench_upload [--packages 10000] [--uploads 30]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

from condaport import index
from condaport.upload import build_server
from tests.support.client import run_install
from tests.support.pkgbuild import build_tar_bz2
from tests.unit.test_upload import UnixConnection


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--packages", type=int, default=10_000)
    parser.add_argument("--uploads", type=int, default=30)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        channels, state = root / "channels", root / "state"
        noarch = channels / "main" / "noarch"
        noarch.mkdir(parents=True)
        (root / "staging").mkdir()
        started = time.perf_counter()
        for n in range(args.packages):
            build_tar_bz2(noarch, f"pkg{n:05d}")
        print(f"built {args.packages} packages in {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        index.run(channels, state, None)
        full = time.perf_counter() - started
        print(f"full index of {args.packages} packages: {full:.2f} s")
        config, settings = root / "condaport.json", root / "upload.json"
        config.write_text(
            json.dumps(
                {
                    "channels_root": str(channels),
                    "staging_root": str(root / "staging"),
                    "state_dir": str(state),
                    "channels": [{"name": "main", "subdirs": ["noarch"]}],
                }
            )
        )
        settings.write_text(json.dumps({"channels": {"main": {"token:bench": {}}}}))
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(root / "upload.sock"))
        listener.listen(16)
        server = build_server(listener, config, settings, workers=2)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        dist = root / "dist"
        timings = []
        for n in range(args.uploads):
            package = build_tar_bz2(dist, f"fresh{n:03d}")
            body = package.read_bytes()
            connection = UnixConnection(root / "upload.sock")
            started = time.perf_counter()
            connection.request(
                "PUT",
                f"/artifactory/main/noarch/{package.name}",
                body=body,
                headers={"X-Condaport-Uploader": "token:bench"},
            )
            response = connection.getresponse()
            answer = json.loads(response.read())
            timings.append(time.perf_counter() - started)
            connection.close()
            assert response.status == 201, answer
        server.shutdown()
        result = run_install(
            channels.joinpath("main").as_uri(),
            [f"fresh{args.uploads - 1:03d}"],
            root / "env",
            auth_file=None,
            ca_file=None,
            cache_dir=root / "cache",
        )
        ordered = sorted(timings)
        print(
            f"upload to installable, {args.packages}-package subdir, {args.uploads} uploads: "
            f"p50 {statistics.median(timings) * 1000:.0f} ms, "
            f"p90 {ordered[int(len(ordered) * 0.9) - 1] * 1000:.0f} ms, "
            f"max {ordered[-1] * 1000:.0f} ms (indexed: {answer.get('indexed')}); "
            f"install of the last one: {'ok' if result.returncode == 0 else result.stderr[-300:]}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
