"""The browse page shows what the channel's repodata holds, safely escaped."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from condaport_tools import browse


def _repodata(subdir: str, conda: dict, tar: dict | None = None) -> str:
    return json.dumps({"info": {"subdir": subdir}, "packages": tar or {}, "packages.conda": conda})


def _record(name: str, version: str, build: str = "0", size: int = 1234, ts: int = 0) -> dict:
    return {"name": name, "version": version, "build": build, "size": size, "timestamp": ts}


@pytest.fixture
def channel(tmp_path: Path) -> Path:
    root = tmp_path / "main"
    (root / "noarch").mkdir(parents=True)
    (root / "linux-64").mkdir()
    (root / "osx-arm64").mkdir()  # never indexed
    (root / ".cache").mkdir()  # an indexer's cache: not a subdir
    (root / "noarch" / "repodata.json").write_text(
        _repodata(
            "noarch",
            {
                "tool-1.10.0-0.conda": _record("tool", "1.10.0", ts=1_700_000_000_000),
                "tool-1.9.2-0.conda": _record("tool", "1.9.2", ts=1_600_000_000),
                "evil-1.0-0.conda": _record("<script>alert(1)</script>", "1.0"),
            },
        )
    )
    (root / "linux-64" / "repodata.json").write_text(
        _repodata(
            "linux-64",
            {"tool-1.2-h1_0.conda": _record("tool", "1.2", "h1_0", size=2_500_000)},
            tar={"libx-0.1-0.tar.bz2": _record("libx", "0.1")},
        )
    )
    return root


def test_page_lists_every_package_file_with_its_details(channel: Path) -> None:
    html = browse.render_channel_page(channel, "main", datetime(2026, 1, 2, tzinfo=UTC))
    for text in ("tool", "1.10.0", "1.9.2", "h1_0", "libx", "2.5 MB", "1.2 kB", "2023-11-14"):
        assert text in html
    assert 'href="linux-64/tool-1.2-h1_0.conda"' in html
    assert 'href="linux-64/libx-0.1-0.tar.bz2"' in html
    assert "2026-01-02 00:00 UTC" in html
    assert "<title>condaport · main</title>" in html


def test_newest_version_comes_first_by_conda_ordering(channel: Path) -> None:
    html = browse.render_channel_page(channel, "main")
    # As text "1.9.2" > "1.10.0"; as versions it is the other way round.
    assert html.index("<code>1.10.0</code>") < html.index("<code>1.9.2</code>")
    assert html.index("<code>1.9.2</code>") < html.index("<code>1.2</code>")


def test_package_metadata_is_escaped(channel: Path) -> None:
    html = browse.render_channel_page(channel, "main")
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_subdirs_without_repodata_say_so_and_dot_dirs_are_ignored(channel: Path) -> None:
    groups, subdirs = browse.collect(channel)
    assert [s.name for s in subdirs] == ["noarch", "linux-64", "osx-arm64"]
    assert [(s.indexed, s.count) for s in subdirs] == [(True, 3), (True, 2), (False, 0)]
    assert "not indexed yet" in browse.render_channel_page(channel, "main")


def test_broken_repodata_does_not_break_the_page(channel: Path) -> None:
    (channel / "linux-64" / "repodata.json").write_text("{not json")
    html = browse.render_channel_page(channel, "main")
    assert "1.10.0" in html and "h1_0" not in html


def test_an_empty_channel_renders(tmp_path: Path) -> None:
    (tmp_path / "empty" / "noarch").mkdir(parents=True)
    assert "No packages yet" in browse.render_channel_page(tmp_path / "empty", "empty")


def test_page_is_replaced_atomically_and_world_readable(channel: Path) -> None:
    (channel / "index.html").write_text("old")
    page = browse.write_channel_page(channel, "main")
    assert page == channel / "index.html"
    assert page.stat().st_mode & 0o777 == 0o644
    assert "tool" in page.read_text()
    assert sorted(p.name for p in channel.iterdir() if p.is_file()) == ["index.html"]


@pytest.mark.parametrize(
    ("size", "text"), [(0, "0 B"), (999, "999 B"), (1000, "1.0 kB"), (3_400_000_000, "3.4 GB")]
)
def test_human_size(size: int, text: str) -> None:
    assert browse.human_size(size) == text
