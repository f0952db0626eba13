"""Fixtures for tests against a converged channel host (Molecule verify, the demo).

The host is described by environment variables that Molecule's verify.yml sets; run
outside it, the suite is skipped with that reason rather than pointed at nothing.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class Channel:
    url: str
    ca_file: Path
    user: str
    password: str
    container: str

    @property
    def http_url(self) -> str:
        return _require("CONDAPORT_HTTP_URL").rstrip("/")

    @property
    def published_dir(self) -> Path:
        return Path(_require("CONDAPORT_PUBLISHED_DIR"))


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    headers: dict[str, str]


def _require(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.skip(f"{name} is not set: these tests run from molecule verify against a live host")
    return value


@pytest.fixture(scope="session")
def channel() -> Channel:
    return Channel(
        url=_require("CONDAPORT_URL").rstrip("/"),
        ca_file=Path(_require("CONDAPORT_CA")),
        user=_require("CONDAPORT_USER"),
        password=_require("CONDAPORT_PASSWORD"),
        container=_require("CONDAPORT_CONTAINER"),
    )


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # noqa: ANN002, ANN003 - urllib's signature
        return None


def fetch(
    url: str,
    *,
    ca_file: Path | None,
    auth: tuple[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    """GET `url` trusting only `ca_file`; HTTP errors are answers, not exceptions."""
    context = ssl.create_default_context(cafile=str(ca_file)) if ca_file else None
    request = urllib.request.Request(url, headers=headers or {})
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    opener = urllib.request.build_opener(
        urllib.request.HTTPSHandler(context=context), _NoRedirect()
    )
    try:
        with opener.open(request, timeout=30) as response:
            return Answer(response.status, response.read(), dict(response.headers))
    except urllib.error.HTTPError as error:
        return Answer(error.code, error.read(), dict(error.headers))


@pytest.fixture(scope="session")
def repodata(channel: Channel) -> dict:
    answer = fetch(
        f"{channel.url}/noarch/repodata.json",
        ca_file=channel.ca_file,
        auth=(channel.user, channel.password),
    )
    assert answer.status == 200, answer.body[:200]
    return json.loads(answer.body)
