"""condaport.backup: one consistent archive of a host, restored onto a fresh one, and
archives from an operator's storage treated as hostile."""

from __future__ import annotations

import io
import json
import os
import pwd
import shutil
import stat
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import pytest
import zstandard

from condaport import channels_command, index
from condaport.backup import BackupError, HostileArchive, Places, backup, restore
from condaport.locking import channel_lock
from tests.support.channel_tree import ChannelTree, make_tree
from tests.support.pkgbuild import build_conda


def _host(tree: ChannelTree) -> Places:
    """A published channel, root-only TLS material and configuration, an htpasswd file."""
    build_conda(tree.subdir("noarch"), "alpha")
    index.run(tree.root, tree.state, None)
    etc = tree.base / "etc"
    (etc / "tls").mkdir(parents=True)
    (etc / "tls" / "ca.key").write_text("-----BEGIN PRIVATE KEY-----\nsecret\n")
    (etc / "tls" / "ca.key").chmod(0o600)
    (etc / "tls" / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\npublic\n")
    (etc / "condaport.json").write_text(tree.config.read_text())
    auth = tree.base / "auth"
    auth.mkdir()
    (auth / "main.htpasswd").write_text("reader:$2y$05$hash\n")
    (auth / "main.htpasswd").chmod(0o640)
    return Places(tree.root, tree.state, etc, auth, tree.staging)


def _fresh(base: Path) -> Places:
    return Places(base / "channels", base / "state", base / "etc", base / "auth")


def _archive_of(members: list[tuple[tarfile.TarInfo, bytes | None]], path: Path) -> Path:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    path.write_bytes(zstandard.ZstdCompressor().compress(raw.getvalue()))
    return path


def _member(name: str, data: bytes | None = b"x", kind: bytes = tarfile.REGTYPE, **extra):
    info = tarfile.TarInfo(name)
    info.type = kind
    for key, value in extra.items():
        setattr(info, key, value)
    return info, data


def _manifest(repodata: dict[str, str] | None = None):
    body = json.dumps({"format": 1, "channels": [], "repodata": repodata or {}}).encode()
    return _member("manifest.json", body)


def test_a_restored_host_serves_the_same_repodata_and_keeps_its_secrets(
    tree: ChannelTree, tmp_path: Path
) -> None:
    places = _host(tree)
    archive = tmp_path / "host.tar.zst"
    report = backup(places, ["main"], archive, writer=None)

    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    assert set(report.repodata) == {"main/noarch/repodata.json", "main/linux-64/repodata.json"}
    fresh = _fresh(tmp_path / "fresh")
    result = restore(archive, fresh, writer=None, work_dir=tmp_path)

    assert result["changed"] is True
    for subdir in ("noarch", "linux-64"):
        original = (tree.subdir(subdir) / "repodata.json").read_bytes()
        assert (fresh.channels_root / "main" / subdir / "repodata.json").read_bytes() == original
    package = fresh.channels_root / "main" / "noarch" / "alpha-1.0-0.conda"
    original_mode = stat.S_IMODE((tree.subdir("noarch") / "alpha-1.0-0.conda").stat().st_mode)
    # NGINX must read what the writer placed: the modes come back as they were.
    assert stat.S_IMODE(package.stat().st_mode) == original_mode
    repodata_mode = stat.S_IMODE((tree.subdir("noarch") / "repodata.json").stat().st_mode)
    restored = fresh.channels_root / "main" / "noarch" / "repodata.json"
    assert stat.S_IMODE(restored.stat().st_mode) == repodata_mode
    assert sorted(p.name for p in (fresh.state_dir / "fingerprints").iterdir()) == ["main"]
    key = fresh.etc_dir / "tls" / "ca.key"
    assert key.read_text() == (places.etc_dir / "tls" / "ca.key").read_text()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE((fresh.auth_dir / "main.htpasswd").stat().st_mode) == 0o640
    assert stat.S_IMODE(fresh.state_dir.stat().st_mode) == 0o700
    # The restored index is the subdirs' own: the converge after a restore (its index
    # heal) finds nothing stale and keeps the bytes the manifest proved.
    assert sorted(result["adopted"]) == ["main/linux-64", "main/noarch"]
    assert index.run(fresh.channels_root, fresh.state_dir, None) == {}
    # A second run of the restore playbook changes nothing.
    assert restore(archive, fresh, writer=None, work_dir=tmp_path)["changed"] is False


def test_the_backup_waits_for_a_writer_and_takes_what_it_finished(
    tree: ChannelTree, tmp_path: Path
) -> None:
    """A publish holding the lock finishes first; the archive has its package and the
    repodata that lists it, never one without the other."""
    places = _host(tree)
    archive = tmp_path / "host.tar.zst"
    holding, release = threading.Event(), threading.Event()

    def publish() -> None:
        with channel_lock(tree.state, "main"):
            holding.set()
            release.wait(10)
            build_conda(tree.subdir("noarch"), "beta")
            index.run(tree.root, tree.state, None)

    writer = threading.Thread(target=publish)
    writer.start()
    holding.wait(10)
    reports = []
    taker = threading.Thread(
        target=lambda: reports.append(backup(places, ["main"], archive, writer=None))
    )
    taker.start()
    time.sleep(0.5)
    assert not archive.exists(), "the backup did not wait for the channel's lock"
    release.set()
    writer.join()
    taker.join()

    fresh = _fresh(tmp_path / "fresh")
    restore(archive, fresh, writer=None, work_dir=tmp_path)
    served = json.loads((fresh.channels_root / "main/noarch/repodata.json").read_bytes())
    assert "beta-1.0-0.conda" in served["packages.conda"]
    assert (fresh.channels_root / "main/noarch/beta-1.0-0.conda").is_file()
    assert reports[0].longest_lock_seconds < 5


def test_the_lock_is_held_only_while_the_tree_is_linked(tree: ChannelTree, tmp_path: Path) -> None:
    """Streaming happens after the lock is released: a writer that comes while the archive
    is written gets the lock at once (the upload service waits 30 s at most)."""
    places = _host(tree)
    for number in range(40):
        build_conda(tree.subdir("noarch"), f"pkg{number}")
    report = backup(places, ["main"], tmp_path / "host.tar.zst", writer=None)
    assert report.longest_lock_seconds < 1.0
    assert report.files > 40


@pytest.mark.parametrize(
    ("member", "says"),
    [
        (_member("channels/main/../../../etc/cron.d/evil"), "steps outside"),
        (_member("/etc/cron.d/evil"), "absolute"),
        (_member("etc/tls/ca.key", None, tarfile.SYMTYPE, linkname="/etc/shadow"), "link"),
        (_member("etc/tls/ca.key", None, tarfile.LNKTYPE, linkname="etc/condaport.json"), "link"),
        (_member("etc/null", None, tarfile.CHRTYPE, devmajor=1, devminor=3), "device"),
        (_member("etc/pipe", None, tarfile.FIFOTYPE), "device"),
        (_member("root/.ssh/authorized_keys"), "no section"),
        (_member("channels/.hidden/noarch/x.conda"), "not a channel name"),
    ],
)
def test_a_hostile_archive_is_refused_and_nothing_is_placed(
    tmp_path: Path, member: tuple, says: str
) -> None:
    archive = _archive_of([member, _manifest()], tmp_path / "hostile.tar.zst")
    fresh = _fresh(tmp_path / "fresh")
    with pytest.raises(HostileArchive, match=says):
        restore(archive, fresh, writer=None, work_dir=tmp_path)
    assert not (tmp_path / "fresh").exists()
    assert not list(tmp_path.glob("condaport-restore-*")), "the staging folder stayed behind"


def test_an_archive_without_its_manifest_is_refused(tmp_path: Path) -> None:
    archive = _archive_of([_member("state/locks/main.lock", b"")], tmp_path / "cut.tar.zst")
    with pytest.raises(HostileArchive, match="no manifest"):
        restore(archive, _fresh(tmp_path / "fresh"), writer=None, work_dir=tmp_path)


def test_repodata_that_differs_from_the_manifest_is_refused(tmp_path: Path) -> None:
    members = [
        _member("channels/main/noarch/repodata.json", b'{"packages": {}}'),
        _manifest({"main/noarch/repodata.json": "0" * 64}),
    ]
    archive = _archive_of(members, tmp_path / "tampered.tar.zst")
    with pytest.raises(BackupError, match="does not match its manifest"):
        restore(archive, _fresh(tmp_path / "fresh"), writer=None, work_dir=tmp_path)
    assert not (tmp_path / "fresh").exists()


def test_a_restore_never_merges_into_live_channels(tree: ChannelTree, tmp_path: Path) -> None:
    places = _host(tree)
    archive = tmp_path / "host.tar.zst"
    backup(places, ["main"], archive, writer=None)
    with pytest.raises(BackupError, match="not empty: restore only onto a fresh host"):
        restore(archive, places, writer=None, work_dir=tmp_path)


def test_links_planted_in_a_tree_stay_out_of_the_archive(tree: ChannelTree, tmp_path: Path) -> None:
    places = _host(tree)
    (tree.subdir("noarch") / "shadow").symlink_to("/etc/shadow")
    archive = tmp_path / "host.tar.zst"
    report = backup(places, ["main"], archive, writer=None)
    assert str(tree.subdir("noarch") / "shadow") in report.skipped
    with zstandard.ZstdDecompressor().stream_reader(archive.open("rb")) as raw:
        with tarfile.open(fileobj=raw, mode="r|") as members:
            names = [m.name for m in members]
    assert "channels/main/noarch/shadow" not in names
    assert names[-1] == "manifest.json"


def test_the_command_writes_and_restores_from_the_host_configuration(
    tree: ChannelTree, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    places = _host(tree)
    config = places.etc_dir / "condaport.json"
    settings = json.loads(config.read_text())
    config.write_text(json.dumps({**settings, "auth_dir": str(places.auth_dir)}))
    archive = tmp_path / "host.tar.zst"

    assert (
        channels_command.main(["backup", "--config", str(config), "--archive", str(archive)]) == 0
    )
    written = json.loads(capsys.readouterr().out)
    assert written["changed"] is True and "main/noarch/repodata.json" in written["repodata"]

    # The fresh host's configuration names other folders: a restore follows its own.
    fresh = _fresh(tmp_path / "fresh")
    fresh.etc_dir.mkdir(parents=True)
    fresh_config = fresh.etc_dir / "condaport.json"
    fresh_config.write_text(
        json.dumps(
            {
                **settings,
                "channels_root": str(fresh.channels_root),
                "state_dir": str(fresh.state_dir),
                "auth_dir": str(fresh.auth_dir),
                "staging_root": "",
            }
        )
    )
    argv = ["restore", "--config", str(fresh_config), "--archive", str(archive)]
    assert channels_command.main([*argv, "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["result"] == "would restore"
    assert not fresh.channels_root.exists()
    assert channels_command.main(argv) == 0
    assert json.loads(capsys.readouterr().out)["repodata"] == written["repodata"]
    original = (tree.subdir("noarch") / "repodata.json").read_bytes()
    assert (fresh.channels_root / "main/noarch/repodata.json").read_bytes() == original


def test_a_hostile_archive_fails_the_command_with_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = _archive_of([_member("../../x"), _manifest()], tmp_path / "hostile.tar.zst")
    fresh = _fresh(tmp_path / "fresh")
    fresh.etc_dir.mkdir(parents=True)
    config = fresh.etc_dir / "condaport.json"
    places = {"channels_root": str(fresh.channels_root), "state_dir": str(fresh.state_dir)}
    config.write_text(json.dumps(places))
    argv = ["restore", "--config", str(config), "--archive", str(archive)]
    assert channels_command.main(argv) == 1
    assert "refused: '../../x' steps outside its folder" in capsys.readouterr().err
    assert os.listdir(fresh.etc_dir) == ["condaport.json"]
    assert not fresh.channels_root.exists()


def test_the_trees_are_read_as_the_writer_account(tmp_path: Path) -> None:
    """The child that reads the trees works as the writer: a root-only file planted in a
    tree is not readable to it, and the backup fails instead of archiving it as root."""
    base = Path(tempfile.mkdtemp(dir="/var/tmp"))
    try:
        base.chmod(0o755)
        tree = make_tree(base)
        places = _host(tree)
        nobody = pwd.getpwnam("nobody")
        for top in (tree.root, tree.state, tree.staging):
            for folder, dirs, files in os.walk(top):
                for name in [*dirs, *files, ""]:
                    os.lchown(Path(folder) / name, nobody.pw_uid, nobody.pw_gid)
        archive = tmp_path / "host.tar.zst"
        report = backup(places, ["main"], archive, writer="nobody")
        assert "main/noarch/repodata.json" in report.repodata
        assert list(tree.staging.iterdir()) == [], "the writer's snapshot stayed behind"

        planted = tree.subdir("noarch") / "root-only.conda"
        planted.write_bytes(b"secret")
        planted.chmod(0o600)
        with pytest.raises(BackupError, match="writer part"):
            backup(places, ["main"], tmp_path / "again.tar.zst", writer="nobody")
        assert not (tmp_path / "again.tar.zst").exists()
    finally:
        shutil.rmtree(base)
