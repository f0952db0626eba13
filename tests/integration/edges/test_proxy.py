"""A proxy channel (molecule/edges): the primary's `mirror` serves another condaport
channel, the primary's own `main` reached over HTTPS by the primary's name, through
NGINX's cache, with mirror's own readers (partner, who cannot read main itself) and
mirror's own upstream credential (user `mirror`).

Runs after test_edges.py (file order), so the primary has been restarted once already.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from pathlib import Path

from condaport import shards
from tests.support.client import run_install, write_auth_file
from tests.support.live import Tiers
from tests.support.pkgbuild import build_conda

from .test_edges import CACHE_HEADER, RUN, basic, get, podman, request, upload

PROXY = "mirror"
UPSTREAM = "main"


def _mirror_index(tiers: Tiers, base_url: str | None = None) -> tuple[dict, str]:
    """mirror's noarch repodata as partner, and the cache's answer."""
    reply = get(tiers, f"{base_url or tiers.primary_url}/{PROXY}/noarch/repodata.json", "partner")
    assert reply.status == 200, (reply.status, reply.body[:300])
    return json.loads(reply.body), reply.headers[CACHE_HEADER]


def _lists(index: dict, filename: str) -> bool:
    return filename in index.get("packages.conda", {}) or filename in index.get("packages", {})


def _install_as_partner(tiers: Tiers, base_url: str, spec: str, tmp_path: Path):
    url = f"{base_url}/{PROXY}"
    scratch = tmp_path / f"proxy-client-{time.monotonic_ns()}"
    scratch.mkdir()
    auth = write_auth_file(scratch / "auth.json", url, "partner", tiers.passwords["partner"])
    return run_install(
        url, [spec], scratch / "env", auth_file=auth, ca_file=tiers.ca_file, cache_dir=scratch / "c"
    )


def test_py_rattler_installs_through_the_proxy_channel(tiers: Tiers, tmp_path: Path) -> None:
    name = f"proxyinst-{RUN}"
    upload(tiers, build_conda(tmp_path / "dist", name), UPSTREAM)
    start = time.monotonic()
    while True:
        result = _install_as_partner(tiers, tiers.primary_url, name, tmp_path)
        if result.returncode == 0:
            break
        assert time.monotonic() - start < tiers.proxy_index_validity + 60, result.stderr[-1500:]
        time.sleep(1)
    # Through an edge as well: the edge reads mirror from the primary like any channel.
    through_edge = _install_as_partner(tiers, tiers.edge_url, name, tmp_path)
    assert through_edge.returncode == 0, through_edge.stderr[-1500:]


def test_the_proxy_channel_passes_the_upstreams_shards_through(
    tiers: Tiers, tmp_path: Path
) -> None:
    """The shard index is revalidated with the upstream like the other index files; a
    shard, named by its content, is the upstream's very bytes and cached as immutable."""
    name = f"proxyshard-{RUN}"
    upload(tiers, build_conda(tmp_path / "dist", name), UPSTREAM)
    index_url = f"{tiers.primary_url}/{PROXY}/noarch/{shards.SHARD_INDEX}"
    start = time.monotonic()
    while True:
        index = get(tiers, index_url, "partner")
        assert index.status == 200, index.status
        named = shards.decode(index.body)["shards"]
        if name in named:
            break
        assert time.monotonic() - start < tiers.proxy_index_validity + 30, "never listed"
        time.sleep(1)
    assert "must-revalidate" in (index.headers["Cache-Control"] or ""), index.headers
    shard_path = f"noarch/{shards.SHARDS_FOLDER}/{named[name].hex()}{shards.SHARD_SUFFIX}"
    through = get(tiers, f"{tiers.primary_url}/{PROXY}/{shard_path}", "partner")
    upstream = get(tiers, f"{tiers.primary_url}/{UPSTREAM}/{shard_path}")
    assert (through.status, upstream.status) == (200, 200)
    assert through.body == upstream.body
    assert "immutable" in (through.headers["Cache-Control"] or ""), through.headers
    records = shards.decode(through.body)["packages.conda"]
    assert [r["name"] for r in records.values()] == [name]
    absent = f"noarch/{shards.SHARDS_FOLDER}/{'0' * 64}{shards.SHARD_SUFFIX}"
    assert get(tiers, f"{tiers.primary_url}/{PROXY}/{absent}", "partner").status == 404


