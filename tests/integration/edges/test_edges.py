"""Caching edges behind a load balancer (molecule/edges).

Real clients from the controller: uploads to the primary with an upload token, installs
with py-rattler through the balancer and an edge, and plain HTTPS requests for headers
and status codes. The tests run in file order: the last ones stop an edge, then the
primary, and start them again.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import ssl
import statistics
import subprocess
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import pytest

from condaport import shards
from tests.support.client import run_install, write_auth_file
from tests.support.live import Tiers
from tests.support.pkgbuild import build_conda

RUN = hashlib.sha256(str(time.time()).encode()).hexdigest()[:6]
CACHE_HEADER = "X-Condaport-Cache"
# Index files a client may ask for, in the order rattler probes them.
INDEX_FILES = ("repodata_shards.msgpack.zst", "repodata.json.zst", "repodata.json")


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    headers: http.client.HTTPMessage


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def request(tiers: Tiers, method: str, url: str, headers=None, body: bytes | None = None) -> Reply:
    parts = urllib.parse.urlsplit(url)
    context = ssl.create_default_context(cafile=str(tiers.ca_file))
    conn = http.client.HTTPSConnection(parts.hostname, parts.port, context=context, timeout=60)
    try:
        conn.request(method, parts.path, body=body, headers=headers or {})
        answer = conn.getresponse()
        return Reply(answer.status, answer.read(), answer.headers)
    finally:
        conn.close()


def get(tiers: Tiers, url: str, user: str | None = "reader") -> Reply:
    headers = basic(user, tiers.passwords[user]) if user else {}
    return request(tiers, "GET", url, headers)


def upload(tiers: Tiers, package: Path, channel: str = "main") -> None:
    reply = request(
        tiers,
        "PUT",
        f"{tiers.primary_url}/{channel}/noarch/{package.name}",
        {"Authorization": f"Bearer {tiers.upload_token}"},
        package.read_bytes(),
    )
    assert reply.status == 201, (reply.status, reply.body[:300])


def install(tiers: Tiers, base_url: str, spec: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """py-rattler installs `spec` from main, as reader, with a fresh prefix and cache."""
    url = f"{base_url}/main"
    scratch = tmp_path / f"client-{time.monotonic_ns()}"
    scratch.mkdir()
    auth = write_auth_file(scratch / "auth.json", url, "reader", tiers.passwords["reader"])
    return run_install(
        url,
        [spec],
        scratch / "env",
        auth_file=auth,
        ca_file=tiers.ca_file,
        cache_dir=scratch / "cache",
    )


def podman(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", *argv], capture_output=True, text=True, check=check, timeout=120
    )


# Runs inside a container with its own python3: GET a URL trusting the host's CA and print
# the status; the Authorization header comes on stdin, never in a process argument.
_INSIDE = """
import ssl, sys, urllib.request, urllib.error
req = urllib.request.Request(sys.argv[1])
auth = sys.stdin.read().strip()
if auth:
    req.add_header("Authorization", auth)
ctx = ssl.create_default_context(cafile="/etc/condaport/tls/ca.crt")
try:
    with urllib.request.urlopen(req, context=ctx, timeout=30) as r:
        r.read(); print(r.status)
except urllib.error.HTTPError as e:
    print(e.code)
except Exception as e:
    print(0)
