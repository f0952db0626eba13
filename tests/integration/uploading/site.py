"""What a client of the uploading scenario's host sends and sees: the host as verify.yml
describes it, headers for each kind of caller, requests over HTTPS trusting only the
channel's CA, the packages a subdir lists, installs, and commands run on the host."""

from __future__ import annotations

import base64
import http.client
import json
import os
import ssl
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from tests.support.client import run_install, write_auth_file
from tests.support.live import fetch
from tests.support.shards import mismatches

RUN = os.urandom(3).hex()
TREE = "/srv/condaport/channels"
STAGING = "/srv/condaport/staging/.uploads"
UNKNOWN_TOKEN = "not-an-upload-token-0123456789"


@dataclass(frozen=True)
class Site:
    base_url: str
    ca_file: Path
    container: str
    passwords: dict[str, str]
    tokens: dict[str, str]
    mode: str

    @property
    def host(self) -> str:
        return urlsplit(self.base_url).hostname or ""

    @property
    def port(self) -> int:
        return urlsplit(self.base_url).port or 443


@dataclass(frozen=True)
class Reply:
    status: int
    body: dict
    headers: dict[str, str]


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def credentials(site: Site, who: str) -> dict[str, str]:
    """Headers for a kind of caller: a user name, `bearer:<token name>`, `apikey:<name>`."""
    if who == "none":
        return {}
    if who == "wrong-password":
        return basic("uploader", "certainly-not-the-password")
    if who == "unknown-bearer":
        return {"Authorization": f"Bearer {UNKNOWN_TOKEN}"}
    if who == "unknown-apikey":
        return {"X-API-Key": UNKNOWN_TOKEN}
    if who.startswith("bearer:"):
        return {"Authorization": f"Bearer {site.tokens[who.split(':', 1)[1]]}"}
    if who.startswith("apikey:"):
        return {"X-API-Key": site.tokens[who.split(":", 1)[1]]}
    return basic(who, site.passwords[who])


class Connection:
    """One keep-alive HTTPS connection trusting only the channel's CA."""

    def __init__(self, site: Site) -> None:
        context = ssl.create_default_context(cafile=str(site.ca_file))
        self.conn = http.client.HTTPSConnection(site.host, site.port, context=context, timeout=120)

    def send(
        self,
        method: str,
        path: str,
        body: bytes | Iterable[bytes] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        sent = dict(headers or {})
        if body is not None and not isinstance(body, bytes):
            sent["Transfer-Encoding"] = "chunked"
        self.conn.request(method, path, body=body, headers=sent, encode_chunked=True)
        response = self.conn.getresponse()
        raw = response.read()
        try:
            parsed = json.loads(raw) if raw else {}
        except ValueError:
            parsed = {"raw": raw[:200].decode(errors="replace")}
        if response.getheader("Connection", "").lower() == "close":
            self.conn.close()
        return Reply(response.status, parsed, dict(response.headers))

    def close(self) -> None:
        self.conn.close()


def send(site: Site, method: str, path: str, body=None, headers=None) -> Reply:
    connection = Connection(site)
    try:
        return connection.send(method, path, body, headers)
    finally:
        connection.close()


def put(site: Site, who: str, channel: str, package: Path, subdir: str = "noarch", **kw) -> Reply:
    query = kw.pop("query", "")
    return send(
        site,
        "PUT",
        f"/{channel}/{subdir}/{package.name}{query}",
        package.read_bytes(),
        credentials(site, who),
    )


def listed(site: Site, channel: str, subdir: str = "noarch") -> dict[str, dict]:
    answer = fetch(
        f"{site.base_url}/{channel}/{subdir}/repodata.json",
        ca_file=site.ca_file,
        auth=None if channel == "public" else ("reader", site.passwords["reader"]),
    )
    assert answer.status == 200, answer.status
    data = json.loads(answer.body)
    return {**data["packages"], **data["packages.conda"]}


def on_host(site: Site, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", "exec", site.container, *argv], capture_output=True, text=True, check=check
    )


def installs(site: Site, tmp_path: Path, channel: str, spec: str) -> None:
    url = f"{site.base_url}/{channel}"
    auth = write_auth_file(tmp_path / "auth.json", url, "reader", site.passwords["reader"])
    result = run_install(
        url,
        [spec],
        tmp_path / f"env-{os.urandom(3).hex()}",
        auth_file=auth,
        ca_file=site.ca_file,
        cache_dir=tmp_path / "cache",
    )
    assert result.returncode == 0, result.stderr[-2000:]


def shard_mismatches(site: Site, channel: str, subdir: str = "noarch") -> list[str]:
    """The subdir's shards against its repodata.json, fetched as a client would."""

    def get(path: str) -> bytes | None:
        answer = fetch(
            f"{site.base_url}/{channel}/{subdir}/{path}",
            ca_file=site.ca_file,
            auth=("reader", site.passwords["reader"]),
        )
        assert answer.status in (200, 404), (path, answer.status)
        return answer.body if answer.status == 200 else None

    return mismatches(get)
