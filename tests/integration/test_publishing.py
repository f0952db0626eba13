"""Publishing a CI can trust, driven through playbooks/publish.yml against a real host.

Suites: bad input (each refused with a message naming it, the channel still installs),
concurrent publishers under a repodata-fetching client, killed runs and a full disk.
Tests run in file order and build on each other's channel state.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import ssl
import subprocess
import threading
import zipfile
from base64 import b64encode
from pathlib import Path

import pytest
from conftest import Channel, fetch

from tests.support.client import run_install, write_auth_file
from tests.support.pkgbuild import build_conda, build_tar_bz2

PROJECT = Path(__file__).resolve().parents[2]
TREE = "/srv/condaport/channels/main"
# Package names unique to this run, so the suite can run again against the same host.
RUN = os.urandom(3).hex()


def playbook(name: str, **extra_vars: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ANSIBLE_CONFIG": str(PROJECT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    argv = ["ansible-playbook", "-i", os.environ["CONDAPORT_INVENTORY"]]
    argv += [str(PROJECT / "playbooks" / name), "-e", json.dumps(extra_vars)]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)


def on_host(container: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", "exec", container, *argv], capture_output=True, text=True, check=check
    )


def said(result: subprocess.CompletedProcess[str]) -> str:
    """The play's output with line folding undone, for message checks."""
    return " ".join(result.stdout.split())


# The host image has no procps: find processes through /proc, as the kernel shows them.
# $1: pattern; $2: seconds to keep watching for it (0: one pass). Prints how many died.
_KILL = """end=$(( $(date +%s) + $2 ))
while :; do
  n=0
  for p in /proc/[0-9]*; do
    [ "${p#/proc/}" = "$$" ] && continue
    if tr '\\0' ' ' < "$p/cmdline" 2>/dev/null | grep -q "$1"; then
      kill -9 "${p#/proc/}" && n=$((n+1))
    fi
  done
  if [ "$n" -gt 0 ] || [ "$(date +%s)" -ge "$end" ]; then echo "$n"; exit 0; fi
  sleep 0.01
done"""


def kill_on_host(container: str, pattern: str) -> int:
    """SIGKILL every process on the host whose command line matches; returns how many."""
    out = on_host(container, "sh", "-c", _KILL, "kill", pattern, "0", check=False).stdout
    return int(out.strip() or 0)


def kill_when_seen(container: str, pattern: str, timeout: int = 120) -> subprocess.Popen[str]:
    """Watch inside the host, with no round trips, and SIGKILL the first matching process."""
    return subprocess.Popen(
        ["podman", "exec", container, "sh", "-c", _KILL, "kill", pattern, str(timeout)],
        stdout=subprocess.PIPE,
        text=True,
    )


def listed(channel: Channel, subdir: str = "noarch") -> dict[str, dict]:
    answer = fetch(
        f"{channel.url}/{subdir}/repodata.json",
        ca_file=channel.ca_file,
        auth=(channel.user, channel.password),
    )
    assert answer.status == 200
    repodata = json.loads(answer.body)
    return {**repodata["packages"], **repodata["packages.conda"]}


def installs(channel: Channel, tmp_path: Path, spec: str) -> None:
    auth = write_auth_file(tmp_path / "auth.json", channel.url, channel.user, channel.password)
    prefix = tmp_path / f"env-{len(list(tmp_path.iterdir()))}"
    result = run_install(
        channel.url,
        [spec],
        prefix,
        auth_file=auth,
        ca_file=channel.ca_file,
        cache_dir=tmp_path / "cache",
    )
    assert result.returncode == 0, result.stderr


def assert_every_listed_file_downloads(channel: Channel) -> None:
    for subdir in ("noarch", "linux-64"):
        for filename in listed(channel, subdir):
            answer = fetch(
                f"{channel.url}/{subdir}/{filename}",
                ca_file=channel.ca_file,
                auth=(channel.user, channel.password),
            )
            assert answer.status == 200, (
                f"{subdir}/{filename} is listed but answers {answer.status}"
            )


