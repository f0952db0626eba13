"""Every role's public variables are declared in meta/argument_specs.yml, and the two agree.

A default that is not declared escapes validation; a declared option with another default
documents a value the role does not use.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ROLES = REPO / "roles"
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


def _readme_tables() -> dict[str, set[str]]:
    """role -> variables named in the first column of its README table."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Role variables", 1)[1].split("\n## ", 1)[0]
    tables: dict[str, set[str]] = {}
    for block in re.split(r"^### ", section, flags=re.M)[1:]:
        role = re.match(r"`([a-z_]+)`", block).group(1)
        names: set[str] = set()
        for row in block.splitlines():
            if row.startswith("| `"):
                first_cell = row.split("|")[1]
                names |= set(re.findall(r"`(condaport_[a-z0-9_]+)`", first_cell))
        tables[role] = names
    return tables


@pytest.mark.parametrize("role", ROLE_DIRS, ids=lambda p: p.name)
def test_readme_tables_name_exactly_the_declared_variables(role: Path) -> None:
    options = _load(role / "meta" / "argument_specs.yml")["argument_specs"]["main"]["options"]
    assert _readme_tables().get(role.name, set()) == set(options or {})


@pytest.mark.parametrize("role", ROLE_DIRS, ids=lambda p: p.name)
def test_no_default_points_into_the_playbooks(role: Path) -> None:
    """Installed as a collection, the playbooks' folder is the collection's own (read-only,
    replaced on upgrade): controller paths the roles write default beside the inventory."""
    for name, value in _load(role / "defaults" / "main.yml").items():
        assert "playbook_dir" not in str(value), f"{role.name}: {name} = {value}"


@pytest.mark.parametrize(
    ("inventory_dir", "expected"),
    [("/srv/ops/inventories/prod", "/srv/ops/inventories/prod"), ("None", None)],
)
def test_the_generated_ca_is_fetched_beside_the_inventory(
    inventory_dir: str, expected: str | None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A host-list inventory (`-i host1,`) has no folder: Ansible says "None", and the CA
    goes to the current folder rather than a folder called None."""
    from ansible.plugins.loader import init_plugin_loader

    from tests.support.render import Renderer

    init_plugin_loader()  # the default reads the environment through a lookup plugin
    monkeypatch.setenv("PWD", str(tmp_path))
    renderer = Renderer(["condaport", "condaport_tls"], {"inventory_dir": inventory_dir})
    fetched = renderer.value("condaport_tls_ca_fetch_dir")
    assert fetched == f"{expected or tmp_path}/artifacts/ca"
