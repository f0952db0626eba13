"""The browse page shows what the channel's repodata holds, safely escaped."""

from __future__ import annotations

import json
import os
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from condaport import browse
from tests.support.screenshot import dump_dom, screenshot_html


def _repodata(subdir: str, conda: dict, tar: dict | None = None) -> str:
    return json.dumps({"info": {"subdir": subdir}, "packages": tar or {}, "packages.conda": conda})


def _record(name: str, version: str, build: str = "0", size: int = 1234, ts: int = 0) -> dict:
    return {"name": name, "version": version, "build": build, "size": size, "timestamp": ts}


def _add_records(channel: Path, subdir: str, records: dict[str, dict]) -> None:
    path = channel / subdir / "repodata.json"
    repodata = json.loads(path.read_text())
    repodata["packages.conda"].update(records)
    path.write_text(json.dumps(repodata))


@pytest.fixture
def channel(tmp_path: Path) -> Path:
    root = tmp_path / "main"
    (root / "noarch").mkdir(parents=True)
    (root / "linux-64").mkdir()
    (root / "osx-arm64").mkdir()  # never indexed
    (root / ".cache").mkdir()  # an indexer's cache: not a subdir
    (root / ".cache" / "repodata.json").write_text(_repodata(".cache", {}))
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
    html = browse.render_channel_page(
        channel, "main", generated_at=datetime(2026, 1, 2, tzinfo=UTC)
    )
    for text in ("tool", "1.10.0", "1.9.2", "h1_0", "libx", "2.5 MB", "1.2 kB", "2023-11-14"):
        assert text in html
    assert "2020-09-13" in html  # a timestamp in seconds, as older packages carry
    assert 'href="linux-64/tool-1.2-h1_0.conda"' in html
    assert 'href="linux-64/libx-0.1-0.tar.bz2"' in html  # .tar.bz2 files are listed too
    assert re.search(r"3 packages ·\s+5 files \(.+\) ·\s+3 subdirs ·\s+updated", html)
    assert "2026-01-02 00:00 UTC" in html
    assert "<title>condaport · main</title>" in html
    assert '<meta name="generator" content="condaport">' in html


def test_newest_version_comes_first_by_conda_ordering(channel: Path) -> None:
    html = browse.render_channel_page(channel, "main")
    # As text "1.9.2" > "1.10.0"; as versions it is the other way round.
    assert html.index("<code>1.10.0</code>") < html.index("<code>1.9.2</code>")
    assert html.index("<code>1.9.2</code>") < html.index("<code>1.2</code>")


def test_invalid_versions_sort_after_valid_ones(channel: Path) -> None:
    _add_records(channel, "noarch", {"tool-1..0-0.conda": _record("tool", "1..0")})
    groups, _ = browse.collect(channel)
    tool = next(g for g in groups if g.name == "tool")
    assert [f.version for f in tool.files] == ["1.10.0", "1.9.2", "1.2", "1..0"]


def test_links_are_relative_and_url_encoded(channel: Path) -> None:
    _add_records(channel, "noarch", {"odd name#1-1.0-0.conda": _record("odd", "1.0")})
    html = browse.render_channel_page(channel, "main")
    assert 'href="noarch/odd%20name%231-1.0-0.conda"' in html
    hrefs = re.findall(r'href="([^"]*)"', html)
    assert len(hrefs) == 6
    assert all(re.fullmatch(r"(noarch|linux-64)/[^/:]+", h) for h in hrefs), hrefs


def test_package_metadata_is_escaped(channel: Path) -> None:
    html = browse.render_channel_page(channel, "main")
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_channel_name_cannot_break_out_of_the_script(channel: Path) -> None:
    html = browse.render_channel_page(channel, "x</script><script>alert(2)//")
    assert "alert(2)" in html
    assert "<script>alert(2)" not in html
    assert html.count("<script>") == 1 and html.count("</script>") == 1


def test_snippets_use_the_given_url_or_fill_it_in_the_browser(channel: Path) -> None:
    fixed = browse.render_channel_page(channel, "main", "https://conda.example.org/main")
    assert (
        'conda config --add channels <span class="channel-url">https://conda.example.org/main/'
        in fixed
    )
    assert 'pixi workspace channel add <span class="channel-url">' in fixed
    assert "location.origin" not in fixed  # nothing to fill in
    guessed = browse.render_channel_page(channel, "main")
    assert "HOST" not in guessed  # no placeholder: the path until the browser fills it in
    assert '<span class="channel-url">/main/</span>' in guessed
    assert "location.origin" in guessed
    assert "~/.netrc" in guessed and "credentials.json" in guessed


def test_subdirs_without_repodata_say_so_and_dot_dirs_are_ignored(channel: Path) -> None:
    groups, subdirs = browse.collect(channel)
    assert [s.name for s in subdirs] == ["noarch", "linux-64", "osx-arm64"]
    assert [(s.indexed, s.count) for s in subdirs] == [(True, 3), (True, 2), (False, 0)]
    html = browse.render_channel_page(channel, "main")
    assert re.search(r"<b>osx-arm64</b> ·\s*not indexed yet", html)
    assert html.count("not indexed yet") == 1
    assert ".cache" not in html


def test_broken_repodata_does_not_break_the_page(channel: Path) -> None:
    (channel / "linux-64" / "repodata.json").write_text("{not json")
    html = browse.render_channel_page(channel, "main")
    assert "1.10.0" in html and "h1_0" not in html
    assert re.search(r"<b>linux-64</b> ·\s*not indexed yet", html)


