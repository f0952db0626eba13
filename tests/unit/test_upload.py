"""The upload service on a unix socket, as NGINX talks to it: answers, files and repodata."""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import shutil
import socket
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from condaport import index, repodata
from condaport.locking import channel_lock
from condaport.subdir_index import SubdirIndex
from condaport.upload import build_server
from tests.support.channel_tree import ChannelTree
from tests.support.pkgbuild import build_conda, build_tar_bz2

pytestmark = pytest.mark.channels(main=("noarch", "linux-64"), other=("noarch",))


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=60)
        self.socket_path = str(path)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.socket_path)


@dataclass
class Host:
    root: Path
    socket: Path
    settings: Path

    @property
    def channel(self) -> Path:
        return self.root / "channels" / "main"

    def request(
        self,
        method: str,
        target: str,
        body: bytes | None = None,
        *,
        identity: str | None = "token:ci",
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict, dict]:
        """As NGINX forwards a request: the body (if any) with its Content-Length."""
        conn = UnixConnection(self.socket)
        sent = dict(headers or {})
        if identity:
            sent["X-Condaport-Uploader"] = identity
        conn.request(method, target, body=body, headers=sent)
        response = conn.getresponse()
        answer = json.loads(response.read())
        conn.close()
        return response.status, answer, dict(response.headers)

    def put(self, path: Path, subdir: str = "noarch", **kwargs: object) -> tuple[int, dict, dict]:
        return self.request(
            "PUT", f"/artifactory/main/{subdir}/{path.name}", path.read_bytes(), **kwargs
        )

    def staged(self) -> list[Path]:
        """What the service left in staging (nothing, between requests)."""
        folder = self.root / "staging" / ".uploads"
        return list(folder.iterdir()) if folder.exists() else []

    def listed(self, subdir: str = "noarch") -> dict[str, dict]:
        return self.listed_in("main", subdir)

    def listed_in(self, channel: str, subdir: str = "noarch") -> dict[str, dict]:
        folder = self.root / "channels" / channel / subdir
        data = json.loads((folder / "repodata.json").read_text())
        return {**data["packages"], **data["packages.conda"]}


@pytest.fixture
def host(tree: ChannelTree, tmp_path: Path) -> Iterator[Host]:
    settings = tmp_path / "upload.json"
    settings.write_text(
        json.dumps(
            {
                "max_size": 200_000,
                "lock_timeout": 1,
                "channels": {
                    "main": {
                        "user:alice": {"overwrite": False},
                        "token:ci": {"overwrite": True},
                    },
                    "other": {"user:bob": {"overwrite": False}},
                },
            }
        )
    )
    index.run(tree.root, tree.state, None)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path = tmp_path / "upload.sock"
    listener.bind(str(path))
    listener.listen(16)
    server = build_server(listener, tree.config, settings, workers=2)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Host(tree.base, path, settings)
    server.shutdown()
    server.server_close()


def test_an_upload_is_placed_and_listed_by_an_incremental_index(host: Host, tmp_path: Path) -> None:
    package = build_conda(tmp_path / "dist", "alpha")
    status, answer, _ = host.put(package)
    assert status == 201, answer
    assert answer["result"] == "added" and answer["indexed"] == "incremental"
    placed = host.channel / "noarch" / package.name
    assert placed.read_bytes() == package.read_bytes()
    assert placed.stat().st_mode & 0o777 == 0o644
    assert package.name in host.listed()
    compressed = (host.channel / "noarch" / "repodata.json.zst").read_bytes()
    assert repodata.decode_compressed(compressed)["packages.conda"][package.name]["sha256"]
    # The fingerprint was recorded: the next index run has nothing to do.
    assert index.stale_subdirs(host.root / "channels", host.root / "state", "main") == []
    assert not list((host.root / "staging" / ".uploads").iterdir())


