"""The upload service's memory does not grow with the package (issue 12, 1 GiB benchmark).

The service runs as its own process, as under systemd, and its peak resident memory
(VmHWM) is read after it took an 80 MiB package of random bytes. Holding the body, or
letting rattler's full index read the new package whole (620 MB for 256 MiB, measured),
puts the peak far above the 100 MB target; streaming keeps it near the idle size.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.channel_tree import ChannelTree
from tests.support.pkgbuild import build_large_conda
from tests.unit.test_upload import UnixConnection

# One subdir, never indexed before the first upload.
pytestmark = pytest.mark.channels(main=("noarch",))
MIB = 1 << 20
LIMIT_KIB = 100 * 1000 * 1000 // 1024  # 100 MB


def peak_kib(pid: int) -> int:
    """VmHWM: the most resident memory the process ever had, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM for {pid}")


@pytest.fixture
def service(tree: ChannelTree, tmp_path: Path):
    config, settings = tree.config, tmp_path / "upload.json"
    settings.write_text(json.dumps({"channels": {"main": {"token:ci": {}}}}))
    listening = tmp_path / "upload.sock"
    process = subprocess.Popen(
        [sys.executable, "-m", "condaport.upload", "--config", str(config)]
        + ["--settings", str(settings), "--socket", str(listening), "--workers", "1"],
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not listening.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    yield process, listening, tree.subdir("noarch")
    process.terminate()
    process.wait(timeout=30)


def _put(listening: Path, package: Path) -> tuple[int, dict]:
    """As NGINX forwards an upload: the body, read whole before, with its Content-Length."""
    connection = UnixConnection(listening)
    connection.putrequest("PUT", f"/artifactory/main/noarch/{package.name}")
    connection.putheader("X-Condaport-Uploader", "token:ci")
    connection.putheader("Content-Length", str(package.stat().st_size))
    connection.endheaders()
    with package.open("rb") as body:
        for block in iter(lambda: body.read(MIB), b""):
            connection.send(block)
    response = connection.getresponse()
    answer = json.loads(response.read())
    connection.close()
    return response.status, answer


def test_a_large_upload_into_a_never_indexed_subdir_keeps_the_service_small(
    service, tmp_path: Path
) -> None:
    process, listening, noarch = service
    first = build_large_conda(tmp_path / "one", 80 * MIB, name="big-first")
    second = build_large_conda(tmp_path / "two", 80 * MIB, name="big-second")
    # Never indexed: the subdir is indexed fully (without the upload), then edited in place.
    status, answer = _put(listening, first)
    assert (status, answer["indexed"]) == (201, "full"), answer
    # Indexed: the in-place edit alone.
    status, answer = _put(listening, second)
    assert (status, answer["indexed"]) == (201, "incremental"), answer
    listed = json.loads((noarch / "repodata.json").read_text())["packages.conda"]
    assert {first.name, second.name} <= set(listed)
    peak = peak_kib(process.pid)
    assert peak < LIMIT_KIB, f"peak RSS {peak / 1024:.0f} MiB for 80 MiB uploads"
