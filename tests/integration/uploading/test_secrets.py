"""No secret reaches a log or a file: a read token pasted into an upload URL is refused
before anything logs it, and upload tokens are stored only in the root-only map."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.support.live import require
from tests.support.pkgbuild import build_tar_bz2
from uploading.site import RUN, Site, credentials, listed, on_host, send


def _token_upload_urls(token: str, name: str) -> list[tuple[str, str]]:
    """An upload sent to a channel URL with its read token, in the spellings NGINX reads
    as that path (its access log masks them all)."""
    encoded = f"%{ord(token[0]):02X}{token[1:]}"
    return [
        ("PUT", f"/t/{token}/main/noarch/{name}"),
        ("PUT", f"/T/{token}/main/noarch/{name}"),
        ("PUT", f"/t/{encoded}/main/noarch/{name}"),
        ("PUT", f"//t//{token}/main/noarch/{name}"),
        ("PUT", f"/main/../t/{token}/main/noarch/{name}"),
        ("DELETE", f"/t/{token}/main/noarch/{name}"),
        ("POST", f"/t/{token}/api/channels/main/upload/{name}"),
    ]


@pytest.mark.basic_mode
def test_a_read_token_in_an_upload_url_reaches_no_log(site: Site, tmp_path: Path) -> None:
    """A channel URL with its read token pasted as the upload URL is refused before any
    credential check, body read or the service: auth_basic logs a wrong password with the
    request line, NGINX a too large body likewise, and the service its request path, so
    neither NGINX's logs nor the journal may hold the token afterwards."""
    inventory = json.loads(require("CONDAPORT_UPLOAD"))
    read_token = next(t for u in inventory["users"] for t in u.get("tokens", []))
    unknown = f"unknown-read-token-{os.urandom(8).hex()}"
    package = build_tar_bz2(tmp_path, f"tokened-{site.mode}-{RUN}")
    body = package.read_bytes()
    for token in (read_token, unknown):
        for method, path in _token_upload_urls(token, package.name):
            for who in ("uploader", "wrong-password", "none", "bearer:ci-main"):
                sent = None if method == "DELETE" else body
                reply = send(site, method, path, sent, credentials(site, who))
                assert reply.status == 404, (method, who, reply)
                assert "/t/<token>/" in reply.body.get("error", ""), reply
        oversize = b"\0" * (5 * 1024 * 1024)  # past the scenario's 4 MiB limit
        reply = send(site, "PUT", f"/t/{token}/main/noarch/{package.name}", oversize)
        assert reply.status == 404, reply
    assert package.name not in listed(site, "main")
    journal = on_host(site, "journalctl", "--no-pager", "--output=cat", check=False)
    assert journal.returncode == 0 and "accepting uploads" in journal.stdout, journal.stderr
    nginx_logs = on_host(site, "sh", "-c", "cat /var/log/nginx/*.log")
    # The refusals were logged, under the internal location's name.
    assert "/.condaport-upload-token/" in nginx_logs.stdout, nginx_logs.stdout[-2000:]
    for token in (read_token, unknown):
        # The token itself, and the tail an encoded first character leaves.
        for shown in (token, token[1:]):
            assert shown not in journal.stdout, f"token in the journal ({site.mode})"
            assert shown not in nginx_logs.stdout, f"token in NGINX's logs ({site.mode})"


@pytest.mark.basic_mode
def test_no_upload_token_is_stored_anywhere_but_the_root_only_map(site: Site) -> None:
    patterns = [arg for token in site.tokens.values() for arg in ("-e", token)]
    found = on_host(
        site,
        "grep",
        "-rlsF",
        *patterns,
        "/",
        "--exclude-dir=proc",
        "--exclude-dir=sys",
        "--exclude-dir=dev",
        check=False,
    )
    holders = sorted(found.stdout.split())
    assert holders == ["/etc/nginx/condaport/upload-tokens.map"], holders
    mode = on_host(site, "stat", "-c", "%U %G %a", holders[0]).stdout.split()
    assert mode == ["root", "root", "600"]
