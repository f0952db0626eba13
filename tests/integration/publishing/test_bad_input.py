"""Bad input, driven through playbooks/publish.yml: each bad file or variable is refused by
name with its reason, and the channel still installs afterwards. A malformed file copied
into the served tree behind publishing's back is quarantined by the next index run."""

from __future__ import annotations

import os
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from publishing.channel import RUN, TREE, download, installs, listed
from tests.support.live import Channel
from tests.support.pkgbuild import (
    build_big_index_json,
    build_bzip2_bomb,
    build_conda,
    build_conda_with_decoy_info,
    build_conda_with_extra_entry,
    build_conda_with_index_in_pkg,
    build_conda_with_inner_duplicate,
    build_tar_bz2,
    build_twice_indexed,
    build_zstd_bomb,
)
from tests.support.playbook import copy_to_host, on_host, playbook, said


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


def _not_a_package(folder: Path) -> str:
    (folder / "build.log").write_text("not a package")
    return "build.log"


def _hidden_name(folder: Path) -> str:
    shutil.copy(build_tar_bz2(folder / "src", "sneaky"), folder / ".sneaky-1.0-0.tar.bz2")
    return ".sneaky-1.0-0.tar.bz2"


def _same_name_other_content(folder: Path) -> str:
    return build_conda(folder, "base-tool", version="1.0", build="0", salt=" (rebuilt)").name


