"""What a converged channel host promises: TLS, auth, the tree, the index, an install."""

from __future__ import annotations

import hashlib
import json
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

import pytest

from tests.support.client import run_install, write_auth_file
from tests.support.live import Channel, fetch
from tests.support.screenshot import dump_dom, screenshot

DEFAULT_SUBDIRS = ["noarch", "linux-64", "linux-aarch64", "osx-64", "osx-arm64", "win-64"]
SAMPLE = "hello-condaport"
RESULTS = Path(__file__).resolve().parents[2] / "artifacts" / "test-results"


def _sample_filename(repodata: dict) -> str:
    names = [n for n, r in repodata["packages.conda"].items() if r["name"] == SAMPLE]
    assert names, f"{SAMPLE} is not in noarch/repodata.json"
    return names[0]


@pytest.mark.parametrize("auth", [None, ("reader", "wrong-password"), ("nobody", "x")])
def test_repodata_refuses_missing_or_wrong_credentials(channel: Channel, auth) -> None:
    answer = fetch(f"{channel.url}/noarch/repodata.json", ca_file=channel.ca_file, auth=auth)
    assert answer.status == 401
    assert "Basic" in answer.headers.get("WWW-Authenticate", "")


@pytest.mark.parametrize("subdir", DEFAULT_SUBDIRS)
@pytest.mark.parametrize("name", ["repodata.json", "repodata.json.zst"])
def test_every_subdir_is_indexed_even_when_empty(channel: Channel, subdir: str, name: str) -> None:
    answer = fetch(
        f"{channel.url}/{subdir}/{name}",
        ca_file=channel.ca_file,
        auth=(channel.user, channel.password),
    )
    assert answer.status == 200
    if name == "repodata.json":
        assert json.loads(answer.body)["info"]["subdir"] == subdir


def test_missing_subdir_answers_404(channel: Channel) -> None:
    answer = fetch(
        f"{channel.url}/linux-ppc64le/repodata.json",
        ca_file=channel.ca_file,
        auth=(channel.user, channel.password),
    )
    assert answer.status == 404


@pytest.mark.parametrize("path", [".tmp/", "noarch/.cache/cache.db", ".cache/x", "noarch/.x.conda"])
@pytest.mark.parametrize("with_auth", [False, True])
def test_dot_paths_are_never_served(channel: Channel, path: str, with_auth: bool) -> None:
    auth = (channel.user, channel.password) if with_auth else None
    answer = fetch(f"{channel.url}/{path}", ca_file=channel.ca_file, auth=auth)
    assert answer.status == 404


def test_directories_are_not_listed(channel: Channel) -> None:
    answer = fetch(f"{channel.url}/noarch/", ca_file=channel.ca_file, auth=None)
    assert answer.status == 401
    answer = fetch(
        f"{channel.url}/noarch/", ca_file=channel.ca_file, auth=(channel.user, channel.password)
    )
    assert answer.status == 404


def test_browse_page_shows_the_published_package(channel: Channel) -> None:
    assert fetch(f"{channel.url}/", ca_file=channel.ca_file).status == 401
    answer = fetch(
        f"{channel.url}/", ca_file=channel.ca_file, auth=(channel.user, channel.password)
    )
    assert answer.status == 200
    assert answer.headers["Content-Type"].startswith("text/html")
    assert "no-cache" in answer.headers["Cache-Control"]
    page = RESULTS / f"browse-{channel.url.rstrip('/').rsplit('/', 1)[1]}.html"
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_bytes(answer.body)
    # What a person sees: Chromium renders it, and the package is on screen.
    screenshot(page, page.with_suffix(".png"))
    assert page.with_suffix(".png").stat().st_size > 10_000
    dom = dump_dom(page)
    assert SAMPLE in dom
    assert f'href="noarch/{SAMPLE}-' in dom


def test_tls_is_verified_against_the_generated_ca(channel: Channel) -> None:
    # A client trusting only the system store must refuse the private CA's certificate.
    with pytest.raises(urllib.error.URLError) as refused:
        fetch(f"{channel.url}/noarch/repodata.json", ca_file=None)
    assert isinstance(refused.value.reason, ssl.SSLCertVerificationError)
    answer = fetch(f"{channel.url}/noarch/repodata.json", ca_file=channel.ca_file)
    assert answer.status == 401  # the TLS handshake succeeded; auth comes next


def test_http_redirects_to_https(channel: Channel) -> None:
    answer = fetch(f"{channel.http_url}/noarch/repodata.json", ca_file=None)
    assert answer.status == 301
    assert answer.headers["Location"] == f"{channel.url}/noarch/repodata.json"


def test_published_package_is_listed_and_downloads_intact(channel: Channel, repodata: dict) -> None:
    filename = _sample_filename(repodata)
    record = repodata["packages.conda"][filename]
    local = channel.published_dir / filename
    assert record["sha256"] == hashlib.sha256(local.read_bytes()).hexdigest()
    answer = fetch(
        f"{channel.url}/noarch/{filename}",
        ca_file=channel.ca_file,
        auth=(channel.user, channel.password),
    )
    assert answer.status == 200
    assert hashlib.sha256(answer.body).hexdigest() == record["sha256"]


