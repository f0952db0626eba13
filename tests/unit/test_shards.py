"""Sharded repodata (CEP-16) from condaport's one repodata writer: each shard equals the
monolithic records of its package name, the index names only shards that exist, edits
rewrite only what changed, and a real client (py-rattler) solves from the shards alone."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from condaport import index, repodata, shards
from condaport.subdir_index import SubdirIndex
from tests.support.channel_tree import ChannelTree
from tests.support.pkgbuild import build_conda, build_tar_bz2

pytestmark = pytest.mark.channels(main=("noarch",))


def _hex_digests(record: dict) -> dict:
    return {k: v.hex() if isinstance(v, bytes) else v for k, v in record.items()}


def assert_shards_match_repodata(subdir_dir: Path) -> dict[str, bytes]:
    """The consistency the issue asks for after every kind of change."""
    monolithic = json.loads((subdir_dir / "repodata.json").read_bytes())
    expected = shards.by_name(monolithic)
    named = shards.read_index(subdir_dir)
    assert named is not None, "no shard index"
    assert set(named) == set(expected)
    for name, digest in named.items():
        path = shards.shard_path(subdir_dir, digest)
        assert path.is_file(), f"the index names a missing shard for {name}"
        shard = shards.decode(path.read_bytes())
        assert shard["removed"] == []
        for section in shards.SECTIONS:
            got = {f: _hex_digests(r) for f, r in shard[section].items()}
            assert got == expected[name][section], name
    return named


@pytest.fixture
def subdir(tree: ChannelTree) -> Path:
    folder = tree.subdir("noarch")
    build_conda(folder, "alpha")
    build_conda(folder, "alpha", "2.0")
    build_tar_bz2(folder, "beta")
    return folder


def test_a_full_index_writes_shards_equal_to_the_records(subdir: Path) -> None:
    SubdirIndex.at(subdir.parent, "noarch", subdir.parents[2] / "state").rebuild()
    named = assert_shards_match_repodata(subdir)
    assert sorted(named) == ["alpha", "beta"]
    assert shards.decode((subdir / shards.SHARD_INDEX).read_bytes())["info"] == {
        "subdir": "noarch",
        "base_url": "",
        "shards_base_url": "./shards/",
        "created_at": pytest.approx(
            shards.decode((subdir / shards.SHARD_INDEX).read_bytes())["info"]["created_at"]
        ),
    }


def test_our_shards_decode_as_rattlers_own(subdir: Path, tmp_path: Path) -> None:
    """Same records, same layout as py-rattler's own shard writer (the reference)."""
    from rattler import Subdir
    from rattler.index import index_fs

    reference = tmp_path / "reference" / "main"
    shutil.copytree(subdir.parent, reference)
    asyncio.run(index_fs(reference, target_platform=Subdir("noarch"), write_shards=True))
    ours_dir = subdir
    SubdirIndex.at(ours_dir.parent, "noarch", tmp_path / "state").rebuild()
    theirs = shards.read_index(reference / "noarch")
    ours = shards.read_index(ours_dir)
    assert theirs is not None and ours is not None
    assert set(theirs) == set(ours)

    def records(folder: Path, digest: bytes) -> dict:
        shard = shards.decode(shards.shard_path(folder, digest).read_bytes())
        for section in shards.SECTIONS:
            for record in shard[section].values():
                record.pop("indexed_timestamp", None)  # when each index ran
        return shard

    for name in ours:
        assert records(ours_dir, ours[name]) == records(reference / "noarch", theirs[name])


def test_in_place_edits_rewrite_only_the_changed_name(subdir: Path, tmp_path: Path) -> None:
    SubdirIndex.at(subdir.parent, "noarch", subdir.parents[2] / "state").rebuild()
    before = assert_shards_match_repodata(subdir)
    beta_shard = shards.shard_path(subdir, before["beta"])
    beta_written = beta_shard.stat().st_mtime_ns
    owner = SubdirIndex.at(subdir.parent, "noarch", tmp_path / "state")
    added = build_conda(tmp_path / "new", "alpha", "3.0")
    shutil.copy(added, subdir / added.name)
    record = repodata.package_record(
        subdir / added.name, sha256="ab" * 32, md5="cd" * 16, size=added.stat().st_size
    )
    owner.apply({added.name: record}, owner.rows())
    after = assert_shards_match_repodata(subdir)
    assert after["beta"] == before["beta"] and after["alpha"] != before["alpha"]
    assert beta_shard.stat().st_mtime_ns == beta_written
    # Removing the last file of a name drops it from the index.
    (subdir / "beta-1.0-0.tar.bz2").unlink()
    owner.apply({"beta-1.0-0.tar.bz2": None}, owner.rows())
    final = assert_shards_match_repodata(subdir)
    assert sorted(final) == ["alpha"]
    # The old shards stay for clients holding the older index, until the grace period.
    assert shards.shard_path(subdir, before["alpha"]).is_file()
    assert beta_shard.is_file()
    assert shards.sweep(subdir, final.values(), grace_seconds=0) != []
    assert not beta_shard.exists()


