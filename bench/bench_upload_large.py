"""Upload of one large package (default 1 GiB) through the upload service: throughput and
the service's peak memory.

Builds a .conda offline whose payload is one incompressible (random) file, starts
`condaport-upload` as its own process on a unix socket (as systemd would, without NGINX
or TLS in the path: the service alone over its socket, as NGINX forwards uploads to it),
sends the package with a Content-Length body streamed from disk, and waits for the answer,
which comes once the package is validated, placed and indexed. Prints the throughput of
the whole request (body sent to answer received: what a CI job waits for), how long the
body took to send, and the service's peak resident memory (VmHWM of /proc/<pid>/status),
before and after the upload; target <= 100 MB. Asserts nothing.

Usage: python -m bench.bench_upload_large [--size-mib 1024] [--workdir DIR] [--unindexed]
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from condaport import index
from tests.support.pkgbuild import build_large_conda

MIB = 1 << 20


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = str(path)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.socket_path)


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in KiB."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0])
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--workdir", type=Path, help="scratch folder (needs ~4x the size free)")
    parser.add_argument(
        "--unindexed", action="store_true", help="upload into a subdir that was never indexed"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.workdir) as scratch:
        root = Path(scratch)
        channels, state, staging = root / "channels", root / "state", root / "staging"
        (channels / "main" / "noarch").mkdir(parents=True)
        staging.mkdir()
        started = time.perf_counter()
        package = build_large_conda(root / "dist", args.size_mib * MIB)
        size = package.stat().st_size
        print(
            f"built {package.name}: {size / MIB:.0f} MiB in {time.perf_counter() - started:.0f} s"
        )
        config, settings = root / "condaport.json", root / "upload.json"
        config.write_text(
            json.dumps(
                {
                    "channels_root": str(channels),
                    "staging_root": str(staging),
                    "state_dir": str(state),
                    "channels": [{"name": "main", "subdirs": ["noarch"]}],
                }
            )
        )
        settings.write_text(json.dumps({"channels": {"main": {"token:bench": {}}}}))
        # As a converge leaves it: the subdir indexed, so the upload takes the production
        # path (validated, placed, the record edited into repodata in place).
        # --unindexed: a subdir never indexed (the fallback: a full index of the subdir).
        if not args.unindexed:
            index.run(channels, state, None)
        listening = root / "upload.sock"
        service = subprocess.Popen(
            [sys.executable, "-m", "condaport.upload", "--config", str(config)]
            + ["--settings", str(settings), "--socket", str(listening), "--workers", "2"],
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 60
            while not listening.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            idle = memory_kib(service.pid)
            connection = UnixConnection(listening, timeout=3600)
            started = time.perf_counter()
            connection.putrequest("PUT", f"/artifactory/main/noarch/{package.name}")
            connection.putheader("X-Condaport-Uploader", "token:bench")
            connection.putheader("Content-Length", str(size))
            connection.endheaders()
            with package.open("rb") as body:
                for block in iter(lambda: body.read(MIB), b""):
                    connection.send(block)
            sent = time.perf_counter() - started
            response = connection.getresponse()
            answer = json.loads(response.read())
            total = time.perf_counter() - started
            peak = memory_kib(service.pid)
        finally:
            service.terminate()
            _, log = service.communicate(timeout=30)
        placed = channels / "main" / "noarch" / package.name
        listed = package.name in json.loads((placed.parent / "repodata.json").read_text()).get(
            "packages.conda", {}
        )
        print(
            f"path measured: the upload service alone (python -m condaport.upload, 2 workers) over"
            f" its unix socket, no NGINX/TLS; PUT /artifactory/main/noarch/{package.name},"
            f" Content-Length body streamed from disk"
        )
        print(
            f"answer HTTP {response.status} {answer.get('result', answer.get('error'))}"
            f" (indexed: {answer.get('indexed')}, placed: {placed.is_file()},"
            f" in repodata: {listed})"
        )
        print(
            f"{size / MIB:.0f} MiB: body sent in {sent:.1f} s ({size / MIB / sent:.0f} MiB/s);"
            f" until the answer (validated, placed, indexed) {total:.1f} s:"
            f" throughput {size / 1e6 / total:.0f} MB/s"
        )
        print(
            f"upload service memory: idle RSS {idle['VmRSS'] / 1024:.0f} MiB;"
            f" peak RSS (VmHWM) {peak['VmHWM'] / 1024:.0f} MiB"
            f" ({peak['VmHWM'] * 1024 / 1e6:.0f} MB; target <= 100 MB)"
        )
        if response.status >= 400:
            print(log[-2000:])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