def _install_sample(
    channel: Channel, tmp_path: Path, password: str | None = None
) -> subprocess.CompletedProcess[str]:
    """py-rattler installs the sample into tmp_path/env, with the user's credentials from an
    auth file (`password` instead of the user's own, for a wrong one)."""
    secret = channel.password if password is None else password
    auth_file = write_auth_file(tmp_path / "auth.json", channel.url, channel.user, secret)
    return run_install(
        channel.url,
        [SAMPLE],
        tmp_path / "env",
        auth_file=auth_file,
        ca_file=channel.ca_file,
        cache_dir=tmp_path / "cache",
    )


def test_rattler_installs_the_package_with_credentials(channel: Channel, tmp_path: Path) -> None:
    prefix = tmp_path / "env"
    result = _install_sample(channel, tmp_path)
    assert result.returncode == 0, result.stderr
    assert (prefix / "share" / SAMPLE / "hello.txt").read_text().strip() == "hello from condaport"
    metadata = "".join(p.read_text() for p in (prefix / "conda-meta").glob("*.json"))
    assert channel.password not in metadata


def _access_log(channel: Channel) -> list[str]:
    read = ["podman", "exec", channel.container, "cat", "/var/log/nginx/access.log"]
    return subprocess.run(read, capture_output=True, text=True, check=True).stdout.splitlines()


def test_a_real_client_solves_from_the_sharded_repodata(channel: Channel, tmp_path: Path) -> None:
    """py-rattler asks for the shard index first; condaport serves it and the shards, so the
    client never downloads a subdir's whole repodata (CEP-16)."""
    before = len(_access_log(channel))
    result = _install_sample(channel, tmp_path)
    assert result.returncode == 0, result.stderr
    time.sleep(0.5)  # NGINX logs a request after answering it
    # `... "GET /main/noarch/x HTTP/2.0" 200 ...`: (request line, status) of each new line.
    answered = [
        (line.split('"')[1], line.split('"')[2].split()[0])
        for line in _access_log(channel)[before:]
        if line.count('"') >= 2
    ]
    requests = [request for request, _ in answered]
    shard_index = [
        status for request, status in answered if "/noarch/repodata_shards.msgpack.zst " in request
    ]
    assert shard_index and set(shard_index) <= {"200", "304"}, answered
    assert any("/noarch/shards/" in request for request in requests), requests
    assert not [r for r in requests if "/repodata.json" in r], requests


def test_rattler_with_a_wrong_password_gets_401(channel: Channel, tmp_path: Path) -> None:
    result = _install_sample(channel, tmp_path, password="not-it")
    assert result.returncode != 0
    assert "401" in result.stderr
    assert not (tmp_path / "env" / "share" / SAMPLE).exists()


def _auth(channel: Channel) -> tuple[str, str]:
    return (channel.user, channel.password)


def test_repodata_is_cached_briefly_and_revalidates_with_304(channel: Channel) -> None:
    url = f"{channel.url}/noarch/repodata.json"
    first = fetch(url, ca_file=channel.ca_file, auth=_auth(channel))
    assert first.status == 200
    assert "must-revalidate" in first.headers["Cache-Control"]
    assert "max-age=30" in first.headers["Cache-Control"]
    assert first.headers["Content-Type"].startswith("application/json")
    by_etag = fetch(
        url,
        ca_file=channel.ca_file,
        auth=_auth(channel),
        headers={"If-None-Match": first.headers["ETag"]},
    )
    assert by_etag.status == 304
    by_date = fetch(
        url,
        ca_file=channel.ca_file,
        auth=_auth(channel),
        headers={"If-Modified-Since": first.headers["Last-Modified"]},
    )
    assert by_date.status == 304


def test_package_files_are_immutable(channel: Channel, repodata: dict) -> None:
    filename = _sample_filename(repodata)
    answer = fetch(f"{channel.url}/noarch/{filename}", ca_file=channel.ca_file, auth=_auth(channel))
    assert answer.status == 200
    assert "immutable" in answer.headers["Cache-Control"]
    assert "max-age=31536000" in answer.headers["Cache-Control"]


def test_json_is_compressed_for_clients_that_ask(channel: Channel) -> None:
    answer = fetch(
        f"{channel.url}/noarch/repodata.json",
        ca_file=channel.ca_file,
        auth=_auth(channel),
        headers={"Accept-Encoding": "gzip"},
    )
    assert answer.status == 200
    assert answer.headers.get("Content-Encoding") == "gzip"


def test_tls_is_hardened(channel: Channel) -> None:
    answer = fetch(f"{channel.url}/noarch/repodata.json", ca_file=channel.ca_file)
    assert answer.headers["Strict-Transport-Security"].startswith("max-age=63072000")
    assert answer.headers.get("Server") == "nginx"  # no version
    old = ssl.create_default_context(cafile=str(channel.ca_file))
    old.minimum_version = ssl.TLSVersion.TLSv1
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("ALL:@SECLEVEL=0")
    host, port = channel.url.split("://", 1)[1].split("/", 1)[0].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with pytest.raises(ssl.SSLError):
            with old.wrap_socket(raw, server_hostname=host):
                pass


def test_tls_complies_with_mozilla_intermediate(channel: Channel) -> None:
    host_port = channel.url.split("://", 1)[1].split("/", 1)[0]
    scan = subprocess.run(
        [
            sys.executable,
            "-m",
            "sslyze",
            "--mozilla_config=intermediate",
            f"--certinfo_ca_file={channel.ca_file}",
            host_port,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    report = RESULTS / "sslyze.txt"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(scan.stdout + scan.stderr)
    assert scan.returncode == 0, scan.stdout[-2000:]
    assert f"{host_port}: OK - Compliant" in scan.stdout
