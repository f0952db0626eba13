"""Make exactly the edits the sample inventory's "EDIT:" comments name, as an operator would.

Used by molecule/sample/prepare.yml on a copy of inventories/production (SAMPLE/inventory):
host names (the scenario's containers), the primary's name where the edges reach it, the
balancer's public name (`localhost`: the published port is how a client here reaches it),
the site's names, the edge and balancer groups uncommented, the wheelhouse turned on (the
scenario's hosts reach no package index), and vault.yml made from its example with fresh
values, then encrypted. Nothing else changes: a text that is not found
fails the run, so a sample that drifts from these edits breaks the scenario, not the test.

    python -m tests.integration.sample.edit_inventory SAMPLE

writes SAMPLE/vault-password and SAMPLE/secrets.json (the vault values, for the client),
both 0600.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
from pathlib import Path

PRIMARY = "condaport-sample-primary"
EDGE = "condaport-sample-edge"
BALANCER = "condaport-sample-balancer"
PUBLIC_NAME = "localhost"

# The two groups hosts.yml carries commented out, from their first line to the last.
COMMENTED_GROUPS = re.compile(
    r"(?ms)^    # channel_edges:\n.*?^    #       # ansible_host: 192\.0\.2\.12\n"
)
VAULT_VALUE = re.compile(r'(?m)^(vault_[a-z0-9_]+): "[^"\n]*"$')


def replace(path: Path, old: str, new: str, count: int = 1) -> None:
    """Replace `old` exactly `count` times, or fail: the sample must still say it."""
    text = path.read_text()
    if text.count(old) != count:
        raise SystemExit(f"{path}: expected {count} x {old!r}, found {text.count(old)}")
    path.write_text(text.replace(old, new))


def uncomment_groups(hosts: Path) -> None:
    text = hosts.read_text()
    block = COMMENTED_GROUPS.search(text)
    if block is None:
        raise SystemExit(
            f"{hosts}: the commented channel_edges and channel_balancers groups are gone"
        )
    # "    # x" -> "    x" keeps the YAML indentation; "#   # ansible_host" stays a comment.
    opened = re.sub(r"(?m)^    # ", "    ", block.group(0))
    hosts.write_text(text.replace(block.group(0), opened))


def write_vault(inventory: Path, sample: Path) -> None:
    """vault.yml from its example with a fresh value for every variable, encrypted."""
    example = inventory / "group_vars" / "all" / "vault.yml.example"
    values = {name: secrets.token_urlsafe(24) for name in VAULT_VALUE.findall(example.read_text())}
    if not values:
        raise SystemExit(f"{example}: no vault values")
    vault = example.with_name("vault.yml")
    vault.write_text(
        VAULT_VALUE.sub(lambda m: f'{m.group(1)}: "{values[m.group(1)]}"', example.read_text())
    )
    for name, content in (
        ("secrets.json", json.dumps(values)),
        ("vault-password", secrets.token_urlsafe(24)),
    ):
        path = sample / name
        path.touch(mode=0o600)
        path.write_text(content)
    ansible_vault = Path(sys.executable).with_name("ansible-vault")
    subprocess.run(
        [ansible_vault, "encrypt", "--vault-password-file", sample / "vault-password", vault],
        check=True,
        capture_output=True,
    )


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    sample = Path(argv[1])
    inventory = sample / "inventory"
    hosts = inventory / "hosts.yml"
    uncomment_groups(hosts)
    replace(hosts, "primary.conda.example.org:", f"{PRIMARY}:")
    replace(hosts, "edge1.conda.example.org:", f"{EDGE}:")
    replace(hosts, "lb.conda.example.org:", f"{BALANCER}:")
    replace(
        inventory / "group_vars" / "channel_edges" / "main.yml",
        "https://primary.conda.example.org",
        f"https://{PRIMARY}",
    )
    replace(
        inventory / "group_vars" / "channel_balancers" / "main.yml",
        "  - conda.example.org\n",
        f"  - {PUBLIC_NAME}\n",
    )
    replace(
        inventory / "group_vars" / "all" / "tls.yml",
        "  - conda.example.org\n",
        "".join(f"  - {name}\n" for name in (PRIMARY, EDGE, PUBLIC_NAME)),
    )
    replace(
        inventory / "group_vars" / "all" / "tools.yml",
        "# condaport_tools_wheelhouse_dir:",
        "condaport_tools_wheelhouse_dir:",
    )
    write_vault(inventory, sample)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
