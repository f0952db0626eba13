"""Least privilege, tested the way an attacker works (issue 17).

Whoever controls the upload service controls the writer account, the one account that
writes inside the channel trees, staging and the index state. As that account, these tests
plant a link (or swap a folder for a link) at every path the converge, the SSH publish, the
index handler and an upload touch, pointing at files and folders outside the trees. Then
they run all four, and check that nothing outside the trees changed (owner, mode, content):
no root process works inside a tree the writer account can write. Afterwards the links go,
and the channel heals and installs again.

Runs in the uploading scenario, in both auth modes (CONDAPORT_AUTH_MODE).
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.client import run_install, write_auth_file
from tests.support.live import require
from tests.support.pkgbuild import build_conda
from tests.support.playbook import on_host, playbook, said

WRITER = "condaport"
CHANNELS = "/srv/condaport/channels"
STAGING = "/srv/condaport/staging"
STATE = "/var/lib/condaport"
INBOX = "/var/lib/condaport-inbox"
# Outside every tree, owned by root: what every planted link points at, watched with two
# files an attacker would want (configuration the converge itself manages is not watched:
# a converge may rightly change it).
DECOY = "/opt/condaport-decoy"
WATCHED = [DECOY, "/etc/shadow", "/etc/passwd"]
RUN = os.urandom(3).hex()

# path -> what sits there once planted: a link to a decoy file or to the decoy folder.
# Swapped folders (a subdir, the channel's fingerprint folder, the staging folders) are
# moved aside first, so the link takes their place.
PLANTED = {
    f"{CHANNELS}/main/linux-64": f"{DECOY}/folder",
    f"{CHANNELS}/main/.quarantine": f"{DECOY}/folder",
    f"{CHANNELS}/main/index.html": f"{DECOY}/file",
    f"{CHANNELS}/main/noarch/.quick-{RUN}-1.0-0.conda.partial": f"{DECOY}/file",
    f"{CHANNELS}/main/noarch/.repodata.json.partial": f"{DECOY}/file",
    f"{STATE}/locks/public.lock": f"{DECOY}/file",
    f"{STATE}/fingerprints/main": f"{DECOY}/folder",
    f"{STATE}/fingerprints/public/.noarch.sha256.partial": f"{DECOY}/file",
    f"{STAGING}/.uploads": f"{DECOY}/folder",
    f"{STAGING}/main": f"{DECOY}/folder",
}


def _container() -> str:
    return require("CONDAPORT_CONTAINER")


def as_writer(*argv: str, check: bool = True) -> str:
    result = on_host(_container(), "runuser", "-u", WRITER, "--", *argv, check=False)
    if check:
        assert result.returncode == 0, result.stderr
    return result.stdout


def as_root(*argv: str, check: bool = True) -> str:
    result = on_host(_container(), *argv, check=False)
    if check:
        assert result.returncode == 0, result.stderr
    return result.stdout


def snapshot() -> str:
    """Owner, group, mode, size and content hash of everything watched."""
    script = (
        'find "$@" -xdev -printf "%p %U %G %m %s %y\\n" | sort;'
        ' find "$@" -xdev -type f -print0 | sort -z | xargs -0 sha256sum'
    )
    return as_root("sh", "-c", script, "snapshot", *WATCHED)


def root_owned_inside_the_trees() -> list[str]:
    """What root made inside the trees; package files an operator copied in by hand (as
    the uploading suite does for its 10,000-package channel) keep their owner."""
    by_hand = ("!", "-name", "*.conda", "!", "-name", "*.tar.bz2")
    found = as_root("find", CHANNELS, STAGING, STATE, "-xdev", "-user", "root", *by_hand)
    return [line for line in found.splitlines() if line]


def _upload(package: Path, user: str, password: str) -> int:
    base = require("CONDAPORT_BASE_URL").rstrip("/")
    request = urllib.request.Request(
        f"{base}/main/noarch/{package.name}", data=package.read_bytes(), method="PUT"
    )
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    context = ssl.create_default_context(cafile=require("CONDAPORT_CA"))
    try:
        with urllib.request.urlopen(request, context=context, timeout=120) as answer:
            return answer.status
    except urllib.error.HTTPError as refused:
        return refused.code


def _converge() -> subprocess.CompletedProcess[str]:
    """site.yml in the auth mode the scenario is in (the suite runs in both)."""
    mode = os.environ.get("CONDAPORT_AUTH_MODE", "verifier")
    return playbook("../site.yml", {"condaport_auth_mode": mode}, timeout=900)


def _passwords() -> dict[str, str]:
    inventory = json.loads(require("CONDAPORT_UPLOAD"))
    return {u["name"]: u["password"] for u in inventory["users"] if u.get("password")}


@pytest.fixture
def planted() -> Iterator[str]:
    """Plant every link as the writer account; yields the decoys' snapshot from before."""
    as_root("sh", "-c", f"mkdir -p {DECOY}/folder && echo decoy > {DECOY}/file")
    as_root("chmod", "0755", DECOY, f"{DECOY}/folder")
    as_root("chmod", "0644", f"{DECOY}/file")
    before = snapshot()
    aside = f"{STAGING}/.aside-{RUN}"
    as_writer("mkdir", aside)
    for index, (path, target) in enumerate(PLANTED.items()):
        exists = as_writer("sh", "-c", f'test -e "{path}" -o -L "{path}" && echo yes', check=False)
        if exists.strip():
            as_writer("mv", path, f"{aside}/{index}")
        as_writer("ln", "-s", target, path)
    try:
        yield before
    finally:
        for index, path in enumerate(PLANTED):
            as_writer("rm", "-f", path)
            moved = f"{aside}/{index}"
            as_writer("sh", "-c", f'if test -e "{moved}"; then mv "{moved}" "{path}"; fi')
        as_writer("rm", "-rf", aside)
        as_root("rm", "-rf", DECOY)