def test_junk_records_do_not_break_the_page(channel: Path) -> None:
    (channel / "linux-64" / "repodata.json").write_text(
        json.dumps(
            {
                "packages": {},
                "packages.conda": {
                    "a-1-0.conda": "not a record",
                    "b-1-0.conda": {"name": "b", "version": "1", "size": "huge", "timestamp": "x"},
                    "c-1-0.conda": {"name": ["c"], "size": True, "timestamp": 10**20},
                },
            }
        )
    )
    groups, _ = browse.collect(channel)
    junk = {f.filename: f for g in groups for f in g.files if f.subdir == "linux-64"}
    assert sorted(junk) == ["b-1-0.conda", "c-1-0.conda"]
    assert junk["b-1-0.conda"].size == 0 and junk["b-1-0.conda"].uploaded == "—"
    assert junk["c-1-0.conda"].uploaded == "—"
    assert "b-1-0.conda" in browse.render_channel_page(channel, "main")
    # A section that is no object: not repodata at all, shown as not indexed (one reader,
    # condaport.repodata.read, judges that for every tool).
    (channel / "linux-64" / "repodata.json").write_text('{"packages": ["not", "a", "dict"]}')
    _, summaries = browse.collect(channel)
    assert [s.indexed for s in summaries if s.name == "linux-64"] == [False]


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


def test_a_failed_write_leaves_the_old_page_and_no_temp_file(
    channel: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (channel / "index.html").write_text("old")

    def refuse(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError):
        browse.write_channel_page(channel, "main")
    assert (channel / "index.html").read_text() == "old"
    assert sorted(p.name for p in channel.iterdir() if p.is_file()) == ["index.html"]


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 B"),
        (999, "999 B"),
        (1000, "1.0 kB"),
        (12_345, "12.3 kB"),
        (999_960, "1.0 MB"),
        (3_400_000_000, "3.4 GB"),
    ],
)
def test_human_size(size: int, text: str) -> None:
    assert browse.human_size(size) == text


@pytest.mark.skipif(
    not (shutil.which("chromium") or shutil.which("chromium-browser")),
    reason="headless Chromium is not installed",
)
def test_chromium_renders_the_page(channel: Path, tmp_path: Path) -> None:
    page = browse.write_channel_page(channel, "main")
    dom = dump_dom(page)
    # Parsed as a browser parses it: one script element (ours), the hostile name as text.
    assert dom.count("<script>") == 1
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
    assert 'href="linux-64/tool-1.2-h1_0.conda"' in dom
    # Opened from disk there is no origin to fill in: the placeholder stays.
    assert '<span class="channel-url">/main/</span>' in dom
    png = tmp_path / "page.png"
    screenshot_html(page, png, width=390, height=900)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(RuntimeError, match="no such HTML file"):
        screenshot_html(tmp_path / "missing.html", png)


def test_ten_thousand_packages_one_row_each_with_counts(tmp_path: Path) -> None:
    """At 10,000 packages (2 versions each) the page renders in seconds, stays a few MB,
    has one row per package, and shows the live counts of downloads.json in a browser."""
    import functools
    import http.server
    import threading
    import time

    from tests.support.screenshot import screenshot

    root = tmp_path / "big"
    (root / "noarch").mkdir(parents=True)
    records = {}
    for number in range(10_000):
        for version in ("1.0", "1.1"):
            name = f"pkg{number:05d}"
            records[f"{name}-{version}-0.conda"] = _record(name, version)
    (root / "noarch" / "repodata.json").write_text(_repodata("noarch", records))
    started = time.monotonic()
    page = browse.write_channel_page(root, "big")
    seconds = time.monotonic() - started
    html = page.read_text()
    size = len(html.encode())
    import gzip

    sent = len(gzip.compress(html.encode(), 1))  # NGINX compresses text/html (gzip on)
    print(f"browse page at 10,000 packages: {seconds:.2f} s, {size / 1e6:.1f} MB,", end=" ")
    print(f"gzip {sent / 1e6:.2f} MB")
    assert seconds < 20
    assert size < 15_000_000 and sent < 1_500_000
    assert html.count("<tr data-name=") == 10_000
    (root / "downloads.json").write_text(
        json.dumps(
            {
                "packages": {
                    "pkg00000": {
                        "ndownloads": 7,
                        "files": [{"basename": "noarch/pkg00000-1.1-0.conda", "ndownloads": 7}],
                    }
                }
            }
        )
    )
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        return
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/big/index.html"
        import subprocess

        from tests.support.screenshot import FLAGS

        browser = shutil.which("chromium") or shutil.which("chromium-browser") or "chromium"
        # The counts arrive by fetch after the load: give the page's timers time to run.
        dom = subprocess.run(
            [browser, *FLAGS, "--virtual-time-budget=10000", "--dump-dom", url],
            capture_output=True, text=True, timeout=120, check=True,
        ).stdout  # fmt: skip
        assert re.search(r'data-package="pkg00000">7<', dom)
        assert re.search(r'data-file="noarch/pkg00000-1.1-0.conda">7<', dom)
        artifacts = Path(__file__).resolve().parents[2] / "artifacts"
        artifacts.mkdir(exist_ok=True)
        screenshot(url, artifacts / "browse-10000-packages.png")
    finally:
        server.shutdown()
