"""The host configuration file: what the roles decided, for every tool on the host.

The condaport_tools role renders it (JSON) from the inventory, so an operator can type
`condaport-index status` on the host and the tool knows the channels, their subdirs and
where everything lives. Command-line options override single values (tests, benchmarks).
"""

from __future__ import annotations

import argparse
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from condaport.packages import DEFAULT_MAX_UNPACKED_SIZE

DEFAULT_PATH = Path("/etc/condaport/condaport.json")
ENVIRONMENT_VARIABLE = "CONDAPORT_CONFIG"
# What the shared role's condaport_channel_name_pattern allows; never a path trick.
CHANNEL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


class ConfigError(RuntimeError):
    """The configuration file is missing or malformed; the message says how to fix it."""


@dataclass(frozen=True)
class ChannelConfig:
    name: str
    subdirs: tuple[str, ...]
    anonymous: bool = False
    # Declared in the inventory: "<subdir>/<file>" -> fields to publish instead (patches),
    # "<subdir>/<file>" -> reason (broken marks). See condaport.adjustments.
    patches: dict[str, dict] = field(default_factory=dict, hash=False)
    broken: dict[str, str] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class HostConfig:
    channels_root: Path
    state_dir: Path
    staging_root: Path | None = None
    auth_dir: Path | None = None
    auth_mode: str = "verifier"
    index_backend: str = "rattler"
    conda_python: str | None = None
    channels: tuple[ChannelConfig, ...] = field(default_factory=tuple)
    # The account that writes inside the trees (condaport.account): root's commands
    # become it before touching them. None only outside a converged host.
    writer: str | None = None
    # Bytes one package may unpack to while validated (larger: refused, HTTP 413).
    package_max_unpacked_size: int = DEFAULT_MAX_UNPACKED_SIZE

    def channel(self, name: str) -> ChannelConfig | None:
        return next((c for c in self.channels if c.name == name), None)


def config_path(explicit: Path | None = None) -> Path:
    if explicit is not None:
        return explicit
    from_environment = os.environ.get(ENVIRONMENT_VARIABLE)
    return Path(from_environment) if from_environment else DEFAULT_PATH


def _channel(raw: object) -> ChannelConfig:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise ConfigError(f"a channel entry is not an object with a name: {raw!r}")
    subdirs = raw.get("subdirs", [])
    if not isinstance(subdirs, list) or not all(isinstance(s, str) for s in subdirs):
        raise ConfigError(f"channel {raw['name']!r}: subdirs is not a list of names")
    patches, broken = raw.get("patches", {}), raw.get("broken", {})
    if not isinstance(patches, dict) or not all(isinstance(v, dict) for v in patches.values()):
        raise ConfigError(f"channel {raw['name']!r}: patches is not an object of objects")
    if not isinstance(broken, dict) or not all(isinstance(v, str) for v in broken.values()):
        raise ConfigError(f"channel {raw['name']!r}: broken is not an object of reasons")
    return ChannelConfig(
        raw["name"], tuple(subdirs), bool(raw.get("anonymous", False)), patches, broken
    )


def _positive_size(value: object, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{key} must be a positive number of bytes, not {value!r}")
    return value


def parse(data: dict, source: str = "configuration") -> HostConfig:
    try:
        return HostConfig(
            channels_root=Path(data["channels_root"]),
            state_dir=Path(data["state_dir"]),
            staging_root=Path(data["staging_root"]) if data.get("staging_root") else None,
            auth_dir=Path(data["auth_dir"]) if data.get("auth_dir") else None,
            auth_mode=str(data.get("auth_mode", "verifier")),
            index_backend=str(data.get("index_backend", "rattler")),
            conda_python=data.get("conda_python") or None,
            channels=tuple(_channel(c) for c in data.get("channels", [])),
            writer=str(data["writer"]) if data.get("writer") else None,
            package_max_unpacked_size=_positive_size(
                data.get("package_max_unpacked_size", DEFAULT_MAX_UNPACKED_SIZE),
                "package_max_unpacked_size",
            ),
        )
    except KeyError as missing:
        raise ConfigError(f"{source} lacks {missing}") from None


def load(path: Path | None = None) -> HostConfig:
    where = config_path(path)
    try:
        data = json.loads(where.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"no host configuration at {where}: converge the host with site.yml, "
            f"set {ENVIRONMENT_VARIABLE}, or pass --channels-root and --state-dir"
        ) from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the host configuration {where}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where} is not a JSON object")
    return parse(data, str(where))


def resolve(path: Path | None, channels_root: Path | None, state_dir: Path | None) -> HostConfig:
    """The configuration file's values, overridden by the options given on the command line.

    With both directories given on the command line the file is optional.
    """
    try:
        base = load(path)
    except ConfigError:
        if channels_root is None or state_dir is None:
            raise
        return HostConfig(channels_root=channels_root, state_dir=state_dir)
    overrides = {}
    if channels_root is not None:
        overrides["channels_root"] = channels_root
    if state_dir is not None:
        overrides["state_dir"] = state_dir
    return HostConfig(**{**base.__dict__, **overrides}) if overrides else base


def host_options() -> argparse.ArgumentParser:
    """The options every host tool takes to find (or override) the configuration."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--config", type=Path, help=f"host configuration (default {DEFAULT_PATH})")
    options.add_argument("--channels-root", type=Path, help="override the configuration's")
    options.add_argument("--state-dir", type=Path, help="override the configuration's")
    return options
