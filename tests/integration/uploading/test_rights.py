"""Who may upload where: every kind of caller against each channel (JSON answers whoever
answered, NGINX or the service), no identity taken from a client's header, and upload
tokens that grant no reading."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.live import fetch
from tests.support.pkgbuild import build_tar_bz2
from uploading.site import RUN, Site, credentials, listed, put, send

# channel -> caller -> expected status of a new, valid package
MATRIX = {
    "main": {
        "none": 401,
        "wrong-password": 401,
        "unknown-bearer": 401,
        "unknown-apikey": 401,
        "reader": 403,
        "bearer:ci-other": 403,
        "apikey:ci-other": 403,
        "uploader": 201,
        "maintainer": 201,
        "bearer:ci-main": 201,
        "apikey:ci-main": 201,
    },
    "public": {
        "none": 401,
        "reader": 403,
        "maintainer": 403,
        "bearer:ci-other": 403,
        "unknown-bearer": 401,
        "uploader": 201,
        "bearer:ci-main": 201,
    },
    "other": {
        "none": 401,
        "reader": 403,
        "uploader": 403,
        "bearer:ci-main": 403,
        "bearer:ci-other": 201,
    },
}
CASES = [(c, w) for c, callers in MATRIX.items() for w in callers]


@pytest.mark.basic_mode
@pytest.mark.parametrize(("channel", "who"), CASES, ids=[f"{c}-{w}" for c, w in CASES])
def test_upload_rights(site: Site, tmp_path: Path, channel: str, who: str) -> None:
    package = build_tar_bz2(tmp_path, f"m-{channel}-{who.replace(':', '-')}-{site.mode}-{RUN}")
    reply = put(site, who, channel, package)
    assert reply.status == MATRIX[channel][who], reply
    landed = package.name in listed(site, channel)
    assert landed == (reply.status == 201)
    if reply.status == 401:
        assert "WWW-Authenticate" in reply.headers
    # JSON whoever answered: the service (201, 403) or NGINX itself (401).
    assert reply.body.get("status") == reply.status, reply


@pytest.mark.basic_mode
def test_a_client_cannot_claim_an_identity(site: Site, tmp_path: Path) -> None:
    package = build_tar_bz2(tmp_path, f"spoof-{site.mode}-{RUN}")
    claimed = {"X-Condaport-Uploader": "token:ci-main", "X-Condaport-Client": "127.0.0.1"}
    for who, expected in (("none", 401), ("reader", 403)):
        reply = send(
            site,
            "PUT",
            f"/main/noarch/{package.name}",
            package.read_bytes(),
            {**credentials(site, who), **claimed},
        )
        assert reply.status == expected, reply
    # The internal location cannot be reached from outside, whatever the method.
    for method in ("GET", "PUT"):
        reply = send(site, method, "/.condaport-upload/", b"" if method == "PUT" else None)
        assert reply.status in (401, 404), reply
    assert package.name not in listed(site, "main")


def test_reading_is_unchanged_by_upload_tokens(site: Site) -> None:
    """An upload token is not a read credential, and reading needs no upload right."""
    path = f"{site.base_url}/main/noarch/repodata.json"
    token = site.tokens["ci-main"]
    assert (
        fetch(path, ca_file=site.ca_file, headers={"Authorization": f"Bearer {token}"}).status
        == 401
    )
    assert (
        fetch(path, ca_file=site.ca_file, auth=("reader", site.passwords["reader"])).status == 200
    )
