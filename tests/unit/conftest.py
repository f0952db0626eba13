"""Shared setup of the unit tests.

`tree`: a channel host's folders and condaport.json in the test's temporary folder
(tests/support/channel_tree.py), channel main with noarch and linux-64 unless the test or
its module is marked `@pytest.mark.channels(name=(subdir, ...), ...)`.

Skip guard: a skipped unit test fails the run unless ALLOWED_SKIPS lists it with a reason.
A skip reads as a pass in `make test`: on a fresh machine the real-NGINX proxy tests skipped
because only the benchmarks installed nginx, and nobody noticed. A test that cannot run
where `make test` runs goes on the list, saying why; anything else a test needs belongs in
the Makefile's SYSTEM_PACKAGES.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path

import pytest

from tests.support.channel_tree import ChannelTree, make_tree

ALLOWED_SKIPS: dict[str, str] = {
    "tests/unit/test_index.py::test_conda_index_backend_runs_where_conda_is_importable": (
        "conda-index needs a conda installation (Miniforge); neither PyPI nor Debian, the only "
        "package sources CI reaches, has a usable conda"
    ),
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "channels(**subdirs): the channels, and their subdirs, of the `tree` fixture"
    )


@pytest.fixture
def tree(request: pytest.FixtureRequest, tmp_path: Path) -> ChannelTree:
    marker = request.node.get_closest_marker("channels")
    return make_tree(tmp_path, marker.kwargs if marker else None)


def _unexpected_skip(report: pytest.TestReport | pytest.CollectReport) -> str | None:
    """The skip reason of a report that should fail the run, or None."""
    if not report.skipped or hasattr(report, "wasxfail") or report.nodeid in ALLOWED_SKIPS:
        return None
    detail = report.longrepr
    return detail[2] if isinstance(detail, tuple) else str(detail)


def _fail_unexpected_skip(report: pytest.TestReport | pytest.CollectReport) -> None:
    reason = _unexpected_skip(report)
    if reason is not None:
        report.outcome = "failed"
        report.longrepr = (
            f"skipped ({reason}), and not in ALLOWED_SKIPS of tests/unit/conftest.py: install "
            "what the test needs (SYSTEM_PACKAGES in the Makefile) or list it with the reason "
            "it cannot run on CI"
        )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A test skipped in its setup (skipif, a fixture) or body."""
    report = yield
    _fail_unexpected_skip(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    """A whole module skipped while collected (pytest.importorskip, allow_module_level)."""
    report = yield
    _fail_unexpected_skip(report)
    return report