def test_the_writer_cannot_reach_roots_inbox() -> None:
    assert as_root("stat", "-c", "%U %G %a", INBOX).split() == ["root", "root", "700"]
    result = on_host(
        _container(), "runuser", "-u", WRITER, "--", "touch", f"{INBOX}/planted", check=False
    )
    assert result.returncode != 0


def test_converge_publish_index_and_upload_leave_everything_outside_the_trees_alone(
    planted: str, tmp_path: Path
) -> None:
    converge = _converge()
    # The converge refuses what it finds, by name, instead of following it.
    assert converge.returncode != 0
    assert "is not a folder" in said(converge), said(converge)[-3000:]

    dist = tmp_path / "dist"
    build_conda(dist, f"published-{RUN}")
    playbook(
        "publish.yml",
        {"condaport_publish_source_dir": str(dist), "condaport_publish_channel": "main"},
        timeout=900,
    )
    # The index handler's command, as root runs it.
    as_root("condaport-index", "run", "--force", check=False)
    # Whatever it answers (the service cannot use a planted staging folder), it may not
    # have reached anything outside the trees.
    _upload(build_conda(tmp_path / "up", f"quick-{RUN}"), "uploader", _passwords()["uploader"])

    assert snapshot() == planted
    assert root_owned_inside_the_trees() == []


def test_with_the_links_gone_the_channel_heals_and_installs(tmp_path: Path) -> None:
    """After the module's links are removed: a converge, an upload and an install work."""
    converge = _converge()
    assert converge.returncode == 0, said(converge)[-3000:]
    package = build_conda(tmp_path / "up", f"healed-{RUN}")
    assert _upload(package, "uploader", _passwords()["uploader"]) == 201
    base = require("CONDAPORT_BASE_URL").rstrip("/")
    url = f"{base}/main"
    auth = write_auth_file(tmp_path / "auth.json", url, "reader", _passwords()["reader"])
    result = run_install(
        url,
        [f"healed-{RUN}"],
        Path(tempfile.mkdtemp(dir=tmp_path)) / "env",
        auth_file=auth,
        ca_file=Path(require("CONDAPORT_CA")),
        cache_dir=tmp_path / "cache",
    )
    assert result.returncode == 0, result.stderr
    assert root_owned_inside_the_trees() == []
