"""condaport-metrics: what the upload service and the publisher count, what the trees and
the index owner's state say, read back through the exporter as Prometheus reads it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from condaport import downloads, index
from condaport.config import load
from condaport.counters import Counters, read_all
from condaport.metrics import (
    Family,
    MetricsServer,
    collect,
    download_families,
    exposition,
    loopback_listener,
)
from tests.support.channel_tree import ChannelTree
from tests.support.pkgbuild import build_conda
from tests.unit.test_downloads import INSTANCE
from tests.unit.test_downloads import line as download_line
from tests.unit.test_upload import Host, host  # noqa: F401 - the upload service fixture

pytestmark = pytest.mark.channels(main=("noarch", "linux-64"), other=("noarch",))

SAMPLE = re.compile(r"^(?P<name>[a-z_]+)(\{(?P<labels>[^}]*)\})? (?P<value>\S+)$")


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = SAMPLE.match(line)
        assert match, line
        labels = frozenset(re.findall(r'(\w+)="([^"]*)"', match["labels"] or ""))
        found[(match["name"], labels)] = float(match["value"])
    return found


def value(text: str, name: str, **labels: str) -> float | None:
    return samples(text).get((name, frozenset(labels.items())))


def promtool_accepts(text: str) -> None:
    """Prometheus' own linter of the exposition format."""
    done = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def certificate(folder: Path, days: int) -> Path:
    path = folder / "server.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
        + ["-nodes", "-keyout", str(folder / "server.key"), "-out", str(path)]
        + ["-days", str(days), "-subj", "/CN=channel.test"],
        check=True,
        capture_output=True,
    )
    return path


def test_uploads_and_refusals_are_counted_by_result_and_reason(host: Host, tmp_path: Path) -> None:  # noqa: F811
    package = build_conda(tmp_path / "dist", "alpha")
    assert host.put(package)[0] == 201
    assert host.put(package)[0] == 200  # the same bytes again: unchanged
    assert host.put(package, identity=None)[0] == 401
    broken = tmp_path / "broken-1.0-0.conda"
    broken.write_bytes(b"not a package")
    assert host.put(broken)[0] == 422
    text = collect(load(host.root / "condaport.json"), [])
    promtool_accepts(text)
    assert value(text, "condaport_uploads_total", method="PUT", result="added") == 1
    assert value(text, "condaport_uploads_total", method="PUT", result="unchanged") == 1
    assert value(text, "condaport_uploads_total", method="PUT", result="refused") == 2
    assert value(text, "condaport_refusals_total", reason="unauthenticated") == 1
    assert value(text, "condaport_refusals_total", reason="invalid_package") == 1


def test_index_staleness_age_and_quarantine_follow_the_tree(tree: ChannelTree) -> None:
    index.run(tree.root, tree.state, None)
    configured = load(tree.config)
    now = time.time()
    text = collect(configured, [], now=now)
    assert value(text, "condaport_index_stale", channel="main", subdir="noarch") == 0
    age = value(text, "condaport_index_age_seconds", channel="main", subdir="noarch")
    assert age is not None and 0 <= age < 120
    assert value(text, "condaport_quarantined_files", channel="main", subdir="noarch") == 0
    # A package placed without an index run: the index owner no longer calls it fresh.
    build_conda(tree.root / "main" / "noarch", "beta")
    quarantine = tree.root / "main" / ".quarantine" / "noarch"
    quarantine.mkdir(parents=True)
    (quarantine / "bad-1.0-0.conda").write_bytes(b"x")
    text = collect(configured, [], now=now + 3600)
    assert value(text, "condaport_index_stale", channel="main", subdir="noarch") == 1
    assert value(text, "condaport_index_stale", channel="main", subdir="linux-64") == 0
    assert value(text, "condaport_quarantined_files", channel="main", subdir="noarch") == 1
    # A channel without a tree here (an edge's, a proxy channel) has no index to be stale.
    shutil.rmtree(tree.root / "other")
    assert 'channel="other"' not in collect(configured, [], now=now)
    later = value(text, "condaport_index_age_seconds", channel="main", subdir="noarch")
    assert later is not None and later >= 3600


def test_certificate_expiry_is_the_served_certificates_not_after(
    tree: ChannelTree, tmp_path: Path
) -> None:
    path = certificate(tmp_path, days=10)
    text = collect(load(tree.config), [path, tmp_path / "missing.crt"])
    expiry = value(text, "condaport_certificate_expiry_timestamp_seconds", path=str(path))
    assert expiry is not None and abs(expiry - (time.time() + 10 * 86400)) < 120
    assert "missing.crt" not in text


def test_publish_runs_and_counters_survive_a_restart(tree: ChannelTree) -> None:
    Counters(tree.state, "publish").count("condaport_publishes_total", result="published")
    Counters(tree.state, "publish").count("condaport_publishes_total", result="published")
    totals = read_all(tree.state)
    assert totals[("condaport_publishes_total", (("result", "published"),))] == 2
    text = collect(load(tree.config), [])
    assert value(text, "condaport_publishes_total", result="published") == 2


def test_counts_from_processes_at_once_all_land(tree: ChannelTree) -> None:
    """Two publish runs at once: each count is read, added to and written under a lock."""
    script = (
        "import sys; from pathlib import Path; from condaport.counters import Counters\n"
        "c = Counters(Path(sys.argv[1]), 'publish')\n"
        "for _ in range(50): c.count('condaport_publishes_total', result='published')\n"
    )
    runs = [subprocess.Popen([sys.executable, "-c", script, str(tree.state)]) for _ in range(4)]
    assert all(run.wait() == 0 for run in runs)
    totals = read_all(tree.state)
    assert totals[("condaport_publishes_total", (("result", "published"),))] == 200


def test_a_corrupt_counter_file_is_ignored_not_fatal(tree: ChannelTree) -> None:
    folder = tree.state / "metrics"
    folder.mkdir(parents=True)
    (folder / "upload.json").write_text("{not json")
    promtool_accepts(collect(load(tree.config), []))


def test_label_values_are_escaped() -> None:
    text = exposition([Family("x_total", "counter", "x").add(1, path='a"b\\c\nd')])
    assert 'x_total{path="a\\"b\\\\c\\nd"} 1' in text
    promtool_accepts(text)


def test_the_exporter_serves_on_loopback_only(tree: ChannelTree) -> None:
    with pytest.raises(SystemExit, match="loopback"):
        loopback_listener("0.0.0.0:0")
    listener = loopback_listener("127.0.0.1:0")
    server = MetricsServer(listener, load(tree.config), [])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = listener.getsockname()[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            assert "condaport_uploads_total" in answer.read().decode()
    finally:
        server.shutdown()
        server.server_close()


def test_downloads_are_this_hosts_own_per_version(tmp_path: Path) -> None:
    """N served files give N in the family; an edge's report held on the primary is the
    edge's to export, not the primary's (a sum over hosts counts each install once)."""
    log = tmp_path / "downloads.log"
    served = download_line("/main/noarch/tool-1.0-0.conda") * 3
    log.write_text(served + download_line("/main/noarch/tool-2.0-0.conda"))
    downloads.collect(log, tmp_path)
    report = {"main/noarch/tool-1.0-0.conda": 5}
    downloads.merge_report(tmp_path / downloads.EDGE_REPORTS, INSTANCE, report)
    text = exposition(download_families(tmp_path))
    assert (
        'condaport_downloads_total{channel="main",subdir="noarch",package="tool",version="1.0"} 3'
        in text
    )
    assert 'version="2.0"} 1' in text