def _with_run_exports(package: Path, dest: Path) -> Path:
    """A copy of a .conda whose info archive also holds info/run_exports.json."""
    exports = json.dumps({"weak": ["rx >=1.0"], "strong": []}).encode()
    return _with_info_file(package, dest, "info/run_exports.json", exports)


def test_incremental_records_are_the_records_rattlers_index_writes(
    host: Host, tmp_path: Path
) -> None:
    from rattler import Subdir
    from rattler.index import index_fs

    packages = [
        build_conda(tmp_path / "a", "plain-conda"),
        _with_run_exports(build_conda(tmp_path / "b", "rx"), tmp_path / "rx"),
        build_tar_bz2(tmp_path / "c", "old-format"),
        build_tar_bz2(tmp_path / "c", "native", subdir="linux-64"),
    ]
    for package in packages:
        subdir = "linux-64" if package.name.startswith("native") else "noarch"
        status, answer, _ = host.put(package, subdir)
        assert (status, answer["indexed"]) == (201, "incremental"), answer
    copy = tmp_path / "copy"
    shutil.copytree(host.channel, copy)
    for subdir in ("noarch", "linux-64"):
        asyncio.run(index_fs(copy, target_platform=Subdir(subdir), write_zst=True, force=True))
        ours = json.loads((host.channel / subdir / "repodata.json").read_text())
        theirs = json.loads((copy / subdir / "repodata.json").read_text())
        for data in (ours, theirs):
            for section in ("packages", "packages.conda"):
                for record in data[section].values():
                    assert isinstance(record.pop("indexed_timestamp"), int)
        assert ours == theirs
    assert "run_exports" in ours["packages.conda"] or True  # linux-64 has none
    noarch = json.loads((host.channel / "noarch" / "repodata.json").read_text())
    assert noarch["packages.conda"]["rx-1.0-0.conda"]["run_exports"] == {"weak": ["rx >=1.0"]}


def test_same_file_again_is_200_other_bytes_409_and_force_replaces(
    host: Host, tmp_path: Path
) -> None:
    first = build_conda(tmp_path / "one", "tool")
    assert host.put(first)[0] == 201
    status, answer, _ = host.put(first)
    assert (status, answer["result"]) == (200, "unchanged")
    rebuilt = build_conda(tmp_path / "two", "tool", salt=" rebuilt")
    status, answer, _ = host.put(rebuilt, identity="user:alice")
    assert status == 409 and "different content" in answer["error"]
    assert (host.channel / "noarch" / first.name).read_bytes() == first.read_bytes()
    # alice lacks the overwrite right: force changes nothing for her.
    target = f"/artifactory/main/noarch/{rebuilt.name}?force=true"
    status, _, _ = host.request("PUT", target, rebuilt.read_bytes(), identity="user:alice")
    assert status == 409
    status, answer, _ = host.request("PUT", target, rebuilt.read_bytes(), identity="token:ci")
    assert (status, answer["result"]) == (200, "replaced")
    assert (host.channel / "noarch" / first.name).read_bytes() == rebuilt.read_bytes()
    assert host.listed()[first.name]["sha256"] == answer["sha256"]


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty-1.0-0.conda", b"", "zero bytes"),
        ("junk-1.0-0.tar.bz2", b"\x00garbage" * 100, "truncated or garbage"),
        (".hidden-1.0-0.conda", b"x", "leading dot"),
        ("build.log", b"log", "not a conda package"),
    ],
)
def test_bad_files_are_422_with_the_reason_and_nothing_changes(
    host: Host, name: str, content: bytes, reason: str
) -> None:
    before = (host.channel / "noarch" / "repodata.json").read_bytes()
    status, answer, _ = host.request("PUT", f"/artifactory/main/noarch/{name}", content)
    assert status == 422 and reason in answer["error"], answer
    assert (host.channel / "noarch" / "repodata.json").read_bytes() == before
    assert sorted(p.name for p in (host.channel / "noarch").iterdir()) == [
        "repodata.json",
        "repodata.json.zst",
        "repodata_shards.msgpack.zst",
    ]


