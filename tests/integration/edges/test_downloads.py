"""Download counts across the tiers (molecule/edges): N installs through the balancer, an
edge and the primary give exactly N at /api/channels/<channel>/downloads, however often
the counters run, and the counts are as private as the channel."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.integration.edges.test_edges import RUN, basic, install, podman, request, upload
from tests.support.live import Tiers
from tests.support.pkgbuild import build_conda

# NGINX flushes the download log's buffer at most this many seconds after a line.
LOG_FLUSH = 5


def _count_now(tiers: Tiers) -> None:
    """Run every counter once, edges first (they report to the primary's counter)."""
    time.sleep(LOG_FLUSH + 1)
    for edge in tiers.edges:
        podman("exec", edge, "systemctl", "start", "condaport-downloads.service")
    podman("exec", tiers.primary, "systemctl", "start", "condaport-downloads.service")


def _downloads(tiers: Tiers, base_url: str, user: str | None = "reader") -> tuple[int, dict]:
    headers = basic(user, tiers.passwords[user]) if user else {}
    reply = request(tiers, "GET", f"{base_url}/api/channels/main/downloads", headers)
    return reply.status, json.loads(reply.body) if reply.status == 200 else {}


def test_n_installs_give_n(tiers: Tiers, tmp_path: Path) -> None:
    name = f"dlcount-{RUN}"
    upload(tiers, build_conda(tmp_path / "dist", name))
    time.sleep(tiers.index_validity + 1)  # the edges see the new repodata
    ways = {tiers.balancer_url: 3, tiers.edge_url: 2, tiers.primary_url: 2}
    for base_url, times in ways.items():
        for _ in range(times):
            result = install(tiers, base_url, name, tmp_path)
            assert result.returncode == 0, result.stderr[-2000:]
    expected = sum(ways.values())
    _count_now(tiers)
    status, document = _downloads(tiers, tiers.primary_url)
    assert status == 200
    package = document["packages"][name]
    print(f"\ndownloads of {name}: {package['ndownloads']} for {expected} installs")
    assert package["ndownloads"] == expected
    assert [f["ndownloads"] for f in package["files"]] == [expected]
    # Counters run again (a timer, a retried report): nothing counts twice.
    _count_now(tiers)
    assert _downloads(tiers, tiers.primary_url)[1]["packages"][name]["ndownloads"] == expected


def test_the_counts_are_as_private_as_the_channel(tiers: Tiers) -> None:
    for base_url in (tiers.primary_url, tiers.balancer_url):
        assert _downloads(tiers, base_url, user=None)[0] == 401
        assert _downloads(tiers, base_url, user="partner")[0] in (401, 403)
        assert _downloads(tiers, base_url)[0] == 200
