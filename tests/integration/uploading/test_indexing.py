"""In-place indexing: the answer to an upload comes once repodata lists the package, in a
small channel and in one of 10,000 packages (the latency is printed, not asserted)."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import pytest

from tests.support.pkgbuild import build_tar_bz2
from tests.support.playbook import copy_to_host
from uploading.site import RUN, TREE, Connection, Site, credentials, installs, listed, on_host


@pytest.mark.basic_mode
def test_uploads_into_a_small_channel_are_indexed_in_place(site: Site, tmp_path: Path) -> None:
    """Upload start to installable (the answer comes once repodata lists it)."""
    timings = []
    connection = Connection(site)
    headers = credentials(site, "bearer:ci-main")
    for n in range(20):
        package = build_tar_bz2(tmp_path, f"quick-{site.mode}-{RUN}-{n:02d}")
        started = time.monotonic()
        reply = connection.send(
            "PUT", f"/main/noarch/{package.name}", package.read_bytes(), headers
        )
        timings.append(time.monotonic() - started)
        assert reply.status == 201, reply
    connection.close()
    assert all(
        f"quick-{site.mode}-{RUN}-{n:02d}-1.0-0.tar.bz2" in listed(site, "main") for n in range(20)
    )
    p50 = statistics.median(timings)
    print(
        f"upload latency ({site.mode}): p50 {p50 * 1000:.0f} ms, max {max(timings) * 1000:.0f} ms"
    )
    # A number to read, not a pass mark: speed targets live in bench/ (load skews it here).


def test_an_upload_into_a_ten_thousand_package_channel_is_indexed_in_place(
    site: Site, tmp_path: Path
) -> None:
    """The in-place index update keeps an upload cheap in a large subdir, where a full
    index takes seconds: the answer (which comes once repodata lists the package) is the
    moment it can be installed."""
    bulk = tmp_path / "bulk"
    for n in range(10_000):
        build_tar_bz2(bulk, f"bulk{n:05d}")
    copy_to_host(site.container, bulk, f"{TREE}/big/noarch")
    started = time.monotonic()
    on_host(site, "condaport-index", "run", "--channel", "big")
    full = time.monotonic() - started
    assert len(listed(site, "big")) >= 10_000
    timings = []
    connection = Connection(site)
    for n in range(10):
        package = build_tar_bz2(tmp_path / "new", f"big-{site.mode}-{RUN}-{n}")
        started = time.monotonic()
        reply = connection.send(
            "PUT",
            f"/big/noarch/{package.name}",
            package.read_bytes(),
            credentials(site, "uploader"),
        )
        timings.append(time.monotonic() - started)
        assert (reply.status, reply.body.get("indexed")) == (201, "incremental"), reply
    connection.close()
    installs(site, tmp_path, "big", f"big-{site.mode}-{RUN}-9")
    p50 = statistics.median(timings)
    print(
        f"10,000-package channel: full index {full:.1f} s; upload to installable "
        f"p50 {p50 * 1000:.0f} ms, max {max(timings) * 1000:.0f} ms"
    )
    # A number to read, not a pass mark: speed targets live in bench/ (load skews it here).
