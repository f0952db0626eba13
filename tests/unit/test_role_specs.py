"""Every role's public variables are declared in meta/argument_specs.yml, and the two agree.

A default that is not declared escapes validation; a declared option with another default
documents a value the role does not use.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROLES = Path(__file__).resolve().parents[2] / "roles"
ROLE_DIRS = sorted(p for p in ROLES.iterdir() if (p / "tasks" / "main.yml").exists())


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {} if path.exists() else {}


@pytest.mark.parametrize("role", ROLE_DIRS, ids=lambda p: p.name)
def test_defaults_and_argument_specs_name_the_same_variables(role: Path) -> None:
    defaults = _load(role / "defaults" / "main.yml")
    options = _load(role / "meta" / "argument_specs.yml")["argument_specs"]["main"]["options"]
    assert sorted(defaults) == sorted(options)


@pytest.mark.parametrize("role", ROLE_DIRS, ids=lambda p: p.name)
def test_declared_defaults_match_the_role_defaults(role: Path) -> None:
    defaults = _load(role / "defaults" / "main.yml")
    options = _load(role / "meta" / "argument_specs.yml")["argument_specs"]["main"]["options"]
    for name, value in defaults.items():
        assert options[name].get("default") == value, f"{role.name}: {name}"


@pytest.mark.parametrize("role", ROLE_DIRS, ids=lambda p: p.name)
def test_public_variables_carry_the_role_prefix(role: Path) -> None:
    prefix = role.name + "_"
    for name in _load(role / "defaults" / "main.yml"):
        assert name.startswith(prefix), f"{role.name}: {name} lacks the {prefix} prefix"
