"""The upgrade and the backup of molecule/operations, checked from the controller.

The tests run in file order: the upgrade's results first, then a backup of the primary
taken while an upload runs, restored onto the fresh fourth host, which must then serve the
same repodata to a py-rattler client that trusts the scenario's one CA.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest
import zstandard

from tests.integration.operations.ops import basic, https, install_once, upload
from tests.support.pkgbuild import build_conda

PROJECT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def ops() -> dict:
    raw = os.environ.get("CONDAPORT_OPERATIONS")
    if not raw:
        pytest.skip("CONDAPORT_OPERATIONS is not set: these tests run from molecule/operations")
    spec = json.loads(raw)
    spec["ca_file"] = Path(spec["ca_file"])
    spec["ephemeral"] = Path(spec["ephemeral"])
    spec["password"] = os.environ["CONDAPORT_OPS_READER_PASSWORD"]
    spec["upload_token"] = os.environ["CONDAPORT_OPS_UPLOAD_TOKEN"]
    return spec


def _repodata(ops: dict, base: str) -> bytes:
    status, body = https(
        "GET", f"{base}/main/noarch/repodata.json", ops["ca_file"], basic("reader", ops["password"])
    )
    assert status == 200, (base, status, body[:200])
    return body


def _playbook(ops: dict, playbook: str, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = ["ansible-playbook", "-i", ops["inventory"], f"playbooks/{playbook}", *extra]
    # Molecule forces colour on; the recap lines are read below, so without it.
    plain = {**os.environ, "ANSIBLE_FORCE_COLOR": "false", "ANSIBLE_NOCOLOR": "true"}
    result = subprocess.run(
        argv, cwd=PROJECT, capture_output=True, text=True, timeout=900, env=plain
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    return result


def test_no_install_failed_during_the_upgrade(ops: dict) -> None:
    runs = sorted((ops["ephemeral"] / "upgrade-counts").glob("*.json"))
    assert runs, "the converge recorded no client loop"
    counts = json.loads(runs[0].read_text())
    print(f"installs through the balancer during the upgrade: {counts['installs']}")
    assert counts["failed"] == 0, counts["failures"][:3]
    assert counts["installs"] > 0


def test_the_published_data_survived_the_upgrade(ops: dict) -> None:
    before = ops["ephemeral"] / "before"
    package = json.loads((before / "package.json").read_text())
    served = json.loads(_repodata(ops, ops["primary_url"]))
    kept = json.loads((before / "repodata.json").read_bytes())
    assert served["packages.conda"][package["file"]] == kept["packages.conda"][package["file"]]
    status, body = https(
        "GET",
        f"{ops['primary_url']}/main/noarch/{package['file']}",
        ops["ca_file"],
        basic("reader", ops["password"]),
    )
    assert status == 200 and hashlib.sha256(body).hexdigest() == package["sha256"]


def test_the_credentials_survived_the_upgrade(ops: dict) -> None:
    assert _repodata(ops, ops["balancer_url"])
    status, _ = https(
        "GET",
        f"{ops['primary_url']}/t/{ops['reader_token']}/main/noarch/repodata.json",
        ops["ca_file"],
    )
    assert status == 200
    status, _ = https("GET", f"{ops['primary_url']}/main/noarch/repodata.json", ops["ca_file"])
    assert status == 401


def test_a_backup_taken_during_an_upload_restores_onto_a_fresh_host(
    ops: dict, tmp_path: Path
) -> None:
    before = _repodata(ops, ops["primary_url"])
    # Uploads one after another for as long as the backup playbook runs: each must succeed
    # (an upload that meets the backup's hold on the channel waits, it does not fail).
    answers: list[int] = []
    backing_up = threading.Event()
    backing_up.set()

    def keep_uploading() -> None:
        number = 0
        while backing_up.is_set():
            number += 1
            package = build_conda(tmp_path / "dist", f"ops-during-backup-{number}")
            answers.append(upload(ops["primary_url"], ops["ca_file"], package, ops["upload_token"]))

    uploading = threading.Thread(target=keep_uploading)
    uploading.start()
    backups = tmp_path / "backups"
    try:
        _playbook(ops, "backup.yml", "-l", ops["primary"], "-e", f"condaport_backup_dir={backups}")
    finally:
        backing_up.clear()
        uploading.join()
    print(f"uploads while the backup ran: {len(answers)}")
    assert answers and set(answers) == {201}, answers
    after = _repodata(ops, ops["primary_url"])

    (archive,) = backups.glob("condaport-*.tar.zst")
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    with zstandard.ZstdDecompressor().stream_reader(archive.open("rb")) as raw:
        with tarfile.open(fileobj=raw, mode="r|") as members:
            for member in members:
                if member.name == "manifest.json":
                    manifest = json.loads(members.extractfile(member).read())
    taken = manifest["repodata"]["main/noarch/repodata.json"]
    listed = json.loads(after)["packages.conda"]
    assert all(f"ops-during-backup-{n}-1.0-0.conda" in listed for n in range(1, len(answers) + 1))

    # The fourth host joins the channel hosts for the restore alone.
    extra = tmp_path / "restored.yml"
    extra.write_text(json.dumps({"channel_hosts": {"hosts": {ops["restored"]: {}}}}))
    restore = ("-i", str(extra), "-l", ops["restored"], "-e", f"condaport_backup_archive={archive}")
    _playbook(ops, "restore.yml", *restore)
    restored = _repodata(ops, ops["restored_url"])
    print(f"restored repodata: {len(restored)} bytes, archived sha256 {taken[:12]}")
    archived = {n: r["sha256"] for n, r in json.loads(after)["packages.conda"].items()}
    served = {n: r["sha256"] for n, r in json.loads(restored)["packages.conda"].items()}
    assert {n: archived[n] for n in served if n in archived} == {
        n: served[n] for n in served if n in archived
    }
    assert json.loads(before)["packages.conda"].keys() <= served.keys()

    # The client trusts the scenario's CA only, as it did the primary.
    ok, message = install_once(
        f"{ops['restored_url']}/main", ops["ca_file"], ops["password"], tmp_path / "client"
    )
    assert ok, message

    # A second run of the restore changes nothing.
    again = _playbook(ops, "restore.yml", *restore)
    recap = [line for line in again.stdout.splitlines() if line.startswith(ops["restored"])]
    assert recap and "changed=0" in recap[-1], again.stdout[-3000:]

    # The restored host serves the very bytes the backup hashed: the restore has each
    # subdir's index owner adopt the restored index (condaport.subdir_index.adopt), so the
    # converge after it finds nothing stale and indexes nothing anew.
    assert hashlib.sha256(restored).hexdigest() == taken
