"""The skip guard of tests/unit/conftest.py: an unexpected skip fails the run, a listed one
and an expected failure do not. Runs pytest on scratch tests with the guard as a plugin."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[2]

SCRATCH_TESTS = """
import pytest

@pytest.fixture
def missing_tool():
    pytest.skip("the tool is not installed")

def test_body_skip():
    pytest.skip("not here")

@pytest.mark.skipif(True, reason="never here")
def test_marker_skip():
    pass

def test_fixture_skip(missing_tool):
    pass

def test_listed_skip():
    pytest.skip("cannot run on CI")

@pytest.mark.xfail(reason="known bug", strict=True)
def test_expected_failure():
    assert False

def test_pass():
    pass
"""

# The guard's hooks, and its list extended by one scratch test.
SCRATCH_CONFTEST = """
from tests.unit import conftest as guard
from tests.unit.conftest import pytest_make_collect_report, pytest_runtest_makereport

guard.ALLOWED_SKIPS["test_scratch.py::test_listed_skip"] = "a reason"
"""


def run_pytest(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", "-q", str(folder)],
        cwd=folder,
        env={"PYTHONPATH": str(REPOSITORY), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    (tmp_path / "conftest.py").write_text(SCRATCH_CONFTEST)
    (tmp_path / "test_scratch.py").write_text(SCRATCH_TESTS)
    return tmp_path


def test_unlisted_skips_fail_and_listed_ones_skip(scratch: Path) -> None:
    ran = run_pytest(scratch)
    assert ran.returncode == 1, ran.stdout
    # Skipped in the body: a failure; in the setup (marker, fixture): an error.
    assert "FAILED test_scratch.py::test_body_skip" in ran.stdout, ran.stdout
    assert "ERROR test_scratch.py::test_marker_skip" in ran.stdout, ran.stdout
    assert "ERROR test_scratch.py::test_fixture_skip" in ran.stdout, ran.stdout
    assert "1 failed, 1 passed, 1 skipped, 1 xfailed, 2 errors" in ran.stdout, ran.stdout


def test_a_module_skipped_while_collected_fails(scratch: Path) -> None:
    (scratch / "test_scratch.py").write_text(
        'import pytest\npytest.importorskip("condaport_no_such_module")\n'
        "def test_never():\n    pass\n"
    )
    ran = run_pytest(scratch)
    assert ran.returncode != 0, ran.stdout
    assert "not in ALLOWED_SKIPS" in ran.stdout, ran.stdout


def test_every_listed_test_exists() -> None:
    """A renamed test would leave its entry behind, and the test would skip unguarded."""
    for node in conftest_allowed():
        path, _, name = node.partition("::")
        assert f"def {name.split('[')[0]}(" in (REPOSITORY / path).read_text(), node


def conftest_allowed() -> dict[str, str]:
    from tests.unit import conftest

    return conftest.ALLOWED_SKIPS
