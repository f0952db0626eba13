"""What the documentation tells operators to run: every ansible-playbook command names its
inventory (ansible.cfg names none, so a command without -i would reach nothing, or worse,
what a user's own configuration points at)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [
    ROOT / "README.md",
    ROOT / "CHANGELOG.md",
    *sorted((ROOT / "docs").glob("*.md")),
    *sorted((ROOT / "playbooks").glob("*.yml")),
    *sorted((ROOT / "inventories/production").rglob("*.yml")),
    *sorted((ROOT / "templates").rglob("*.yml")),
]
COMMAND = re.compile(r"ansible-playbook(?=\s+[-\w./])(.*)")


def commands(path: Path) -> list[tuple[int, str]]:
    found = []
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines, 1):
        text = line
        # A command continued with a backslash is one command.
        following = number
        while text.rstrip().endswith("\\") and following < len(lines):
            text = text.rstrip()[:-1] + " " + lines[following]
            following += 1
        match = COMMAND.search(text)
        if match:
            found.append((number, match.group(0)))
    return found


def test_every_documented_ansible_playbook_command_names_its_inventory() -> None:
    missing = [
        f"{path.relative_to(ROOT)}:{number}: {command}"
        for path in DOCUMENTS
        for number, command in commands(path)
        if not re.search(r"(^|\s)(-i|--inventory)(\s|=)", command)
    ]
    assert not missing, "\n".join(missing)


def test_ansible_cfg_names_no_inventory() -> None:
    settings = (ROOT / "ansible.cfg").read_text()
    assert not re.search(r"(?m)^\s*inventory\s*=", settings)