def _corrupt_inner(folder: Path) -> str:
    package = build_conda(folder / "src", "inner")
    with zipfile.ZipFile(package) as source, zipfile.ZipFile(folder / package.name, "w") as out:
        for item in source.infolist():
            data = source.read(item)
            out.writestr(item, data[: len(data) // 2] if item.filename.startswith("pkg-") else data)
    return package.name


def _hostile(build: Callable[[Path, str], Path], name: str) -> Callable[[Path], str]:
    """A package made by one of pkgbuild's hostile builders."""
    return lambda folder: build(folder, name).name


def _built(name: str, **options: object) -> Callable[[Path], str]:
    """A package made by pkgbuild with the given (hostile) options."""
    return lambda folder: build_tar_bz2(folder, name, **options).name


_HOST_FILE = {"path_type": "hardlink", "size_in_bytes": 9, "sha256": "0" * 64}

BAD_FILES: dict[str, tuple[Callable[[Path], str], str]] = {
    "truncated .conda": (_truncated, "truncated"),
    "zero-byte file": (_zero, "zero bytes"),
    "garbage .tar.bz2": (_garbage, "truncated or garbage"),
    "renamed package": (_renamed, "renamed package"),
    "subdir the channel does not serve": (
        _built("apple-only", subdir="osx-arm64"),
        "not served by this channel",
    ),
    "non-package file": (_not_a_package, "not a conda package"),
    "hidden file name": (_hidden_name, "leading dot"),
    "same name, different content": (_same_name_other_content, "different content"),
    "payload file missing": (_built("hollow", drop_payload=True), "is missing"),
    "corrupt inner stream": (_corrupt_inner, "does not decompress"),
    "index.json without subdir": (_built("nowhere", index_overrides={"subdir": ""}), "no subdir"),
    # Issue 11 item 3: records rattler's indexer cannot read, which froze the subdir's index.
    "version 1..0": (_built("dots", version="1..0"), "is not a conda version"),
    "version 1.0$x": (_built("dollar", version="1.0$x"), "is not a conda version"),
    "build_number as text": (
        _built("numberless", index_overrides={"build_number": "x"}),
        "is not a non-negative integer",
    ),
    "a number in depends": (
        _built("numdep", index_overrides={"depends": [123]}),
        "depends must be a list of strings",
    ),
    "license as a list": (
        _built("twolicenses", index_overrides={"license": ["MIT", "BSD-3-Clause"]}),
        "license must be a string",
    ),
    "subdir naming another channel": (
        _built("escapee", index_overrides={"subdir": "../other/noarch"}),
        "is not a subdir name",
    ),
    # Issue 11 item 4: metadata naming host files; the validator runs as root.
    "paths.json names /etc/hostname": (
        _built("hostfile", extra_paths=[{**_HOST_FILE, "_path": "/etc/hostname"}]),
        "an absolute path",
    ),
    "paths.json names ../../x": (
        _built("climber", extra_paths=[{**_HOST_FILE, "_path": "../../x"}]),
        "components that could leave the package",
    ),
    "paths.json path through a symlinked folder": (
        _built(
            "linkwalker",
            symlinks={"share/etc": "/etc"},
            extra_paths=[{**_HOST_FILE, "_path": "share/etc/hostname"}],
        ),
        "through the symbolic link",
    ),
    # Issue 17: validation and the index read other copies of the metadata (each of these
    # used to be validated as one package and indexed as another, or a record that fails
    # the subdir's index), and packages that unpack to far more than they weigh.
    ".tar.bz2 with two info/index.json": (
        _hostile(build_twice_indexed, "twice"),
        "holds 'info/index.json' twice",
    ),
    ".conda with another info archive first": (
        _hostile(build_conda_with_decoy_info, "decoy"),
        "unexpected entry 'info-decoy-9.9-0.tar.zst'",
    ),
    ".conda with an unexpected entry": (
        _hostile(build_conda_with_extra_entry, "chatty"),
        "unexpected entry 'notes.txt'",
    ),
    ".conda whose inner archive holds a name twice": (
        _hostile(build_conda_with_inner_duplicate, "dup"),
        "holds 'share/dup/data.txt' twice",
    ),
    "info/index.json in both inner archives": (
        _hostile(build_conda_with_index_in_pkg, "both"),
        "holds 'info/index.json' twice",
    ),
    "17 MiB info/index.json": (
        _hostile(lambda folder, name: build_big_index_json(folder, 17 << 20, name), "verbose"),
        "info/index.json is larger than 16 MiB",
    ),
    # 9 GiB of zeros, past the default 8 GiB limit, in a few kilobytes.
    "bzip2 bomb": (
        _hostile(lambda folder, name: build_bzip2_bomb(folder, name, 9 << 30), "bzbomb"),
        "unpacks to more than 8 GiB",
    ),
    "zstd bomb": (
        _hostile(lambda folder, name: build_zstd_bomb(folder, name, 9 << 30), "zstbomb"),
        "unpacks to more than 8 GiB",
    ),
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
    result = playbook("publish.yml", {"condaport_publish_source_dir": str(folder)})
    assert result.returncode != 0
    assert f"{filename}: " in said(result) and reason in said(result), result.stdout[-3000:]
    assert listed(channel) == before
    installs(channel, tmp_path, "base-tool")


# Given as `-e key=value`, as people type them: every value reaches the play as a string.
# (Expected texts avoid quotes: the play prints messages as YAML, which re-quotes them.)
BAD_VARIABLES = {
    "unknown channel": ({"condaport_publish_channel": "nope"}, "is not one of this host's"),
    "missing source folder": (
        {"condaport_publish_source_dir": "/nonexistent"},
        "must name a folder",
    ),
    "negative retention": ({"condaport_publish_keep_versions": -1}, "must be 0 (keep all)"),
    "retention that is no number": (
        {"condaport_publish_keep_versions": "three"},
        "condaport_publish_keep_versions",
    ),
    "retired retention variable": (
        {"condaport_publish_keep_builds": 3},
        "condaport_publish_keep_builds: use condaport_publish_keep_versions",
    ),
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
    result = playbook(
        "publish.yml", {"condaport_publish_source_dir": str(folder), **extra}, as_strings=True
    )
    assert result.returncode != 0
    assert message in said(result), result.stdout[-3000:]
    assert listed(channel) == before
    installs(channel, tmp_path, "base-tool")


def test_a_host_running_another_build_refuses_the_publish(
    channel: Channel, baseline: set[str], tmp_path: Path
) -> None:
    """The host compares the wheel pip installed (its sha256, recorded at installation) with
    the one the controller would install. A controller whose checkout differs by one byte of
    host code names another checksum; extra vars stand in for it here."""
    before = listed(channel)
    build_tar_bz2(tmp_path, "other-build")
    other = "0" * 64
    result = playbook(
        "publish.yml",
        {"condaport_publish_source_dir": str(tmp_path), "condaport_tools_wheel_checksum": other},
    )
    assert result.returncode != 0
    assert f"controller would install the wheel with sha256 {other}" in said(result)
    assert "converge the host first" in said(result)
    assert listed(channel) == before


def test_a_mixed_batch_places_the_good_files_and_fails_naming_the_bad(
    channel: Channel, baseline: set[str], tmp_path: Path
) -> None:
    build_tar_bz2(tmp_path, f"mixed-good{RUN}")
    (tmp_path / "mixed-bad-1.0-0.conda").write_bytes(b"nope")
    result = playbook("publish.yml", {"condaport_publish_source_dir": str(tmp_path)})
    assert result.returncode != 0 and "mixed-bad-1.0-0.conda: " in said(result)
    assert f"mixed-good{RUN}-1.0-0.tar.bz2" in listed(channel)


def test_all_or_nothing_places_nothing(
    channel: Channel, baseline: set[str], tmp_path: Path
) -> None:
    build_tar_bz2(tmp_path, "batch-good")
    (tmp_path / "batch-bad-1.0-0.conda").write_bytes(b"nope")
    result = playbook(
        "publish.yml",
        {"condaport_publish_source_dir": str(tmp_path), "condaport_publish_all_or_nothing": True},
        as_strings=True,  # "True", a string: read with | bool
    )
    assert result.returncode != 0 and "nothing of this batch was placed" in said(result)
    assert "batch-good-1.0-0.tar.bz2" not in listed(channel)


def test_a_malformed_file_copied_into_the_tree_is_quarantined_and_the_rest_indexed(
    channel: Channel, baseline: set[str], tmp_path: Path
) -> None:
    """Issue 11 item 3: one such file froze its subdir's index, failing every later publish
    and site.yml itself, until someone removed it by hand."""
    folder = tmp_path / "copied"
    bad = build_tar_bz2(folder, f"frozen{RUN}", index_overrides={"build_number": "x"}).name
    good = build_tar_bz2(folder, f"thawed{RUN}").name
    copy_to_host(channel.container, folder, f"{TREE}/noarch")

    healed = playbook("index.yml")
    assert healed.returncode == 0, healed.stdout[-3000:]
    output = said(healed)
    assert "WARNING: 1 package file(s) could not be indexed" in output, output[-3000:]
    assert f"main/noarch/{bad} -> main/.quarantine/noarch/{bad}" in output
    assert "build_number" in output
    names = listed(channel)
    assert good in names and bad not in names
    on_host(channel.container, "test", "-f", f"{TREE}/.quarantine/noarch/{bad}")
    on_host(channel.container, "test", "!", "-e", f"{TREE}/noarch/{bad}")
    assert download(channel, f".quarantine/noarch/{bad}")[0] == 404  # never served

    again = playbook("index.yml")
    assert again.returncode == 0 and "changed=0" in said(again)
    assert "WARNING" not in said(again)  # the handler is quiet when nothing happened
    published = tmp_path / "after"
    build_tar_bz2(published, f"after{RUN}")
    result = playbook("publish.yml", {"condaport_publish_source_dir": str(published)})
    assert result.returncode == 0, result.stdout[-3000:]
    assert f"after{RUN}-1.0-0.tar.bz2" in listed(channel)
    installs(channel, tmp_path, f"thawed{RUN}")
