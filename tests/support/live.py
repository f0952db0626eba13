"""A converged channel host as the integration suites reach it (Molecule verify, the demo).

verify.yml describes the host in environment variables: `require` reads one, and outside
verify skips the calling test with that reason rather than pointing it at nothing. `fetch`
is a GET that trusts only the channel's CA and returns HTTP errors as answers. `Channel`
and `Tiers` are what the fixtures (tests/integration/conftest.py, edges/conftest.py) make
of that description.
"""

from __future__ import annotations

import base64
import os
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest


def require(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.skip(f"{name} is not set: these tests run from molecule verify against a live host")
    return value


@dataclass(frozen=True)
class Channel:
    url: str
    ca_file: Path
    user: str
    password: str
    container: str

    @property
    def http_url(self) -> str:
        return require("CONDAPORT_HTTP_URL").rstrip("/")

    @property
    def published_dir(self) -> Path:
        return Path(require("CONDAPORT_PUBLISHED_DIR"))


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    headers: dict[str, str]


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


@dataclass(frozen=True)
class Tiers:
    """molecule/edges: a primary, two caching edges and HAProxy in front of them."""

    primary_url: str
    edge_url: str
    balancer_url: str
    ca_file: Path
    primary: str
    edges: list[str]
    balancer: str
    cache_dir: str
    index_validity: int
    passwords: dict[str, str]
    tokens: dict[str, list[str]]
    upload_token: str
    channels: list[dict]
    proxy_index_validity: int
    edge_auth_modes: dict[str, str]
    proxy_cache_dir: str
    # The edges' port for the balancer (PROXY protocol), and the balancer's own port.
    edge_proxy_protocol_port: int
    balancer_port: int
