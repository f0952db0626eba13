"""The download log of the rendered channel vhost, with a real NGINX: N complete GETs of a
package file count N; HEAD, a range, a 304, a 404, repodata and the edges' own fetches
count nothing; the counts document is served at /api/channels/<channel>/downloads with
the channel's access rule."""

from __future__ import annotations

import base64
import http.client
import ssl
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bench.bench_auth import free_port
from bench.bench_serving import render_primary
from condaport import downloads
from tests.support.nginx import NGINX, running

FILE = "noarch/pkg-1.0-0.conda"


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _get(port: int, path: str, method: str = "GET", **headers: str) -> tuple[int, bytes]:
    context = ssl._create_unverified_context()  # noqa: S323 - a scratch self-signed server
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    connection.request(method, path, headers=headers)
    answer = connection.getresponse()
    return answer.status, answer.read()


def test_n_downloads_give_n(tmp_path: Path) -> None:
    if not Path(NGINX).exists():
        pytest.skip("nginx is not installed")
    port = free_port()
    channels = [{"name": "public", "anonymous": True}, {"name": "main", "users": ["reader"]}]
    conf = render_primary(tmp_path, port, channels)
    hashed = subprocess.run(
        ["openssl", "passwd", "-apr1", "reader-password-0815"], capture_output=True, text=True
    ).stdout.strip()
    (tmp_path / "auth/main.htpasswd").write_text(f"reader:{hashed}\n")
    for channel in ("public", "main"):
        package = tmp_path / "local" / channel / FILE
        package.parent.mkdir(parents=True)
        package.write_bytes(b"x" * 5000)
        (package.parent / "repodata.json").write_text("{}")
    reader = _basic("reader", "reader-password-0815")
    with running(tmp_path, conf):
        for _ in range(5):
            assert _get(port, f"/public/{FILE}")[0] == 200
        for _ in range(3):
            assert _get(port, f"/main/{FILE}", **reader)[0] == 200
        assert _get(port, f"/public/{FILE}", "HEAD")[0] == 200
        assert _get(port, f"/public/{FILE}", Range="bytes=0-9")[0] == 206
        assert _get(port, f"/public/{FILE}", **{"If-None-Match": "*"})[0] == 304
        assert _get(port, "/public/noarch/nothing-1-0.conda")[0] == 404
        assert _get(port, "/public/noarch/repodata.json")[0] == 200
        assert _get(port, f"/main/{FILE}")[0] == 401
        # An edge filling its cache: the edge counts the install it serves, not the primary.
        assert _get(port, f"/public/{FILE}", **_basic("edge", "anything"))[0] == 200
        assert _get(port, '/public/noarch/a"b%0Ac-1-0.conda')[0] == 404
    # Buffered: the lines reach the file at the latest when NGINX has stopped.
    deadline = time.monotonic() + 20
    while (tmp_path / "condaport.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    log = tmp_path / "downloads.log"
    state = tmp_path / "state"
    state.mkdir()
    assert downloads.collect(log, state) == 8
    counts = downloads.totals(state)
    assert counts == {
        downloads.FileKey("public", "noarch", "pkg-1.0-0.conda"): 5,
        downloads.FileKey("main", "noarch", "pkg-1.0-0.conda"): 3,
    }
    downloads.publish(tmp_path / "public", ["public", "main"], counts, datetime.now(tz=UTC))
    with running(tmp_path, conf):
        status, body = _get(port, "/api/channels/public/downloads")
        assert status == 200
        assert b'"ndownloads":5' in body
        assert _get(port, "/api/channels/main/downloads")[0] == 401
        status, body = _get(port, "/api/channels/main/downloads", **reader)
        assert status == 200 and b'"ndownloads":3' in body
        assert _get(port, "/api/channels/nowhere/downloads")[0] == 404
