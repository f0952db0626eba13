"""The upload service's side of download counts: the edges' reports (only from the edges'
login, idempotent) and the public address in the browse page it refreshes."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from condaport import downloads, index
from condaport.upload import build_server
from tests.support.channel_tree import ChannelTree
from tests.support.pkgbuild import build_conda
from tests.unit.test_upload import Host

pytestmark = pytest.mark.channels(main=("noarch",))
INSTANCE = "0123456789abcdef0123456789abcdef"
PUBLIC_URL = "https://conda.example.org:8443"


@pytest.fixture
def host(tree: ChannelTree, tmp_path: Path) -> Iterator[Host]:
    settings = tmp_path / "upload.json"
    settings.write_text(
        json.dumps({"max_size": 200_000, "channels": {"main": {"token:ci": {"overwrite": True}}}})
    )
    index.run(tree.root, tree.state, None)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path = tmp_path / "upload.sock"
    listener.bind(str(path))
    listener.listen(16)
    server = build_server(
        listener,
        tree.config,
        settings,
        workers=1,
        edge_reporter="edge",
        public_url=PUBLIC_URL,
        edge_reports=tree.state / "edges",
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield Host(tree.base, path, settings)
    server.shutdown()
    server.server_close()


def _report(host: Host, counts: dict, identity: str = "user:edge", instance: str = INSTANCE):
    body = json.dumps({"instance": instance, "counts": counts}).encode()
    target = f"/quetz/api/downloads/edges/{instance}"
    return host.request("POST", target, body, identity=identity)


def test_an_edge_report_counts_once_and_only_from_the_edges(host: Host, tree: ChannelTree) -> None:
    counts = {"main/noarch/pkg-1.0-0.conda": 4}
    assert _report(host, counts)[0] == 200
    assert _report(host, counts)[1]["raised"] == 0  # the retry
    assert _report(host, {"main/noarch/pkg-1.0-0.conda": 9}, identity="user:alice")[0] == 403
    assert _report(host, counts, identity="token:ci")[0] == 403
    assert _report(host, counts, instance="../../etc")[0] in (400, 404)
    wrong = json.dumps({"instance": "f" * 32, "counts": counts}).encode()
    assert host.request("POST", f"/quetz/api/downloads/edges/{INSTANCE}", wrong,
                        identity="user:edge")[0] == 400  # fmt: skip
    assert downloads.totals(tree.state / "counter", tree.state / "edges") == {
        downloads.FileKey("main", "noarch", "pkg-1.0-0.conda"): 4
    }


def test_the_refreshed_page_shows_the_public_address(host: Host, tmp_path: Path) -> None:
    assert host.put(build_conda(tmp_path, "addressed"))[0] == 201
    page = host.channel / "index.html"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if page.exists() and "addressed" in page.read_text():
            break
        time.sleep(0.2)
    html = page.read_text()
    assert f'conda config --add channels <span class="channel-url">{PUBLIC_URL}/main/' in html
    assert "HOST" not in html
