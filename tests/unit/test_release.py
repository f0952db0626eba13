"""One version, and a build id the host can tell: the release facts of condaport.

The version is written in three places a release touches (the collection, the host
package, the changelog) and must agree. The build id is the wheel's sha256 as pip checked
and recorded it when installing `file://...whl#sha256=...`, the way condaport_tools does.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def host_version() -> str:
    with (ROOT / "host/pyproject.toml").open("rb") as handle:
        return tomllib.load(handle)["project"]["version"]


def test_the_collection_the_host_package_and_the_changelog_name_one_version() -> None:
    galaxy = yaml.safe_load((ROOT / "galaxy.yml").read_text())
    newest = re.search(r"(?m)^## (\S+)", (ROOT / "CHANGELOG.md").read_text())
    assert newest, "CHANGELOG.md has no release heading"
    assert galaxy["version"] == host_version() == newest.group(1)


def build_wheel(into: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "--target", "wheel", "--directory", str(into)],
        cwd=ROOT / "host",
        env={**os.environ, "SOURCE_DATE_EPOCH": "315532800"},
        check=True,
        capture_output=True,
    )
    return next(into.glob("condaport-*.whl"))


def test_the_wheel_is_reproducible_and_pip_records_its_checksum(tmp_path: Path) -> None:
    first = build_wheel(tmp_path / "first")
    second = build_wheel(tmp_path / "second")
    checksum = hashlib.sha256(first.read_bytes()).hexdigest()
    assert hashlib.sha256(second.read_bytes()).hexdigest() == checksum

    target = tmp_path / "site"
    url = f"{first.as_uri()}#sha256={checksum}"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(target),
            url,
        ],
        check=True,
        capture_output=True,
    )
    probe = "from condaport import release as r; print(r.installed_version(), r.installed_build())"
    shown = subprocess.run(
        [sys.executable, "-c", probe],
        env={**os.environ, "PYTHONPATH": str(target)},
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert shown == [host_version(), checksum]

    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(tmp_path / "other"),
            f"{first.as_uri()}#sha256={'0' * 64}",
        ],
        capture_output=True,
        text=True,
    )
    assert refused.returncode != 0 and "sha256" in refused.stderr.lower()
