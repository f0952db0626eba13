"""Metrics across the tiers (README "Metrics"): the real Prometheus on the monitoring host
(the balancer's container) has every target of every tier up, and condaport's numbers move
when a package is uploaded to the primary and downloaded through an edge."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.edges.test_edges import RUN, get, request, upload
from tests.support.live import Tiers
from tests.support.pkgbuild import build_conda
from tests.unit.test_metrics import value

DOOR = "/.well-known/condaport/metrics"
# One Prometheus job per tier and exporter: what roles/condaport_monitoring renders.
JOBS = {
    "prometheus",
    *(
        f"condaport_{tier}_{name}"
        for tier in ("primary", "edge")
        for name in ("nginx", "lua", "condaport", "node")
    ),
    "condaport_balancer_haproxy",
    "condaport_balancer_node",
}

# Runs inside the monitoring container: Prometheus' API is on its loopback only.
_API = """
import sys, urllib.parse, urllib.request
url = "http://127.0.0.1:9090/api/v1/" + sys.argv[1]
if len(sys.argv) > 2:
    url += "?" + urllib.parse.urlencode({"query": sys.argv[2]})
with urllib.request.urlopen(url, timeout=30) as answer:
    sys.stdout.write(answer.read().decode())
"""


@pytest.fixture(scope="module")
def token() -> str:
    return json.loads(os.environ["CONDAPORT_EDGES"])["metrics_token"]


def prometheus(tiers: Tiers, *argv: str) -> dict:
    done = subprocess.run(
        ["podman", "exec", tiers.balancer, "python3", "-c", _API, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    answer = json.loads(done.stdout)
    assert answer["status"] == "success", answer
    return answer["data"]


def door(tiers: Tiers, base_url: str, exporter: str, token: str | None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    reply = request(tiers, "GET", f"{base_url}{DOOR}/{exporter}", headers)
    return reply.status, reply.body.decode()


def test_prometheus_has_every_target_of_every_tier_up(tiers: Tiers) -> None:
    deadline, targets = time.monotonic() + 120, []
    while time.monotonic() < deadline:
        targets = prometheus(tiers, "targets")["activeTargets"]
        if targets and all(t["health"] == "up" for t in targets):
            break
        time.sleep(3)
    down = [
        (t["labels"]["job"], t["labels"]["instance"], t["lastError"])
        for t in targets
        if t["health"] != "up"
    ]
    assert not down, down
    assert {t["labels"]["job"] for t in targets} == JOBS
    # Every edge and the primary for each web exporter, the balancer for its two.
    assert len(targets) == 1 + 4 * (1 + len(tiers.edges)) + 2
    print(f"metrics: {len(targets)} targets up in Prometheus")


def test_the_doors_answer_the_token_only(tiers: Tiers, token: str) -> None:
    for base_url in (tiers.primary_url, tiers.edge_url):
        assert door(tiers, base_url, "condaport", None)[0] == 404
        assert door(tiers, base_url, "condaport", token + "x")[0] == 404
        status, text = door(tiers, base_url, "nginx", token)
        assert status == 200 and value(text, "nginx_up") == 1
        # The served certificate's notAfter, read on the host (the scenario's is valid).
        status, text = door(tiers, base_url, "condaport", token)
        expiry = [
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("condaport_certificate_expiry_timestamp_seconds{")
        ]
        assert status == 200 and expiry and min(expiry) > time.time(), text


def test_credential_checks_are_counted_by_nginx(tiers: Tiers, token: str) -> None:
    """The primary asks the verifier (verifier mode); a second request is a cache hit."""

    def checks(result: str) -> float:
        text = door(tiers, tiers.primary_url, "lua", token)[1]
        return value(text, "condaport_auth_checks_total", result=result) or 0

    before = {result: checks(result) for result in ("allowed", "cache_hit", "denied")}
    url = f"{tiers.primary_url}/main/noarch/repodata.json"
    assert get(tiers, url).status == 200
    assert get(tiers, url).status == 200
    wrong = request(tiers, "GET", url, {"Authorization": "Basic " + "d3Jvbmc6d3Jvbmc="})
    assert wrong.status == 401
    after = {result: checks(result) for result in before}
    assert after["allowed"] + after["cache_hit"] >= before["allowed"] + before["cache_hit"] + 2
    assert after["cache_hit"] >= before["cache_hit"] + 1
    assert after["denied"] >= before["denied"] + 1


def test_condaport_metrics_move_after_an_upload_and_a_download(
    tiers: Tiers, token: str, tmp_path: Path
) -> None:
    def uploads_added() -> float:
        status, text = door(tiers, tiers.primary_url, "condaport", token)
        assert status == 200, text
        return value(text, "condaport_uploads_total", method="PUT", result="added") or 0

    def edge_cache(status: str) -> float:
        text = door(tiers, tiers.edge_url, "lua", token)[1]
        return value(text, "condaport_cache_requests_total", status=status) or 0

    before = uploads_added()
    package = build_conda(tmp_path / "dist", f"metrics-{RUN}")
    upload(tiers, package)
    assert uploads_added() == before + 1

    misses, hits = edge_cache("MISS"), edge_cache("HIT")
    url = f"{tiers.edge_url}/main/noarch/{package.name}"
    assert get(tiers, url).status == 200
    assert get(tiers, url).status == 200
    assert edge_cache("MISS") >= misses + 1
    assert edge_cache("HIT") >= hits + 1

    # And Prometheus saw the upload (its next scrape, every few seconds here).
    query = 'sum(condaport_uploads_total{tier="primary",method="PUT",result="added"})'
    deadline, seen = time.monotonic() + 60, 0.0
    while time.monotonic() < deadline:
        result = prometheus(tiers, "query", query)["result"]
        seen = float(result[0]["value"][1]) if result else 0.0
        if seen >= before + 1:
            break
        time.sleep(2)
    assert seen >= before + 1