def test_upstream_index_changes_show_after_the_validity(tiers: Tiers, tmp_path: Path) -> None:
    validity = tiers.proxy_index_validity
    # Let any cached copy expire, then cache a fresh one.
    time.sleep(validity + 1)
    _, status = _mirror_index(tiers)
    assert status in ("MISS", "EXPIRED", "REVALIDATED"), status
    cached_at = time.monotonic()
    package = build_conda(tmp_path / "dist", f"proxyfresh-{RUN}")
    upload(tiers, package, UPSTREAM)
    index, status = _mirror_index(tiers)
    if time.monotonic() - cached_at < validity - 1:
        # Within the validity the cached copy is served, without the new package.
        assert status == "HIT", status
        assert not _lists(index, package.name)
    while not _lists(index, package.name):
        assert time.monotonic() - cached_at < validity + 15, "the upstream publish never showed"
        time.sleep(0.5)
        index, status = _mirror_index(tiers)
    waited = time.monotonic() - cached_at
    print(
        f"\nproxy channel: an upstream publish showed after {waited:.1f} s (validity {validity} s)"
    )
    assert status in ("EXPIRED", "REVALIDATED", "MISS"), status
    # The package itself: fetched once, then from the cache, byte for byte.
    url = f"{tiers.primary_url}/{PROXY}/noarch/{package.name}"
    first, second = get(tiers, url, "partner"), get(tiers, url, "partner")
    assert first.status == second.status == 200
    assert second.headers[CACHE_HEADER] == "HIT"
    assert second.body == package.read_bytes()
    assert "immutable" in second.headers["Cache-Control"]


def test_the_proxy_channel_has_its_own_readers(tiers: Tiers) -> None:
    path = f"/{PROXY}/noarch/repodata.json"
    for base in (tiers.primary_url, tiers.edge_url):
        assert get(tiers, base + path, "partner").status == 200
        assert get(tiers, base + path, None).status == 401
        # reader reads main, the upstream, but not mirror: mirror's rules, not main's.
        assert get(tiers, base + path, "reader").status == 401
        reader_token = tiers.tokens["reader"][0]
        assert request(tiers, "GET", f"{base}/t/{reader_token}{path}").status == 401
        # The upstream credential is not a login here.
        assert request(tiers, "GET", base + path, basic("mirror", "wrong")).status == 401
    # ... while partner still cannot read the upstream channel itself.
    assert (
        get(tiers, f"{tiers.primary_url}/{UPSTREAM}/noarch/repodata.json", "partner").status == 401
    )


def test_uploads_to_the_proxy_channel_answer_405_with_a_reason(
    tiers: Tiers, tmp_path: Path
) -> None:
    package = build_conda(tmp_path / "dist", f"proxyput-{RUN}")
    bearer = {"Authorization": f"Bearer {tiers.upload_token}"}
    for method, path in (
        ("PUT", f"/{PROXY}/noarch/{package.name}"),
        ("POST", f"/api/channels/{PROXY}/upload/{package.name}"),
    ):
        reply = request(tiers, method, tiers.primary_url + path, bearer, package.read_bytes())
        assert reply.status == 405, (method, reply.status, reply.body[:300])
        answer = json.loads(reply.body)
        assert PROXY in answer["error"] and "no uploads" in answer["error"], answer
        assert reply.headers["Allow"] == "GET, HEAD"
    index, _ = _mirror_index(tiers)
    assert not _lists(index, package.name)


def test_the_upstream_saw_the_channels_credential_not_the_clients(tiers: Tiers) -> None:
    log = podman("exec", tiers.primary, "cat", "/var/log/nginx/access.log").stdout.splitlines()
    upstream_hits = [line for line in log if f'"GET /{UPSTREAM}/noarch/' in line]
    as_mirror = [line for line in upstream_hits if " - mirror [" in line and '" 200 ' in line]
    assert as_mirror, "the proxy never fetched from its upstream as mirror"
    as_partner = [line for line in upstream_hits if " - partner [" in line and '" 200 ' in line]
    assert as_partner == []


def test_no_upstream_credential_in_any_cache_or_log_file(tiers: Tiers) -> None:
    password = tiers.passwords["mirror"]
    secrets = [password, base64.b64encode(f"mirror:{password}".encode()).decode()]
    secrets += [p for u, p in tiers.passwords.items() if u != "mirror"]
    secrets += [t for tokens in tiers.tokens.values() for t in tokens]
    files = podman("exec", tiers.primary, "find", tiers.proxy_cache_dir, "-type", "f").stdout
    assert len(files.split()) >= 2, "the proxy cached nothing"
    for place in (tiers.proxy_cache_dir, "/var/log/nginx"):
        found = subprocess.run(
            ["podman", "exec", "-i", tiers.primary, "grep", "-rlF", "-f", "/dev/stdin", place],
            input="\n".join(secrets) + "\n",
            capture_output=True,
            text=True,
            check=False,
        )
        assert found.returncode == 1, f"secrets in {place}: {found.stdout} {found.stderr}"
    # Only NGINX's master (root) reads the file that holds it; no copy on the edges.
    conf = f"/etc/nginx/condaport-proxy/channel-{PROXY}.conf"
    mode = podman("exec", tiers.primary, "stat", "-c", "%a %U %G", conf).stdout.split()
    assert mode == ["600", "root", "root"], mode
    for edge in tiers.edges:
        listed = podman("exec", edge, "ls", "/etc/nginx", check=True).stdout.split()
        assert "condaport-proxy" not in listed, edge
