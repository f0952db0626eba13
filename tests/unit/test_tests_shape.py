"""The tests' own shape: helpers live in plain modules (tests/support, or a suite's own
module such as publishing/channel.py), so nothing imports from a conftest and a conftest
holds only fixtures and hooks. The skip guard's test is the exception: it calls the
guard's hooks themselves."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
EXCEPTIONS = {"unit/test_skip_guard.py"}


def _imports_from_a_conftest(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[-1] == "conftest":
                found.append(f"from {'.' * node.level}{node.module} import ...")
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[-1] == "conftest"]
    return found


def test_nothing_imports_from_a_conftest() -> None:
    offenders = {
        path.relative_to(TESTS).as_posix(): found
        for path in sorted(TESTS.rglob("*.py"))
        if path.relative_to(TESTS).as_posix() not in EXCEPTIONS
        and (found := _imports_from_a_conftest(path))
    }
    assert offenders == {}, "move the helper into tests/support (or the suite's own module)"
