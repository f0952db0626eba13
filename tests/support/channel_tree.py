"""A channel host's folders in a temporary folder, for the unit tests of the host package.

The layout of a converged host's /srv/condaport, small: `channels/<channel>/<subdir>`,
`staging/` and `state/` side by side, and `condaport.json` naming them (the file the
host's commands and services read). The state folder is left for the code under test to
make, as on a new host. tests/unit/conftest.py makes one for each test (`tree`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from condaport.config import ChannelConfig, HostConfig

# Each channel's subdirs, as a test that says nothing else gets them.
DEFAULT_CHANNELS: dict[str, tuple[str, ...]] = {"main": ("noarch", "linux-64")}


@dataclass(frozen=True)
class ChannelTree:
    base: Path
    channels: dict[str, tuple[str, ...]]

    @property
    def root(self) -> Path:
        """The channels root."""
        return self.base / "channels"

    @property
    def state(self) -> Path:
        return self.base / "state"

    @property
    def staging(self) -> Path:
        return self.base / "staging"

    @property
    def config(self) -> Path:
        """condaport.json, naming the folders and the channels."""
        return self.base / "condaport.json"

    @property
    def host(self) -> HostConfig:
        """What the host's code reads from `config`."""
        return HostConfig(
            channels_root=self.root,
            state_dir=self.state,
            staging_root=self.staging,
            channels=tuple(ChannelConfig(name, subdirs) for name, subdirs in self.channels.items()),
        )

    def subdir(self, name: str = "noarch", channel: str = "main") -> Path:
        return self.root / channel / name


def make_tree(base: Path, channels: dict[str, tuple[str, ...]] | None = None) -> ChannelTree:
    """Every channel's subdir folders, an empty staging folder and condaport.json."""
    tree = ChannelTree(base, dict(channels or DEFAULT_CHANNELS))
    for name, subdirs in tree.channels.items():
        for subdir in subdirs:
            tree.subdir(subdir, name).mkdir(parents=True)
    tree.staging.mkdir(parents=True)
    tree.config.write_text(
        json.dumps(
            {
                "channels_root": str(tree.root),
                "staging_root": str(tree.staging),
                "state_dir": str(tree.state),
                "channels": [
                    {"name": name, "subdirs": list(subdirs)}
                    for name, subdirs in tree.channels.items()
                ],
            }
        )
    )
    return tree