def test_edits_sweep_unnamed_shards_at_most_every_interval(subdir: Path, tmp_path: Path) -> None:
    owner = SubdirIndex.at(subdir.parent, "noarch", tmp_path / "state")
    owner.rebuild()  # a full index sweeps, and dates the marker
    before = assert_shards_match_repodata(subdir)
    old_beta = shards.shard_path(subdir, before["beta"])
    long_ago = time.time() - shards.DEFAULT_GRACE_SECONDS - 60
    os.utime(old_beta, (long_ago, long_ago))
    for version in ("2.0", "3.0"):  # each edit leaves the previous beta shard unnamed
        added = build_tar_bz2(tmp_path / version, "beta", version)
        shutil.copy(added, subdir / added.name)
        record = repodata.package_record(
            subdir / added.name, sha256="ab" * 32, md5="cd" * 16, size=added.stat().st_size
        )
        owner.apply({added.name: record}, owner.rows())
        assert_shards_match_repodata(subdir)
    # Past its grace period, but the last sweep was just now: still there.
    assert old_beta.is_file()
    marker = subdir / shards.SHARDS_FOLDER / shards.SWEPT_MARKER
    os.utime(marker, (time.time() - shards.DEFAULT_SWEEP_INTERVAL - 1,) * 2)
    owner.apply({}, owner.rows())  # any edit once the interval is over sweeps
    assert not old_beta.exists()
    assert_shards_match_repodata(subdir)
    # Shards within their grace period stay (the 2.0 one, unnamed since the 3.0 edit).
    assert len(list((subdir / shards.SHARDS_FOLDER).glob("*" + shards.SHARD_SUFFIX))) == 3


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def served(subdir: Path) -> Iterator[tuple[str, Path]]:
    """The channel tree, indexed, behind a throwaway NGINX on loopback in a folder its
    workers may read (pytest's own is root's only); yields (URL, access log)."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    prefix = Path(tempfile.mkdtemp(prefix="condaport-shards-"))
    prefix.chmod(0o755)
    root = prefix / "channels"
    index.run(subdir.parents[1], prefix / "state", None)
    shutil.copytree(subdir.parents[1], root)
    (prefix / "logs").mkdir()
    port = _free_port()
    (prefix / "nginx.conf").write_text(
        f"""daemon on; pid {prefix}/nginx.pid; error_log {prefix}/logs/error.log;
events {{}}
http {{
    access_log {prefix}/logs/access.log;
    client_body_temp_path {prefix}/body; proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi; uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{ listen 127.0.0.1:{port}; root {root}; }}
}}
"""
    )
    subprocess.run([nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf")], check=True)
    try:
        yield f"http://127.0.0.1:{port}/main", prefix / "logs" / "access.log"
    finally:
        subprocess.run([nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-s", "stop"])
        shutil.rmtree(prefix, ignore_errors=True)


def test_a_real_client_solves_from_the_shards_alone(
    served: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rattler import solve

    url, access_log = served
    monkeypatch.setenv("RATTLER_CACHE_DIR", str(tmp_path / "cache"))
    records = asyncio.run(solve(sources=[url], specs=["alpha"], platforms=["noarch"]))
    assert [(r.name.normalized, str(r.version)) for r in records] == [("alpha", "2.0")]
    time.sleep(0.2)  # NGINX writes the log line after answering
    fetched = [line.split('"')[1].split()[1] for line in access_log.read_text().splitlines()]
    assert "/main/noarch/repodata_shards.msgpack.zst" in fetched
    assert any("/main/noarch/shards/" in path for path in fetched)
    assert not any(path.endswith(("repodata.json", "repodata.json.zst")) for path in fetched)
