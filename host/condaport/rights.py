"""Who may upload where: the upload service's settings file, rendered by condaport_upload.

NGINX authenticates (a password, or an upload token it maps to the token's name) and tells
the service who is asking, as `user:<name>` or `token:<name>`. This file says what each of
those identities may do, per channel. It holds names only, never a password or a token:

    {"max_size": 2147483648, "lock_timeout": 30,
     "channels": {"main": {"user:alice": {"overwrite": false},
                           "token:ci-main": {"overwrite": true}}},
     "readers": {"main": ["user:alice", "user:bob"]}, "anonymous": ["public"]}

`readers` and `anonymous` say who may read a channel, for promotions (read right on the
source): the readers NGINX lets in, and anyone for an anonymous channel. An identity that
may upload to a channel may also read it from here.

It is re-read when it changes on disk, so a converge that changes rights needs no restart.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_PATH = Path("/etc/condaport/upload.json")
IDENTITY = re.compile(r"^(user|token):[A-Za-z0-9][A-Za-z0-9._@+-]*$")
DEFAULT_MAX_SIZE = 2 * 1024**3
DEFAULT_LOCK_TIMEOUT = 30.0


class SettingsError(RuntimeError):
    """The settings file is missing or malformed."""


@dataclass(frozen=True)
class Grant:
    overwrite: bool = False


@dataclass(frozen=True)
class Settings:
    max_size: int = DEFAULT_MAX_SIZE
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT
    channels: dict[str, dict[str, Grant]] = field(default_factory=dict)
    readers: dict[str, frozenset[str]] = field(default_factory=dict)
    anonymous: frozenset[str] = frozenset()

    def grant(self, identity: str, channel: str) -> Grant | None:
        """What `identity` may do in `channel`; None when it may not upload there."""
        return self.channels.get(channel, {}).get(identity)

    def may_read(self, identity: str, channel: str) -> bool:
        return (
            channel in self.anonymous
            or identity in self.readers.get(channel, frozenset())
            or self.grant(identity, channel) is not None
        )


def parse(data: object, source: str = "settings") -> Settings:
    if not isinstance(data, dict):
        raise SettingsError(f"{source} is not a JSON object")
    channels: dict[str, dict[str, Grant]] = {}
    raw_channels = data.get("channels", {})
    if not isinstance(raw_channels, dict):
        raise SettingsError(f"{source}: channels is not an object")
    for channel, grants in raw_channels.items():
        if not isinstance(grants, dict):
            raise SettingsError(f"{source}: channel {channel!r} is not an object")
        parsed = {}
        for identity, grant in grants.items():
            if not IDENTITY.match(identity) or not isinstance(grant, dict):
                raise SettingsError(f"{source}: bad entry {identity!r} in channel {channel!r}")
            parsed[identity] = Grant(overwrite=grant.get("overwrite") is True)
        channels[channel] = parsed
    readers: dict[str, frozenset[str]] = {}
    raw_readers = data.get("readers", {})
    if not isinstance(raw_readers, dict):
        raise SettingsError(f"{source}: readers is not an object")
    for channel, identities in raw_readers.items():
        if not isinstance(identities, list) or not all(
            isinstance(i, str) and IDENTITY.match(i) for i in identities
        ):
            raise SettingsError(f"{source}: readers of {channel!r} is not a list of identities")
        readers[channel] = frozenset(identities)
    anonymous = data.get("anonymous", [])
    if not isinstance(anonymous, list) or not all(isinstance(c, str) for c in anonymous):
        raise SettingsError(f"{source}: anonymous is not a list of channel names")
    try:
        max_size = int(data.get("max_size", DEFAULT_MAX_SIZE))
        lock_timeout = float(data.get("lock_timeout", DEFAULT_LOCK_TIMEOUT))
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"{source}: {exc}") from None
    return Settings(
        max_size=max_size,
        lock_timeout=lock_timeout,
        channels=channels,
        readers=readers,
        anonymous=frozenset(anonymous),
    )


class SettingsFile:
    """The settings, re-read whenever the file changes (inode, size or mtime)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._signature: tuple[int, int, int] | None = None
        self._settings = Settings()
        self._lock = threading.Lock()
        self.current()  # fail at start, not on the first upload

    def current(self) -> Settings:
        try:
            info = self.path.stat()
        except OSError as exc:
            raise SettingsError(f"cannot read {self.path}: {exc}") from None
        signature = (info.st_ino, info.st_size, info.st_mtime_ns)
        with self._lock:
            if signature != self._signature:
                try:
                    data = json.loads(self.path.read_text(encoding="utf-8"))
                except (OSError, ValueError) as exc:
                    raise SettingsError(f"cannot read {self.path}: {exc}") from None
                self._settings = parse(data, str(self.path))
                self._signature = signature
            return self._settings
