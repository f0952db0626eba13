"""condaport.downloads: the log reader (rotation, partial and hostile lines), the counts,
the edges' reports and the JSON document."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

from condaport import downloads
from condaport.downloads import FileKey, collect, counts_by_version, merge_report, totals

INSTANCE = "0123456789abcdef0123456789abcdef"


def line(uri: str, status: str = "200", method: str = "GET") -> str:
    """A line as NGINX's `escape=json` log format writes it."""
    return json.dumps({"time": "1", "method": method, "status": status, "uri": uri}) + "\n"


def write(log: Path, *lines: str, mode: str = "a") -> None:
    with log.open(mode) as handle:
        handle.write("".join(lines))


def test_n_downloads_count_n(tmp_path: Path) -> None:
    log = tmp_path / "downloads.log"
    write(log, *[line("/main/noarch/pkg-1.0-0.conda")] * 7, line("/main/noarch/pkg-2.0-0.conda"))
    assert collect(log, tmp_path) == 8
    assert collect(log, tmp_path) == 0  # nothing new: nothing counted twice
    assert totals(tmp_path)[FileKey("main", "noarch", "pkg-1.0-0.conda")] == 7
    assert counts_by_version(tmp_path) == {
        ("main", "noarch", "pkg", "1.0"): 7,
        ("main", "noarch", "pkg", "2.0"): 1,
    }


def test_a_partial_line_waits_for_its_end(tmp_path: Path) -> None:
    log = tmp_path / "downloads.log"
    whole = line("/main/noarch/pkg-1.0-0.conda")
    write(log, whole, whole[:20])
    assert collect(log, tmp_path) == 1
    write(log, whole[20:])
    assert collect(log, tmp_path) == 1


def test_rotation_loses_no_line(tmp_path: Path) -> None:
    log = tmp_path / "downloads.log"
    write(log, line("/main/noarch/a-1-0.conda"))
    assert collect(log, tmp_path) == 1
    write(log, line("/main/noarch/a-1-0.conda"))  # written after the last read
    os.rename(log, tmp_path / "downloads.log.1")  # logrotate
    write(log, line("/main/noarch/a-1-0.conda"), line("/main/noarch/a-1-0.conda"))
    assert collect(log, tmp_path) == 3
    assert totals(tmp_path)[FileKey("main", "noarch", "a-1-0.conda")] == 4


def test_a_truncated_log_is_read_from_its_start(tmp_path: Path) -> None:
    log = tmp_path / "downloads.log"
    write(log, *[line("/main/noarch/a-1-0.conda")] * 3)
    collect(log, tmp_path)
    write(log, line("/main/noarch/a-1-0.conda"), mode="w")
    assert collect(log, tmp_path) == 1


def test_hostile_lines_count_nothing(tmp_path: Path) -> None:
    log = tmp_path / "downloads.log"
    write(
        log,
        line('/main/noarch/a"b-1-0.conda'),
        line("/main/noarch/a\nb-1-0.conda"),
        line("/main/noarch/../x-1-0.conda"),
        line("/main/noarch/pkg-1.0-0.conda", status="304"),
        line("/main/noarch/pkg-1.0-0.conda", status="404"),
        line("/main/noarch/pkg-1.0-0.conda", method="HEAD"),
        line("/main/noarch/repodata.json"),
        line("/main/noarch/shards/" + "0" * 64 + ".msgpack.zst"),
        line("/main/NoArch/pkg-1.0-0.conda"),
        line("/.hidden/noarch/pkg-1.0-0.conda"),
        '{"status": "200", "uri": "/main/noarch/pkg-1.0-0.conda"\n',  # cut short
        "not json\n",
        "[1, 2]\n",
        '{"status": 200, "uri": "/main/noarch/pkg-1.0-0.conda"}\n',  # not as NGINX writes
        "x" * 100_000 + "\n",
        line("/main/noarch/ok-1.0-0.tar.bz2"),
    )
    assert collect(log, tmp_path) == 1
    assert list(totals(tmp_path)) == [FileKey("main", "noarch", "ok-1.0-0.tar.bz2")]


def test_an_edge_report_retried_counts_once(tmp_path: Path) -> None:
    reports = tmp_path / "counter" / downloads.EDGE_REPORTS
    report = {"main/noarch/pkg-1.0-0.conda": 5}
    assert merge_report(reports, INSTANCE, report) == 1
    assert merge_report(reports, INSTANCE, report) == 0
    assert merge_report(reports, INSTANCE, {"main/noarch/pkg-1.0-0.conda": 3}) == 0  # late
    merge_report(reports, "f" * 32, {"main/noarch/pkg-1.0-0.conda": 2, "../x": 9, "a": True})
    log = tmp_path / "downloads.log"
    write(log, line("/main/noarch/pkg-1.0-0.conda"))
    counter = tmp_path / "counter"
    collect(log, counter)
    assert totals(counter, reports) == {FileKey("main", "noarch", "pkg-1.0-0.conda"): 8}
    assert downloads.host_counts_by_version(counter) == {("main", "noarch", "pkg", "1.0"): 8}


def test_the_document_per_channel(tmp_path: Path) -> None:
    counts = {
        FileKey("main", "noarch", "my-pkg-1.0-0.conda"): 2,
        FileKey("main", "linux-64", "my-pkg-1.1-h1_0.tar.bz2"): 3,
        FileKey("other", "noarch", "my-pkg-1.0-0.conda"): 9,
    }
    moment = datetime(2026, 1, 2, tzinfo=UTC)
    document = downloads.channel_document("main", counts, moment)
    assert document["ndownloads"] == 5
    package = document["packages"]["my-pkg"]
    assert package["ndownloads"] == 5
    assert package["versions"] == {"1.0": 2, "1.1": 3}
    assert {f["basename"]: f["ndownloads"] for f in package["files"]} == {
        "noarch/my-pkg-1.0-0.conda": 2,
        "linux-64/my-pkg-1.1-h1_0.tar.bz2": 3,
    }
    downloads.publish(tmp_path, ["main", "empty"], counts, moment)
    assert json.loads((tmp_path / "main.json").read_text()) == document
    assert json.loads((tmp_path / "empty.json").read_text())["ndownloads"] == 0
    assert downloads.package_totals(tmp_path, "main")["my-pkg"]["total"] == 5
