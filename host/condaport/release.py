"""Which condaport this host runs: its version, and the build it was installed from.

The version names a release; the build is the sha256 of the wheel itself, which pip
checked at installation (the role installs `file://...whl#sha256=<checksum>`) and recorded
in the distribution's direct_url.json. Two checkouts that say the same version but differ
in a single byte of host code give different builds, so a publish can tell that a host was
converged from another checkout than the controller's.
"""

from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError, distribution

UNKNOWN = "unknown"


def installed_version() -> str:
    try:
        return distribution("condaport").version
    except PackageNotFoundError:
        return UNKNOWN


def installed_build() -> str:
    """The sha256 of the wheel pip installed, or "unknown" (an editable or hand install)."""
    try:
        recorded = distribution("condaport").read_text("direct_url.json")
    except PackageNotFoundError:
        return UNKNOWN
    if not recorded:
        return UNKNOWN
    try:
        archive = json.loads(recorded).get("archive_info") or {}
    except (ValueError, AttributeError):
        return UNKNOWN
    # pip before 22.x wrote only "hash" ("sha256=<hex>"); later ones add "hashes".
    checksum = (archive.get("hashes") or {}).get("sha256")
    if not checksum and str(archive.get("hash", "")).startswith("sha256="):
        checksum = archive["hash"].removeprefix("sha256=")
    return checksum or UNKNOWN
