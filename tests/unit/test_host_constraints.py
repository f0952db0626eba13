"""The pinned versions hosts install (roles/condaport_tools/files/constraints.txt).

Complete: every package the host package needs, transitively, has exactly one pin. Within
range: every pin satisfies what host/pyproject.toml allows. Honest: the development venv
runs those very versions (requirements.txt applies the file), so the tests exercise what
hosts run.
"""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
CONSTRAINTS = ROOT / "roles/condaport_tools/files/constraints.txt"
# The hosts' Pythons: Debian 12 and Debian 13.
HOST_PYTHONS = ("3.11", "3.13")


def pins() -> dict[str, Version]:
    found: dict[str, Version] = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, _, pinned = line.partition("==")
        assert pinned and re.fullmatch(r"[0-9][0-9A-Za-z.+-]*", pinned), f"not an exact pin: {line}"
        key = canonicalize_name(name)
        assert key not in found, f"{name} is pinned twice"
        found[key] = Version(pinned)
    return found


def host_requirements() -> list[Requirement]:
    with (ROOT / "host/pyproject.toml").open("rb") as handle:
        return [Requirement(text) for text in tomllib.load(handle)["project"]["dependencies"]]


def applies(requirement: Requirement, python: str) -> bool:
    if requirement.marker is None:
        return True
    environment = {**default_environment(), "python_version": python, "extra": ""}
    return requirement.marker.evaluate(environment)


def needed(python: str) -> dict[str, Requirement]:
    """Everything the host venv installs on that Python, as declared by the pinned dists."""
    wanted: dict[str, Requirement] = {}
    queue = [r for r in host_requirements() if applies(r, python)]
    while queue:
        requirement = queue.pop()
        key = canonicalize_name(requirement.name)
        if key in wanted:
            continue
        wanted[key] = requirement
        try:
            declared = distribution(requirement.name).requires or []
        except PackageNotFoundError:
            continue  # reported by the completeness check below
        queue += [r for r in map(Requirement, declared) if applies(r, python)]
    return wanted


def test_every_package_a_host_installs_is_pinned_once() -> None:
    pinned = pins()
    for python in HOST_PYTHONS:
        missing = sorted(set(needed(python)) - set(pinned))
        assert not missing, f"not pinned in {CONSTRAINTS.name} (Python {python}): {missing}"


def test_every_pin_is_within_the_range_the_host_package_allows() -> None:
    pinned = pins()
    for requirement in host_requirements():
        version = pinned[canonicalize_name(requirement.name)]
        assert requirement.specifier.contains(version, prereleases=True), (requirement, version)


def test_the_development_venv_runs_the_pinned_versions() -> None:
    for name, version in pins().items():
        assert Version(distribution(name).version) == version, name