def test_a_renamed_package_is_422(host: Host, tmp_path: Path) -> None:
    package = build_conda(tmp_path, "original")
    status, answer, _ = host.request(
        "PUT", "/artifactory/main/noarch/impostor-1.0-0.conda", package.read_bytes()
    )
    assert status == 422 and "renamed package" in answer["error"]


def test_a_package_sent_to_another_subdir_is_400(host: Host, tmp_path: Path) -> None:
    package = build_tar_bz2(tmp_path, "native", subdir="linux-64")
    status, answer, _ = host.put(package, "noarch")
    assert status == 400 and "linux-64" in answer["error"]
    assert not (host.channel / "linux-64" / package.name).exists()


def test_who_may_upload_where(host: Host, tmp_path: Path) -> None:
    package = build_conda(tmp_path, "rights")
    assert host.put(package, identity=None)[0] == 401
    assert host.put(package, identity="user:nobody")[0] == 403
    assert host.put(package, identity="user:bob")[0] == 403  # bob uploads to other only
    status, answer, _ = host.request(
        "PUT", f"/artifactory/nope/noarch/{package.name}", package.read_bytes()
    )
    assert status == 404 and "nope" in answer["error"]
    assert host.put(package, identity="user:alice")[0] == 201


def test_size_limit_is_413_up_front(host: Host, tmp_path: Path) -> None:
    big = tmp_path / "big-1.0-0.tar.bz2"
    big.write_bytes(b"\0" * 300_000)
    status, answer, _ = host.put(big)
    assert status == 413 and "limit" in answer["error"]
    assert host.staged() == []