"""


def fetch_inside(container: str, url: str, authorization: str = "") -> int:
    result = subprocess.run(
        ["podman", "exec", "-i", container, "python3", "-c", _INSIDE, url],
        input=authorization,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return int(result.stdout.strip() or 0)


def edge_port(tiers: Tiers, container: str) -> int:
    return 21444 + tiers.edges.index(container)


def warm(tiers: Tiers, container: str, files: list[str]) -> None:
    """Ask one edge, from inside its container, for the index files and `files` of main."""
    auth = basic("reader", tiers.passwords["reader"])["Authorization"]
    base = f"https://localhost:{edge_port(tiers, container)}/main"
    paths = [f"{s}/{f}" for s in ("noarch", "linux-64") for f in INDEX_FILES] + files
    for path in paths:
        assert fetch_inside(container, f"{base}/{path}", auth) in (200, 404), path


def shard_of(tiers: Tiers, name: str, subdir: str = "noarch") -> str:
    """The path of a package name's shard, as the primary's shard index names it (a client
    fetches it, content-addressed, to solve for that name)."""
    index = get(tiers, f"{tiers.primary_url}/main/{subdir}/{shards.SHARD_INDEX}")
    assert index.status == 200, index.status
    digest = shards.decode(index.body)["shards"][name]
    return f"{subdir}/{shards.SHARDS_FOLDER}/{digest.hex()}{shards.SHARD_SUFFIX}"


def wait_installable(tiers: Tiers, spec: str, tmp_path: Path, limit: float = 90) -> float:
    """Seconds until py-rattler installs `spec` through the balancer."""
    start = time.monotonic()
    while True:
        result = install(tiers, tiers.balancer_url, spec, tmp_path)
        if result.returncode == 0:
            return time.monotonic() - start
        assert time.monotonic() - start < limit, result.stderr[-1500:]
        time.sleep(0.3)


def stop_host(container: str) -> dict[str, tuple[str, str]]:
    """`podman stop` a host; returns its (IP, MAC) on each network, to start it with again."""
    inspected = podman("inspect", container, "--format", "{{json .NetworkSettings.Networks}}")
    networks = json.loads(inspected.stdout)
    podman("stop", "--time", "5", container)
    return {name: (net["IPAddress"], net["MacAddress"]) for name, net in networks.items()}


def start_host(container: str, addresses: dict[str, tuple[str, str]]) -> None:
    """Start a stopped host with the addresses it had, as a rebooted host comes back. Podman
    would hand out a new IP, which the others learn only from a reload, and a new MAC,
    which they learn only when their neighbour entry for the IP expires."""
    for network, (ip, mac) in addresses.items():
        podman("network", "disconnect", network, container)
        podman("network", "connect", "--ip", ip, "--mac-address", mac, network, container)
    podman("start", container)


def wait_healthy(container: str, port: int, limit: float = 60) -> None:
    start = time.monotonic()
    url = f"https://localhost:{port}/.well-known/condaport/health"
    while True:
        try:
            if fetch_inside(container, url) == 200:
                return
        except subprocess.CalledProcessError:
            pass
        assert time.monotonic() - start < limit, f"{container} did not come back"
        time.sleep(1)


# -- publish to visible ------------------------------------------------------------------


def test_a_publish_installs_through_the_balancer_within_seconds(
    tiers: Tiers, tmp_path: Path
) -> None:
    """Edges cache repodata only for the index validity: a new package shows within it."""
    # Warm the edges' index files, so each round measures a cached index going stale.
    for edge in tiers.edges:
        warm(tiers, edge, [])
    waits = []
    for i in range(4):
        name = f"edgepub-{RUN}-{i}"
        upload(tiers, build_conda(tmp_path / "dist", name))
        waits.append(wait_installable(tiers, name, tmp_path))
    print(
        f"\npublish-to-visible through the balancer (validity {tiers.index_validity} s): "
        f"p50 {statistics.median(waits):.1f} s, max {max(waits):.1f} s, rounds {len(waits)}"
    )
    # Validity, then one revalidation and a client run; far below "stale forever".
    assert max(waits) < tiers.index_validity + 30


# -- the cache -----------------------------------------------------------------------------


def test_token_and_plain_urls_share_one_cached_object(tiers: Tiers, tmp_path: Path) -> None:
    package = build_conda(tmp_path / "dist", f"edgekey-{RUN}")
    upload(tiers, package)
    reader_token = tiers.tokens["reader"][0]
    robot_token = tiers.tokens["robot"][0]
    first = get(tiers, f"{tiers.edge_url}/t/{reader_token}/main/noarch/{package.name}", None)
    assert first.status == 200, first.status
    assert first.headers[CACHE_HEADER] == "MISS"
    plain = get(tiers, f"{tiers.edge_url}/main/noarch/{package.name}")
    other_token = get(tiers, f"{tiers.edge_url}/t/{robot_token}/main/noarch/{package.name}", None)
    for reply in (plain, other_token):
        assert reply.status == 200
        assert reply.headers[CACHE_HEADER] == "HIT"
        assert reply.body == package.read_bytes()
    # As immutable as on the primary.
    assert "immutable" in plain.headers["Cache-Control"]


def test_index_files_are_revalidated_after_the_validity(tiers: Tiers) -> None:
    url = f"{tiers.edge_url}/main/noarch/repodata.json"
    get(tiers, url)
    again = get(tiers, url)
    assert again.headers[CACHE_HEADER] == "HIT"
    time.sleep(tiers.index_validity + 1)
    later = get(tiers, url)
    assert later.status == 200
    assert later.headers[CACHE_HEADER] in ("EXPIRED", "REVALIDATED"), later.headers[CACHE_HEADER]


# -- access: a client sees no difference ---------------------------------------------------


def _headers_for(tiers: Tiers, who: str) -> tuple[str, dict[str, str]]:
    """(path prefix, headers) for a kind of client."""
    if who == "none":
        return "", {}
    if who == "wrong-password":
        return "", basic("reader", "certainly-not-the-password")
    if who == "unknown-token":
        return "/t/not-a-token-0123456789abcdef", {}
    if who.endswith("-token"):
        return f"/t/{tiers.tokens[who.removesuffix('-token')][0]}", {}
    return "", basic(who, tiers.passwords[who])


CLIENTS = (
    "none",
    "wrong-password",
    "unknown-token",
    "reader",
    "reader-token",
    "robot-token",
    "partner",
)
# What the primary promises; the edge must answer exactly the same.
EXPECTED = {
    ("main", "none"): 401,
    ("main", "reader"): 200,
    ("main", "reader-token"): 200,
    ("main", "robot-token"): 200,
    ("partner", "partner"): 200,
    ("public", "none"): 200,
    ("main", "unknown-token"): 401,
    ("main", "wrong-password"): 401,
}


@pytest.mark.parametrize("channel", ["main", "partner", "public"])
def test_the_edge_enforces_the_primarys_access_rules(tiers: Tiers, channel: str) -> None:
    for who in CLIENTS:
        prefix, headers = _headers_for(tiers, who)
        path = f"{prefix}/{channel}/noarch/repodata.json"
        at_primary = request(tiers, "GET", tiers.primary_url + path, headers).status
        at_edge = request(tiers, "GET", tiers.edge_url + path, headers).status
        assert at_edge == at_primary, (channel, who, at_edge, at_primary)
        if (channel, who) in EXPECTED:
            assert at_edge == EXPECTED[(channel, who)], (channel, who, at_edge)
    if channel == "partner":
        _, headers = _headers_for(tiers, "reader")
        assert (
            request(tiers, "GET", f"{tiers.edge_url}/partner/noarch/repodata.json", headers).status
            != 200
        )


def test_the_edge_takes_no_uploads(tiers: Tiers, tmp_path: Path) -> None:
    package = build_conda(tmp_path / "dist", f"edgeput-{RUN}")
    for headers in (
        {"Authorization": f"Bearer {tiers.upload_token}"},
        basic("reader", tiers.passwords["reader"]),
    ):
        reply = request(
            tiers,
            "PUT",
            f"{tiers.edge_url}/main/noarch/{package.name}",
            headers,
            package.read_bytes(),
        )
        assert reply.status in (401, 403, 405), reply.status
    listed = json.loads(get(tiers, f"{tiers.primary_url}/main/noarch/repodata.json").body)
    assert package.name not in listed.get("packages.conda", {})


def test_the_health_page_needs_no_credentials(tiers: Tiers) -> None:
    reply = request(tiers, "GET", f"{tiers.edge_url}/.well-known/condaport/health")
    assert reply.status == 200 and reply.body.strip() == b"ok"


# -- failures --------------------------------------------------------------------------------


def test_losing_an_edge_fails_no_install(tiers: Tiers, tmp_path: Path) -> None:
    name = f"edgeloss-{RUN}"
    upload(tiers, build_conda(tmp_path / "dist", name))
    wait_installable(tiers, name, tmp_path)
    victim = tiers.edges[-1]
    addresses: dict[str, tuple[str, str]] = {}
    stopper = threading.Thread(target=lambda: addresses.update(stop_host(victim)))
    results = []
    try:
        for i in range(8):
            if i == 1:
                stopper.start()
            results.append(install(tiers, tiers.balancer_url, name, tmp_path))
    finally:
        if stopper.is_alive() or addresses:
            stopper.join()
            start_host(victim, addresses)
    failures = [r.stderr[-500:] for r in results if r.returncode != 0]
    print(
        f"\ninstalls through the balancer while {victim} stopped: {len(results)},"
        f" failed: {len(failures)}"
    )
    assert failures == []
    wait_healthy(victim, edge_port(tiers, victim))


def test_while_the_primary_is_down_edges_serve_what_they_hold(tiers: Tiers, tmp_path: Path) -> None:
    name = f"edgestale-{RUN}"
    package = build_conda(tmp_path / "dist", name)
    upload(tiers, package)
    wait_installable(tiers, name, tmp_path)
    # An edge may still hold an index from before the upload (within its validity): once
    # that has expired, warming makes each edge fetch the index that names the package.
    time.sleep(tiers.index_validity + 1)
    for edge in tiers.edges:
        warm(tiers, edge, [f"noarch/{package.name}", shard_of(tiers, name)])
    addresses = stop_host(tiers.primary)
    try:
        time.sleep(tiers.index_validity + 1)
        result = install(tiers, tiers.balancer_url, name, tmp_path)
        assert result.returncode == 0, result.stderr[-1500:]
        index = get(tiers, f"{tiers.edge_url}/main/noarch/repodata.json")
        assert index.status == 200
        assert index.headers[CACHE_HEADER] == "STALE"
        missing = get(tiers, f"{tiers.edge_url}/main/noarch/never-cached-{RUN}-1.0-0.conda")
        assert missing.status in (502, 504), missing.status
        # The credentials are still checked while the primary is away.
        assert get(tiers, f"{tiers.edge_url}/main/noarch/repodata.json", None).status == 401
    finally:
        start_host(tiers.primary, addresses)
    wait_healthy(tiers.primary, 21443)
    # Back at its address: the edges take it back by themselves (no reload), and a new
    # publish reaches the clients through them again.
    later = f"edgeback-{RUN}"
    later_package = build_conda(tmp_path / "dist", later)
    upload(tiers, later_package)
    waited = wait_installable(tiers, later, tmp_path)
    # Each edge, not only the one the balancer picked, fetches from the primary again.
    auth = basic("reader", tiers.passwords["reader"])["Authorization"]
    for edge in tiers.edges:
        url = f"https://localhost:{edge_port(tiers, edge)}/main/noarch/{later_package.name}"
        assert fetch_inside(edge, url, auth) == 200, edge
    print(
        f"\nafter the primary came back, a publish installed through the balancer in {waited:.1f} s"
    )


# -- secrets ------------------------------------------------------------------------------------


def test_no_credential_or_token_in_any_cache_file(tiers: Tiers) -> None:
    secrets = [*tiers.passwords.values(), tiers.upload_token]
    secrets += [t for tokens in tiers.tokens.values() for t in tokens]
    secrets += [basic(u, p)["Authorization"].split()[1] for u, p in tiers.passwords.items()]
    for edge in tiers.edges:
        files = podman("exec", edge, "find", tiers.cache_dir, "-type", "f").stdout.split()
        assert len(files) > 3, f"{edge} cached nothing"
        argv = ["exec", "-i", edge, "grep", "-rlF", "-f", "/dev/stdin", tiers.cache_dir]
        found = subprocess.run(
            ["podman", *argv],
            input="\n".join(secrets) + "\n",
            capture_output=True,
            text=True,
            check=False,
        )
        assert found.returncode == 1, f"{edge}: secrets in {found.stdout} {found.stderr}"
