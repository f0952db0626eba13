"""The same guarantees as the playbook path (tests/integration/publishing): a bad upload is
refused with its reason and nothing served changes, a package sent to another subdir is
400, an oversize body 413, and a name's bytes change only by a maintainer's force or
delete."""

from __future__ import annotations

import http.client
import os
import ssl
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.live import fetch
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
from uploading.site import (
    RUN,
    TREE,
    Site,
    credentials,
    listed,
    on_host,
    put,
    send,
    shard_mismatches,
)

Maker = Callable[[Path], tuple[str, bytes]]


def _truncated(folder: Path) -> tuple[str, bytes]:
    package = build_conda(folder, f"cut-{RUN}")
    return package.name, package.read_bytes()[:400]


def _garbage(folder: Path) -> tuple[str, bytes]:
    return f"junk-{RUN}-1.0-0.tar.bz2", os.urandom(2048)


def _zero(folder: Path) -> tuple[str, bytes]:
    return f"empty-{RUN}-1.0-0.conda", b""


def _renamed(folder: Path) -> tuple[str, bytes]:
    return f"impostor-{RUN}-1.0-0.conda", build_conda(folder, f"original-{RUN}").read_bytes()


def _hidden(folder: Path) -> tuple[str, bytes]:
    return f".sneaky-{RUN}-1.0-0.tar.bz2", build_tar_bz2(folder, f"sneaky-{RUN}").read_bytes()


def _not_a_package(folder: Path) -> tuple[str, bytes]:
    return "build.log", b"not a package"


def _unserved(folder: Path) -> tuple[str, bytes]:
    package = build_tar_bz2(folder, f"apple-{RUN}", subdir="osx-arm64")
    return package.name, package.read_bytes()


def _hollow(folder: Path) -> tuple[str, bytes]:
    package = build_tar_bz2(folder, f"hollow-{RUN}", drop_payload=True)
    return package.name, package.read_bytes()