def _raw_exchange(host: Host, head: str, body: bytes) -> tuple[bytes, bytes]:
    """Send bytes as they are (http.client frames bodies itself); the answer, and what
    the service sends after it until it closes the connection (b"" when it closed)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(host.socket))
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        received = b""
        while b"\r\n\r\n" not in received:
            received += sock.recv(65536)
        headers = received.partition(b"\r\n\r\n")[0]
        length = next(
            int(line.split(b":")[1]) for line in headers.split(b"\r\n") if b"Content-Length" in line
        )
        while len(received) < len(headers) + 4 + length:
            received += sock.recv(65536)
        cut = len(headers) + 4 + length
        answer, after = received[:cut], received[cut:]
        try:
            while piece := sock.recv(65536):
                after += piece
        except TimeoutError:
            after += b"<still open>"
        return answer, after


@pytest.mark.parametrize(
    "framing",
    [
        "Transfer-Encoding: chunked",
        "Transfer-Encoding: chunked\nContent-Length: 11",
        "Content-Length: 11\nContent-Length: 11",
        "Content-Length: +11",
        "Content-Length: 1_1",
        "Content-Length: 0x0b",
        "",
    ],
    ids=["chunked", "chunked-and-length", "two-lengths", "signed", "underscore", "hex", "none"],
)
def test_a_body_without_one_plain_content_length_is_411_and_never_decoded(
    host: Host, tmp_path: Path, framing: str
) -> None:
    """NGINX forwards every body with its length; no other framing is parsed here. What
    the client sent after the headers is never read as a next request either."""
    package = build_conda(tmp_path, "framed")
    data = package.read_bytes()
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data)
    # Smuggled behind the body: a second request the service must never answer.
    smuggled = b"DELETE /artifactory/main/noarch/x-1.0-0.conda HTTP/1.1\r\nHost: x\r\n\r\n"
    head = (
        f"PUT /artifactory/main/noarch/{package.name} HTTP/1.1\nHost: condaport-upload\n"
        f"X-Condaport-Uploader: token:ci\n{framing + chr(10) if framing else ''}"
    )
    answer, after = _raw_exchange(host, head, chunked + smuggled)
    assert answer.startswith(b"HTTP/1.1 411 "), answer
    assert b"Content-Length" in answer.partition(b"\r\n\r\n")[2]
    assert after == b"", after
    assert package.name not in host.listed()
    assert host.staged() == []


def test_a_locked_channel_answers_503_with_retry_after(host: Host, tmp_path: Path) -> None:
    package = build_conda(tmp_path, "waiting")
    with channel_lock(host.root / "state", "main"):
        status, answer, headers = host.put(package)
    assert status == 503 and headers["Retry-After"]
    assert package.name not in host.listed()
    assert host.put(package)[0] == 201


def test_delete_needs_the_overwrite_right_and_reindexes(host: Host, tmp_path: Path) -> None:
    package = build_conda(tmp_path, "doomed")
    assert host.put(package)[0] == 201
    target = f"/artifactory/main/noarch/{package.name}"
    assert host.request("DELETE", target, identity="user:alice")[0] == 403
    status, answer, _ = host.request("DELETE", target)
    assert (status, answer["result"]) == (200, "deleted")
    assert package.name not in host.listed()
    assert not (host.channel / "noarch" / package.name).exists()
    assert host.request("DELETE", target)[0] == 404


def test_quetz_upload_checks_the_sha256_it_names(host: Host, tmp_path: Path) -> None:
    import hashlib

    package = build_conda(tmp_path, "quetzal")
    data = package.read_bytes()
    target = f"/quetz/api/channels/main/upload/{package.name}?force=false&sha256="
    assert host.request("POST", target + "0" * 64, data)[0] == 400
    status, answer, _ = host.request("POST", target + hashlib.sha256(data).hexdigest(), data)
    assert status == 201, answer
    assert package.name in host.listed()


def test_a_stale_subdir_is_indexed_fully(host: Host, tmp_path: Path) -> None:
    by_hand = build_tar_bz2(tmp_path / "hand", "copied-by-hand")
    shutil.copy(by_hand, host.channel / "noarch")
    package = build_conda(tmp_path, "uploaded")
    status, answer, _ = host.put(package)
    assert (status, answer["indexed"]) == (201, "full")
    assert {by_hand.name, package.name} <= set(host.listed())
    assert index.stale_subdirs(host.root / "channels", host.root / "state", "main") == []


def test_unreadable_repodata_falls_back_to_a_full_index(host: Host, tmp_path: Path) -> None:
    (host.channel / "noarch" / "repodata.json").write_text("{not json")
    package = build_conda(tmp_path, "healer")
    status, answer, _ = host.put(package)
    assert (status, answer["indexed"]) == (201, "full")
    assert package.name in host.listed()


def test_in_place_edits_write_the_json_a_full_encode_would(host: Host, tmp_path: Path) -> None:
    subdir = host.channel / "noarch"
    owner = SubdirIndex.at(host.channel, "noarch", host.root / "state")
    package = build_conda(tmp_path, "edited")
    shutil.copy(package, subdir)
    record = repodata.package_record(package, sha256="ab" * 32, md5="cd" * 16, size=1)
    owner.apply({package.name: record}, owner.rows())
    owner.apply({"other-1.0-0.tar.bz2": {"name": "other", "depends": ["ü"]}}, owner.rows())
    written = (subdir / "repodata.json").read_bytes()
    parsed = json.loads(written)
    assert written == repodata.encode(parsed)
    assert parsed["packages.conda"][package.name] == record
    assert repodata.decode_compressed((subdir / "repodata.json.zst").read_bytes()) == parsed
    # Another writer replaced the file: the owner reads it again instead of its memory.
    index.run(host.root / "channels", host.root / "state", None, force=True)
    owner.apply({"third-1.0-0.tar.bz2": {"name": "third"}}, owner.rows())
    names = set(json.loads((subdir / "repodata.json").read_text())["packages"])
    assert names == {"third-1.0-0.tar.bz2"}


def test_the_browse_page_follows_shortly_after(host: Host, tmp_path: Path) -> None:
    import time

    package = build_conda(tmp_path, "browsable")
    assert host.put(package)[0] == 201
    page = host.channel / "index.html"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if page.exists() and "browsable" in page.read_text():
            break
        time.sleep(0.2)
    assert "browsable" in page.read_text()
    assert page.stat().st_mode & 0o777 == 0o644


def test_parallel_uploads_to_one_channel_all_land(host: Host, tmp_path: Path) -> None:
    packages = [
        build_tar_bz2(tmp_path / f"t{t}", f"par{t}-{n}") for t in range(4) for n in range(5)
    ]
    statuses: list[int] = []

    def upload(batch: list[Path]) -> None:
        statuses.extend(host.put(package)[0] for package in batch)

    threads = [threading.Thread(target=upload, args=(packages[t::4],)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert statuses == [201] * len(packages)
    assert {p.name for p in packages} <= set(host.listed())
    assert index.stale_subdirs(host.root / "channels", host.root / "state", "main") == []


def test_a_storage_failure_is_a_json_500_naming_the_cause(host: Host, tmp_path: Path) -> None:
    staging = host.root / "staging" / ".uploads"
    shutil.rmtree(staging, ignore_errors=True)
    staging.write_text("not a directory")
    status, answer, _ = host.put(build_conda(tmp_path, "unstorable"))
    assert status == 500 and "could not store the package" in answer["error"], answer


READ_TOKEN = "read-token-never-logged-0123456789"


@pytest.mark.parametrize(
    "target",
    [
        f"/artifactory/t/{READ_TOKEN}/main/noarch/tokened-1.0-0.conda",
        f"/artifactory/T/{READ_TOKEN}/main/noarch/tokened-1.0-0.conda",
        f"/artifactory/%74/{READ_TOKEN}/main/noarch/tokened-1.0-0.conda",
        f"/artifactory/t%2F{READ_TOKEN}/noarch/tokened-1.0-0.conda",
        f"/artifactory//t//{READ_TOKEN}/main/noarch/tokened-1.0-0.conda",
        f"/artifactory/main/../t/{READ_TOKEN}/main/noarch/tokened-1.0-0.conda",
        f"/artifactory/t/{READ_TOKEN.replace('-', '%2D')}/main/noarch/tokened-1.0-0.conda",
        f"/quetz/t/{READ_TOKEN}/api/channels/main/upload/tokened-1.0-0.conda",
    ],
)
def test_a_read_token_in_the_url_is_refused_and_never_logged(
    host: Host, tmp_path: Path, caplog: pytest.LogCaptureFixture, target: str
) -> None:
    """A channel URL with its token pasted as the upload URL: NGINX refuses it first, and
    the service, reached anyway, neither echoes nor logs the token in any spelling."""
    package = build_conda(tmp_path, "tokened")
    method = "POST" if target.startswith("/quetz") else "PUT"
    with caplog.at_level(logging.INFO, logger="condaport-upload"):
        status, answer, _ = host.request(method, target, package.read_bytes())
        host.request("DELETE", target)
    assert status == 404 and "/t/<token>/" in answer["error"], answer
    assert READ_TOKEN not in json.dumps(answer)
    logged = caplog.text
    assert "/t/<redacted>" in logged, logged
    assert READ_TOKEN not in logged and READ_TOKEN.replace("-", "%2D") not in logged, logged
    assert package.name not in host.listed()


def _with_info_file(package: Path, dest: Path, name: str, content: bytes) -> Path:
    """A copy of a .conda whose info archive also holds `name` with `content`."""
    import io
    import tarfile

    import zstandard

    dest.mkdir(parents=True, exist_ok=True)
    target = dest / package.name
    with zipfile.ZipFile(package) as source, zipfile.ZipFile(target, "w") as out:
        for item in source.infolist():
            data = source.read(item)
            if item.filename.startswith("info-"):
                raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
                buffer = io.BytesIO()
                with (
                    tarfile.open(fileobj=io.BytesIO(raw)) as inner,
                    tarfile.open(fileobj=buffer, mode="w") as rebuilt,
                ):
                    for member in inner.getmembers():
                        rebuilt.addfile(member, inner.extractfile(member))
                    info = tarfile.TarInfo(name)
                    info.size = len(content)
                    rebuilt.addfile(info, io.BytesIO(content))
                data = zstandard.ZstdCompressor().compress(buffer.getvalue())
            out.writestr(item, data)
    return target


@pytest.mark.parametrize(
    "content",
    [b"{not json", b'{"weak": 5}', b"\xff\xfe not utf-8"],
    ids=["not-json", "not-a-list", "not-utf8"],
)
def test_metadata_the_record_cannot_be_built_from_is_422_with_the_reason(
    host: Host, tmp_path: Path, content: bytes
) -> None:
    """info/run_exports.json goes into the repodata record: a parse error there is the
    package's fault (422, naming the file), not the host's (500)."""
    package = _with_info_file(
        build_conda(tmp_path / "src", "exporter"),
        tmp_path / "bad",
        "info/run_exports.json",
        content,
    )
    status, answer, _ = host.put(package)
    assert status == 422, answer
    assert "info/run_exports.json" in answer["error"], answer
    assert package.name not in host.listed()
    assert not (host.channel / "noarch" / package.name).exists()
    assert host.staged() == []


def test_a_refusal_may_name_its_own_status() -> None:
    """packages.TooLarge (a Rejected carrying http_status = 413) answers 413; any other
    refusal, or a status that is no client error, answers 422."""
    from condaport.packages import Rejected
    from condaport.upload import rejected_status

    class TooLarge(Rejected):
        http_status = 413

    class Odd(Rejected):
        http_status = "413"

    class Success(Rejected):
        http_status = 200

    assert rejected_status(TooLarge("unpacks to 40 GB")) == 413
    assert rejected_status(Rejected("bad")) == 422
    assert rejected_status(Odd("x")) == 422
    assert rejected_status(Success("x")) == 422


# -- channel management over the service (condaport.manage) --------------------------------


def _manage(host: Host, method: str, path: str, body: object = None, **kwargs: object):
    data = None if body is None else json.dumps(body).encode()
    api = "quetz" if method == "POST" else "artifactory"  # as NGINX's method map names it
    return host.request(method, f"/{api}/api/channels/{path}", data, **kwargs)


def _with_readers(host: Host, readers: dict[str, list[str]], anonymous: list[str]) -> None:
    settings = json.loads(host.settings.read_text())
    settings.update(readers=readers, anonymous=anonymous)
    host.settings.write_text(json.dumps(settings))


def test_patches_and_broken_marks_need_the_maintainer_right(host: Host, tmp_path: Path) -> None:
    package = build_conda(tmp_path, "managed")
    assert host.put(package)[0] == 201
    where = f"main/packages/noarch/{package.name}"
    patch = {"license": "BSD-3-Clause"}
    assert _manage(host, "POST", f"{where}/patch", patch, identity="user:alice")[0] == 403
    assert _manage(host, "POST", f"{where}/broken", {}, identity="user:alice")[0] == 403
    assert _manage(host, "POST", f"{where}/patch", patch, identity="user:bob")[0] == 403
    status, answer, _ = _manage(host, "POST", f"{where}/patch", patch)
    assert (status, answer["result"]) == (200, "patched"), answer
    assert host.listed()[package.name]["license"] == "BSD-3-Clause"
    status, answer, _ = _manage(host, "POST", f"{where}/broken", {"reason": "bad build"})
    assert (status, answer["result"]) == (200, "broken")
    assert package.name not in host.listed()
    assert _manage(host, "DELETE", f"{where}/broken")[1]["result"] == "unbroken"
    assert _manage(host, "DELETE", f"{where}/patch")[1]["result"] == "unpatched"
    assert "license" not in host.listed()[package.name]
    # Bad input: a field that is not patchable, a body that is no object, no such file.
    assert _manage(host, "POST", f"{where}/patch", {"name": "x"})[0] == 400
    assert _manage(host, "POST", f"{where}/patch", ["depends"])[0] == 400
    assert _manage(host, "POST", "main/packages/noarch/none-1.0-0.conda/patch", patch)[0] == 404
    assert _manage(host, "POST", f"nochannel/packages/noarch/{package.name}/patch", patch)[0] == 404


# identity -> (may read main, may upload to other) -> status of a promotion main -> other
PROMOTIONS = [
    ("user:bob", ["user:bob"], 201),  # reads main, uploads to other
    ("user:bob", [], 403),  # uploads to other, may not read main
    ("user:alice", ["user:alice"], 403),  # reads main, may not upload to other
]


@pytest.mark.parametrize(("who", "readers", "expected"), PROMOTIONS)
def test_promotion_needs_read_on_the_source_and_upload_on_the_target(
    host: Host, tmp_path: Path, who: str, readers: list[str], expected: int
) -> None:
    package = build_conda(tmp_path, "promoted")
    assert host.put(package)[0] == 201
    _with_readers(host, {"main": readers}, [])
    body = {"from": "main", "file": f"noarch/{package.name}"}
    status, answer, _ = _manage(host, "POST", "other/promote", body, identity=who)
    assert status == expected, answer
    listed = host.listed_in("other")
    assert (package.name in listed) == (expected == 201)
    assert package.name in host.listed()  # a copy: the source keeps it


def test_promotion_from_an_anonymous_channel_and_a_move(host: Host, tmp_path: Path) -> None:
    package = build_conda(tmp_path, "moved")
    assert host.put(package)[0] == 201
    _with_readers(host, {}, ["main"])
    body = {"from": "main", "file": f"noarch/{package.name}", "move": True}
    # bob reads main (anonymous) but may not delete there: no move.
    assert _manage(host, "POST", "other/promote", body, identity="user:bob")[0] == 403
    settings = json.loads(host.settings.read_text())
    settings["channels"]["other"]["token:ci"] = {"overwrite": False}
    host.settings.write_text(json.dumps(settings))
    status, answer, _ = _manage(host, "POST", "other/promote", body)
    assert (status, answer["result"], answer["moved"]) == (201, "added", True), answer
    assert package.name in host.listed_in("other")
    assert package.name not in host.listed()
    assert not host.staged()


def test_a_slow_browse_page_paces_the_next_one() -> None:
    """At 100,000 packages a page takes seconds: the refresher waits five times as long
    before the next, so rendering takes at most a sixth of the service's time."""
    import time

    from condaport import upload

    rendered: list[float] = []

    class SlowPages(upload.PageRefresher):
        # This refresher's own pages only: other tests' services refresh theirs meanwhile.
        def _refresh(self, channel: str) -> None:
            rendered.append(time.monotonic())
            time.sleep(0.2)

    refresher = SlowPages(None, interval=0.05)  # type: ignore[arg-type]
    refresher.start()
    refresher.request("main")
    deadline = time.monotonic() + 5
    while len(rendered) < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.25)
    refresher.request("main")
    while len(rendered) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(rendered) == 2
    assert rendered[1] - rendered[0] >= 0.2 + 5 * 0.2 * 0.9


def test_a_promotion_file_is_checked_before_it_is_echoed(host: Host, tmp_path: Path) -> None:
    """The body's file name reaches the answer, and with it the journal's line, only once
    it is a plain <subdir>/<file>: a newline in it could forge a log line."""
    _with_readers(host, {"main": ["user:bob"]}, [])
    body = {"from": "main", "file": "noarch\nforged: 201 added/x-1.0-0.conda"}
    status, answer, _ = _manage(host, "POST", "other/promote", body, identity="user:bob")
    assert status == 400, answer
    assert "file" not in answer
    assert "\n" not in answer["error"]
