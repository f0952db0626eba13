"""Headless Chromium (Debian's `chromium`) looking at a page the way a person would."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

# TLS is checked by the channel suite; here only the rendering matters, so a page behind
# the private CA may be opened without installing that CA into Chromium's store.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--hide-scrollbars",
    "--no-first-run",
    "--ignore-certificate-errors",
]


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError("headless Chromium is not installed (apt-get install chromium)")


def _target(page: str | Path) -> str:
    return page.resolve().as_uri() if isinstance(page, Path) else page


def screenshot(page: str | Path, png: Path, width: int = 1280, height: int = 1400) -> None:
    """Save a PNG of `page` (a URL, or a local HTML file)."""
    png = png.resolve()
    png.unlink(missing_ok=True)
    argv = [_chromium(), *FLAGS, f"--window-size={width},{height}", f"--screenshot={png}"]
    try:
        result = subprocess.run(
            [*argv, _target(page)], capture_output=True, text=True, timeout=120, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"chromium took over {exc.timeout:.0f} s to screenshot {page}") from None
    if not png.exists() or png.stat().st_size == 0:
        raise RuntimeError(
            f"chromium wrote no screenshot (exit {result.returncode}): {result.stderr[-500:]}"
        )


def screenshot_html(html_path: Path, png_path: Path, width: int = 1280, height: int = 1600) -> None:
    """Save a PNG of a local HTML file, as a browser window of `width` x `height` shows it."""
    if not html_path.is_file():
        raise RuntimeError(f"no such HTML file: {html_path}")
    screenshot(html_path, png_path, width, height)


def dump_dom(page: str | Path) -> str:
    """The DOM after scripts ran, as Chromium serializes it."""
    try:
        result = subprocess.run(
            [_chromium(), *FLAGS, "--dump-dom", _target(page)],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
    except subprocess.TimeoutExpired as exc:
        # A page that opens a dialog (alert) blocks headless Chromium until the timeout.
        raise RuntimeError(f"chromium took over {exc.timeout:.0f} s to load {page}") from None
    return result.stdout
