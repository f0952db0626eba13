"""The edge's NGINX snippets (roles/condaport_edge) keep credentials out of the cache and
away from the primary, and verify the primary's certificate.

Rendered with bench/bench_edge.py's renderer, which the edge benchmark runs under a real
NGINX; the Molecule scenario (molecule/edges) checks the behaviour end to end.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench.bench_edge import render_edge


@pytest.fixture(scope="module")
def snippets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    files = render_edge(tmp_path_factory.mktemp("edge"), 8443)
    texts = {kind: Path(path).read_text() for kind, path in files.items() if kind != "ca"}
    return texts | {"cache-path": str(files["cache"])}


def directives(text: str) -> list[str]:
    return [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def test_the_cache_key_is_the_channel_path_alone(snippets: dict[str, str]) -> None:
    assert "proxy_cache_key $uri;" in directives(snippets["proxy"])


def test_the_edge_includes_the_shared_cache_settings(snippets: dict[str, str]) -> None:
    assert f"include {snippets['cache-path']};" in directives(snippets["proxy"])


def test_no_client_header_goes_upstream(snippets: dict[str, str]) -> None:
    lines = directives(snippets["proxy"]) + directives(snippets["cache"])
    assert "proxy_pass_request_headers off;" in lines
    assert not any(re.search(r"\$http_|\$request_uri|\$remote_user", line) for line in lines)
    # Exactly one Authorization is sent: the edge's own.
    assert [line for line in lines if "Authorization" in line] == [
        line for line in lines if line.startswith('proxy_set_header Authorization "Basic ')
    ]


def test_the_primary_is_verified(snippets: dict[str, str]) -> None:
    lines = directives(snippets["proxy"]) + directives(snippets["cache"])
    assert "proxy_ssl_verify on;" in lines
    assert any(line.startswith("proxy_ssl_trusted_certificate ") for line in lines)


def test_index_files_expire_and_packages_stay(snippets: dict[str, str]) -> None:
    assert "proxy_cache_valid 200 404 5s;" in directives(snippets["index"])
    assert "proxy_cache_valid 200 31536000s;" in directives(snippets["package"])
    proxy = directives(snippets["proxy"]) + directives(snippets["cache"])
    assert "proxy_cache_revalidate on;" in proxy
    assert "proxy_cache_lock on;" in proxy
    stale = next(line for line in proxy if line.startswith("proxy_cache_use_stale "))
    for condition in ("error", "timeout", "updating", "http_502", "http_503", "http_504"):
        assert condition in stale.rstrip(";").split()