def _corrupt_inner(folder: Path) -> tuple[str, bytes]:
    package = build_conda(folder / "src", f"inner-{RUN}")
    target = folder / package.name
    with zipfile.ZipFile(package) as source, zipfile.ZipFile(target, "w") as out:
        for item in source.infolist():
            data = source.read(item)
            out.writestr(item, data[: len(data) // 2] if item.filename.startswith("pkg-") else data)
    return package.name, target.read_bytes()


def _control_character(folder: Path) -> tuple[str, bytes]:
    return f"bad%0Aname-{RUN}-1.0-0.conda", build_conda(folder, f"ctl-{RUN}").read_bytes()


def _encoded_slash(folder: Path) -> tuple[str, bytes]:
    return f"..%2F..%2Fetc%2Fpasswd-{RUN}.conda", b"x"


def _trick(build: Callable[..., Path], name: str, *options: object) -> Maker:
    """A hostile package from pkgbuild (issue 17), named for this run."""

    def make(folder: Path) -> tuple[str, bytes]:
        package = build(folder, f"{name}-{RUN}", *options)
        return package.name, package.read_bytes()

    return make


# kind -> (make, expected status, text the answer must contain)
BAD_UPLOADS: dict[str, tuple[Maker, int, str]] = {
    "truncated .conda": (_truncated, 422, "truncated"),
    "garbage .tar.bz2": (_garbage, 422, "truncated or garbage"),
    "zero-byte file": (_zero, 422, "zero bytes"),
    "renamed package": (_renamed, 422, "renamed package"),
    "hidden file name": (_hidden, 422, "leading dot"),
    "non-package file": (_not_a_package, 422, "not a conda package"),
    "subdir the channel does not serve": (_unserved, 422, "not served by this channel"),
    "payload file missing": (_hollow, 422, "is missing"),
    "corrupt inner stream": (_corrupt_inner, 422, "does not decompress"),
    "control character in the name": (_control_character, 422, "control characters"),
    "encoded slashes in the name": (_encoded_slash, 422, "path separators"),
    # Issue 17: one package validated, another indexed; bombs refused before they write
    # (413: too large unpacked, where a bad package is 422).
    ".tar.bz2 with two info/index.json": (
        _trick(build_twice_indexed, "twice"),
        422,
        "holds 'info/index.json' twice",
    ),
    ".conda with another info archive first": (
        _trick(build_conda_with_decoy_info, "decoy"),
        422,
        "unexpected entry 'info-decoy-",
    ),
    ".conda with an unexpected entry": (
        _trick(build_conda_with_extra_entry, "chatty"),
        422,
        "unexpected entry 'notes.txt'",
    ),
    ".conda whose inner archive holds a name twice": (
        _trick(build_conda_with_inner_duplicate, "dup"),
        422,
        "data.txt' twice",
    ),
    "info/index.json in both inner archives": (
        _trick(build_conda_with_index_in_pkg, "both"),
        422,
        "holds 'info/index.json' twice",
    ),
    "17 MiB info/index.json": (
        _trick(lambda folder, name: build_big_index_json(folder, 17 << 20, name), "verbose"),
        422,
        "info/index.json is larger than 16 MiB",
    ),
    # 9 GiB of zeros (the default limit is 8 GiB) in 18 kB and 300 kB.
    "bzip2 bomb": (_trick(build_bzip2_bomb, "bzbomb", 9 << 30), 413, "unpacks to more than 8 GiB"),
    "zstd bomb": (_trick(build_zstd_bomb, "zstbomb", 9 << 30), 413, "unpacks to more than 8 GiB"),
}


@pytest.mark.parametrize("kind", list(BAD_UPLOADS))
def test_a_bad_upload_is_refused_with_its_reason_and_nothing_served_changes(
    site: Site, tmp_path: Path, kind: str
) -> None:
    make, status, reason = BAD_UPLOADS[kind]
    before = listed(site, "main")
    marker = f"/tmp/before-{RUN}-{os.urandom(2).hex()}"
    on_host(site, "touch", marker)
    name, content = make(tmp_path)
    reply = send(site, "PUT", f"/main/noarch/{name}", content, credentials(site, "uploader"))
    assert reply.status == status, reply
    assert reason in reply.body["error"], reply
    assert listed(site, "main") == before
    # Nothing of it reached the tree, not even as a hidden or half-written file.
    new_files = on_host(
        site, "find", f"{TREE}/main", "-type", "f", "-newer", marker, "-not", "-name", "index.html"
    )
    assert new_files.stdout.strip() == ""


def test_wrong_subdir_in_the_url_is_400(site: Site, tmp_path: Path) -> None:
    package = build_tar_bz2(tmp_path, f"native-{RUN}", subdir="linux-64")
    reply = put(site, "uploader", "main", package, "noarch")
    assert reply.status == 400 and "linux-64" in reply.body["error"], reply
    assert package.name not in listed(site, "main", "linux-64")
    assert put(site, "uploader", "main", package, "linux-64").status == 201


def test_oversize_is_413_up_front_and_while_streaming(site: Site) -> None:
    before = listed(site, "main")
    size = 5 * 1024 * 1024  # the scenario's limit is 4 MiB
    name = f"huge-{RUN}-1.0-0.tar.bz2"
    headers = credentials(site, "uploader")
    assert send(site, "PUT", f"/main/noarch/{name}", b"\0" * size, headers).status == 413

    def pieces() -> Iterator[bytes]:
        for _ in range(size // 65536):
            yield b"\0" * 65536

    try:
        reply = send(site, "PUT", f"/main/noarch/{name}", pieces(), headers)
        assert reply.status == 413, reply
    except (ConnectionError, http.client.HTTPException, ssl.SSLError):
        pass  # NGINX may close the connection at the limit before the client finished sending
    assert listed(site, "main") == before


@pytest.mark.basic_mode
def test_same_name_other_bytes_is_409_and_only_a_maintainer_may_force_or_delete(
    site: Site, tmp_path: Path
) -> None:
    first = build_conda(tmp_path / "one", f"tool-{site.mode}-{RUN}")
    assert put(site, "uploader", "main", first).status == 201
    again = put(site, "uploader", "main", first)
    assert (again.status, again.body["result"]) == (200, "unchanged")
    rebuilt = build_conda(tmp_path / "two", f"tool-{site.mode}-{RUN}", salt=" rebuilt")
    assert put(site, "uploader", "main", rebuilt).status == 409
    assert put(site, "uploader", "main", rebuilt, query="?force=true").status == 409
    assert listed(site, "main")[first.name]["sha256"] != again.body.get("x")
    forced = put(site, "maintainer", "main", rebuilt, query="?force=true")
    assert (forced.status, forced.body["result"]) == (200, "replaced"), forced
    assert listed(site, "main")[first.name]["sha256"] == forced.body["sha256"]
    path = f"/main/noarch/{first.name}"
    assert send(site, "DELETE", path, headers=credentials(site, "uploader")).status == 403
    deleted = send(site, "DELETE", path, headers=credentials(site, "maintainer"))
    assert (deleted.status, deleted.body["result"]) == (200, "deleted")
    assert first.name not in listed(site, "main")
    gone = fetch(
        f"{site.base_url}{path}", ca_file=site.ca_file, auth=("reader", site.passwords["reader"])
    )
    assert gone.status == 404
    assert shard_mismatches(site, "main") == []