@pytest.fixture(scope="module")
def baseline(channel: Channel, tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Two good packages every later test expects to keep installing."""
    folder = tmp_path_factory.mktemp("baseline")
    build_conda(folder, "base-tool", version="1.0", build="0")
    build_tar_bz2(folder, "native-lib", version="2.0", build="0", subdir="linux-64")
    # Overwrite only so that the suite can be re-run against the same host.
    result = playbook(
        "publish.yml", condaport_publish_source_dir=str(folder), condaport_publish_overwrite=True
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert "base-tool-1.0-0.conda" in listed(channel)
    assert "native-lib-2.0-0.tar.bz2" in listed(channel, "linux-64")
    return {"base-tool-1.0-0.conda", "native-lib-2.0-0.tar.bz2"}


def _truncated(folder: Path) -> str:
    package = build_conda(folder / "src", "cut")
    (folder / package.name).write_bytes(package.read_bytes()[:400])
    return package.name


def _zero(folder: Path) -> str:
    (folder / "empty-1.0-0.conda").write_bytes(b"")
    return "empty-1.0-0.conda"


def _garbage(folder: Path) -> str:
    (folder / "junk-1.0-0.tar.bz2").write_bytes(os.urandom(2048))
    return "junk-1.0-0.tar.bz2"


def _renamed(folder: Path) -> str:
    shutil.copy(build_conda(folder / "src", "original"), folder / "impostor-1.0-0.conda")
    return "impostor-1.0-0.conda"


def _unserved_subdir(folder: Path) -> str:
    return build_tar_bz2(folder, "apple-only", subdir="osx-arm64").name


def _not_a_package(folder: Path) -> str:
    (folder / "build.log").write_text("not a package")
    return "build.log"


def _hidden_name(folder: Path) -> str:
    shutil.copy(build_tar_bz2(folder / "src", "sneaky"), folder / ".sneaky-1.0-0.tar.bz2")
    return ".sneaky-1.0-0.tar.bz2"


def _same_name_other_content(folder: Path) -> str:
    build_conda(folder, "base-tool", version="1.0", build="0", salt=" (rebuilt)")
    return "base-tool-1.0-0.conda"


def _missing_payload(folder: Path) -> str:
    return build_tar_bz2(folder, "hollow", drop_payload=True).name


def _corrupt_inner(folder: Path) -> str:
    package = build_conda(folder / "src", "inner")
    with zipfile.ZipFile(package) as source, zipfile.ZipFile(folder / package.name, "w") as out:
        for item in source.infolist():
            data = source.read(item)
            out.writestr(item, data[: len(data) // 2] if item.filename.startswith("pkg-") else data)
    return package.name


def _no_subdir(folder: Path) -> str:
    return build_tar_bz2(folder, "nowhere", index_overrides={"subdir": ""}).name


BAD_FILES = {
    "truncated .conda": (_truncated, "truncated"),
    "zero-byte file": (_zero, "zero bytes"),
    "garbage .tar.bz2": (_garbage, "truncated or garbage"),
    "renamed package": (_renamed, "renamed package"),
    "subdir the channel does not serve": (_unserved_subdir, "not served by this channel"),
    "non-package file": (_not_a_package, "not a conda package"),
    "hidden file name": (_hidden_name, "leading dot"),
    "same name, different content": (_same_name_other_content, "different content"),
    "payload file missing": (_missing_payload, "is missing"),
    "corrupt inner stream": (_corrupt_inner, "does not decompress"),
    "index.json without subdir": (_no_subdir, "names no subdir"),
}


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_bad_file_is_refused_by_name_and_the_channel_keeps_installing(
    channel: Channel, baseline: set[str], tmp_path: Path, kind: str
) -> None:
    make, reason = BAD_FILES[kind]
    folder = tmp_path / "dist"
    folder.mkdir()
    before = listed(channel)
    filename = make(folder)
    result = playbook("publish.yml", condaport_publish_source_dir=str(folder))
    assert result.returncode != 0
    assert f"{filename}: " in said(result) and reason in said(result), result.stdout[-3000:]
    assert listed(channel) == before
    installs(channel, tmp_path, "base-tool")


BAD_VARIABLES = {
    "unknown channel": ({"condaport_publish_channel": "nope"}, "is not one of this host's"),
    "missing source folder": (
        {"condaport_publish_source_dir": "/nonexistent"},
        "must name a folder",
    ),
    "negative retention": ({"condaport_publish_keep_builds": -1}, "must be 0"),
    "path trick in a removal": (
        {"condaport_publish_remove": ["../../etc/passwd"]},
        "path separators",
    ),
}


@pytest.mark.parametrize("kind", list(BAD_VARIABLES))
def test_bad_variable_fails_with_a_message_and_changes_nothing(
    channel: Channel, baseline: set[str], tmp_path: Path, kind: str
) -> None:
    extra, message = BAD_VARIABLES[kind]
    before = listed(channel)
    folder = tmp_path / "dist"
    build_tar_bz2(folder, "should-not-land")
    extra = {"condaport_publish_source_dir": str(folder), **extra}
    result = playbook("publish.yml", **extra)
    assert result.returncode != 0
    assert message in said(result), result.stdout[-3000:]
    assert listed(channel) == before
    installs(channel, tmp_path, "base-tool")


def test_a_mixed_batch_places_the_good_files_and_fails_naming_the_bad(
    channel: Channel, baseline: set[str], tmp_path: Path
) -> None:
    build_tar_bz2(tmp_path, f"mixed-good{RUN}")
    (tmp_path / "mixed-bad-1.0-0.conda").write_bytes(b"nope")
    result = playbook("publish.yml", condaport_publish_source_dir=str(tmp_path))
    assert result.returncode != 0 and "mixed-bad-1.0-0.conda: " in said(result)
    assert f"mixed-good{RUN}-1.0-0.tar.bz2" in listed(channel)


def test_all_or_nothing_places_nothing(
    channel: Channel, baseline: set[str], tmp_path: Path
) -> None:
    build_tar_bz2(tmp_path, "batch-good")
    (tmp_path / "batch-bad-1.0-0.conda").write_bytes(b"nope")
    result = playbook(
        "publish.yml",
        condaport_publish_source_dir=str(tmp_path),
        condaport_publish_all_or_nothing=True,
    )
    assert result.returncode != 0 and "nothing of this batch was placed" in said(result)
    assert "batch-good-1.0-0.tar.bz2" not in listed(channel)


class RepodataPoller(threading.Thread):
    """Fetches repodata.json in a loop over one keep-alive connection; every fetch must parse,
    and every file it lists for the first time must download at that moment."""

    def __init__(self, channel: Channel, minimum: int) -> None:
        super().__init__(daemon=True)
        self.channel, self.minimum = channel, minimum
        self.fetches, self.errors, self.stop = 0, [], threading.Event()
        self.seen: set[str] = set()

    def run(self) -> None:
        base = self.channel.url.split("://", 1)[1]
        host_port, path = base.split("/", 1)
        host, port = host_port.split(":")
        context = ssl.create_default_context(cafile=str(self.channel.ca_file))
        token = b64encode(f"{self.channel.user}:{self.channel.password}".encode()).decode()
        headers = {"Authorization": f"Basic {token}"}
        conn = http.client.HTTPSConnection(host, int(port), context=context, timeout=30)
        while not (self.stop.is_set() and self.fetches >= self.minimum):
            conn.request("GET", f"/{path}/noarch/repodata.json", headers=headers)
            response = conn.getresponse()
            body = response.read()
            self.fetches += 1
            try:
                repodata = json.loads(body)
            except ValueError as exc:
                self.errors.append(f"fetch {self.fetches}: unparsable repodata ({exc})")
                continue
            names = {**repodata["packages"], **repodata["packages.conda"]}
            for filename in sorted(set(names) - self.seen):
                conn.request("HEAD", f"/{path}/noarch/{filename}", headers=headers)
                head = conn.getresponse()
                head.read()
                if head.status != 200:
                    self.errors.append(f"{filename} listed but answered {head.status}")
                self.seen.add(filename)


def test_eight_concurrent_publishers_all_land_while_a_client_polls(
    channel: Channel, baseline: set[str], tmp_path: Path
) -> None:
    folders = []
    for job in range(8):
        folder = tmp_path / f"job{job}"
        for n in range(50):
            build_tar_bz2(folder, f"job{RUN}-{job}-{n:02d}")
        folders.append(folder)
    poller = RepodataPoller(channel, minimum=5000)
    poller.start()
    env = {**os.environ, "ANSIBLE_CONFIG": str(PROJECT / "ansible.cfg")}
    jobs = [
        subprocess.Popen(
            [
                "ansible-playbook",
                "-i",
                os.environ["CONDAPORT_INVENTORY"],
                str(PROJECT / "playbooks" / "publish.yml"),
                "-e",
                json.dumps({"condaport_publish_source_dir": str(folder)}),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for folder in folders
    ]
    outputs = [job.communicate(timeout=900)[0] for job in jobs]
    poller.stop.set()
    poller.join(timeout=600)
    assert [job.returncode for job in jobs] == [0] * 8, [o[-1500:] for o in outputs]
    assert poller.errors == []
    assert poller.fetches >= 5000
    names = listed(channel)
    missing = [f"job{RUN}-{j}-{n:02d}-1.0-0.tar.bz2" for j in range(8) for n in range(50)]
    assert [m for m in missing if m not in names] == []
    print(f"concurrency: 8 x 50 packages, {poller.fetches} repodata fetches, 0 errors")


def test_a_killed_index_run_keeps_the_last_index_and_the_playbook_heals(
    channel: Channel, baseline: set[str], tmp_path: Path
) -> None:
    for n in range(1500):
        build_tar_bz2(tmp_path / "bulk", f"synced{RUN}-{n:04d}")
    subprocess.run(
        f"tar -C {tmp_path / 'bulk'} -cf - . | podman exec -i {channel.container} "
        f"tar -C {TREE}/noarch -xf -",
        shell=True,
        check=True,
    )
    before = listed(channel)
    watcher = kill_when_seen(channel.container, "condaport-index run", timeout=60)
    indexer = subprocess.Popen(["podman", "exec", channel.container, "condaport-index", "run"])
    indexer.wait(timeout=120)
    killed = int(watcher.communicate(timeout=120)[0].strip() or 0)
    assert killed, "the index run finished before it could be killed"
    now = listed(channel)
    assert set(now) in (set(before), set(before) | {p.name for p in (tmp_path / "bulk").iterdir()})
    assert_every_listed_file_downloads(channel)
    healed = playbook("index.yml")
    assert healed.returncode == 0, healed.stdout[-2000:]
    assert f"synced{RUN}-1499-1.0-0.tar.bz2" in listed(channel)


def test_a_killed_publish_leaves_a_valid_channel_and_a_rerun_completes_it(
    channel: Channel, baseline: set[str], tmp_path: Path
) -> None:
    for n in range(300):
        build_tar_bz2(tmp_path, f"late{RUN}-{n:03d}")
    env = {**os.environ, "ANSIBLE_CONFIG": str(PROJECT / "ansible.cfg")}
    watcher = kill_when_seen(channel.container, "condaport-publish place")
    job = subprocess.Popen(
        [
            "ansible-playbook",
            "-i",
            os.environ["CONDAPORT_INVENTORY"],
            str(PROJECT / "playbooks" / "publish.yml"),
            "-e",
            json.dumps({"condaport_publish_source_dir": str(tmp_path)}),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    job.communicate(timeout=300)
    killed = int(watcher.communicate(timeout=200)[0].strip() or 0)
    assert killed, "the publish finished before it could be killed"
    assert job.returncode != 0
    assert_every_listed_file_downloads(channel)
    rerun = playbook("publish.yml", condaport_publish_source_dir=str(tmp_path))
    assert rerun.returncode == 0, rerun.stdout[-2000:]
    names = listed(channel)
    assert all(f"late{RUN}-{n:03d}-1.0-0.tar.bz2" in names for n in range(300))
    leftovers = on_host(channel.container, "find", TREE, "-name", ".*.partial").stdout
    assert leftovers.strip() == ""


def _fill_disk(channel: Channel, leave_bytes: int) -> None:
    free = int(on_host(channel.container, "df", "--output=avail", "-B1", TREE).stdout.split()[-1])
    on_host(
        channel.container, "fallocate", "-l", str(max(free - leave_bytes, 0)), f"{TREE}/.filler"
    )


def test_disk_full_while_placing_loses_nothing_and_a_rerun_heals(
    channel: Channel, baseline: set[str], tmp_path: Path
) -> None:
    before = listed(channel)
    payload = tmp_path / "dist"
    build_big(payload, size=3 * 1024 * 1024, name=f"blob{RUN}")
    _fill_disk(channel, leave_bytes=1024 * 1024)
    try:
        result = playbook("publish.yml", condaport_publish_source_dir=str(payload))
        assert result.returncode != 0
        assert "No space left on device" in said(result), result.stdout[-3000:]
        assert set(before) <= set(listed(channel))
        assert_every_listed_file_downloads(channel)
        leftovers = on_host(channel.container, "find", TREE, "-name", ".*.partial").stdout
        assert leftovers.strip() == ""
    finally:
        on_host(channel.container, "rm", "-f", f"{TREE}/.filler")
    rerun = playbook("publish.yml", condaport_publish_source_dir=str(payload))
    assert rerun.returncode == 0, rerun.stdout[-3000:]
    assert f"blob{RUN}-1.0-0.tar.bz2" in listed(channel)


def test_disk_full_while_indexing_keeps_the_last_index_and_index_yml_heals(
    channel: Channel, baseline: set[str], tmp_path: Path
) -> None:
    before = listed(channel)
    build_tar_bz2(tmp_path, f"squeezed{RUN}")
    _fill_disk(channel, leave_bytes=16 * 1024)
    try:
        result = playbook("publish.yml", condaport_publish_source_dir=str(tmp_path))
        assert result.returncode != 0
        assert "index of main/noarch failed" in said(result), result.stdout[-3000:]
        assert listed(channel) == before
        assert_every_listed_file_downloads(channel)
    finally:
        on_host(channel.container, "rm", "-f", f"{TREE}/.filler")
    healed = playbook("index.yml")
    assert healed.returncode == 0, healed.stdout[-2000:]
    assert f"squeezed{RUN}-1.0-0.tar.bz2" in listed(channel)
    installs(channel, tmp_path, "base-tool")


def build_big(folder: Path, size: int, name: str = "blob") -> Path:
    """A valid package whose payload is `size` random (incompressible) bytes."""
    import hashlib
    import io
    import tarfile

    folder.mkdir(parents=True, exist_ok=True)
    data = os.urandom(size)
    index = {
        "name": name,
        "version": "1.0",
        "build": "0",
        "build_number": 0,
        "depends": [],
        "subdir": "noarch",
        "noarch": "generic",
    }
    paths = {
        "paths": [
            {
                "_path": "share/blob.bin",
                "path_type": "hardlink",
                "sha256": hashlib.sha256(data).hexdigest(),
                "size_in_bytes": size,
            }
        ],
        "paths_version": 1,
    }
    target = folder / f"{name}-1.0-0.tar.bz2"
    with tarfile.open(target, "w:bz2", compresslevel=1) as archive:
        for name, content in (
            ("info/index.json", json.dumps(index).encode()),
            ("info/paths.json", json.dumps(paths).encode()),
            ("info/files", b"share/blob.bin\n"),
            ("share/blob.bin", data),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return target
