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
from tests.support.render import Renderer
from tests.support.render import directives as render_directives


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


# -- client addresses through the balancer (issue 17) ------------------------------------------

BALANCER_PORT = 8444
BALANCERS = {"lb1.example.org": {"ansible_host": "192.0.2.7"}, "lb2.example.org": {}}


def edge_vhost(**inventory: object) -> list[str]:
    """The channel vhost of an edge behind the balancers above, as NGINX directives."""
    base = {
        "condaport_nginx_edge": True,
        "condaport_edge_upstream_url": "https://primary.example.org",
        "condaport_channels": [{"name": "main", "users": ["reader"]}],
        "condaport_nginx_users": [{"name": "reader", "password": "reader-password"}],
        "groups": {"channel_balancers": list(BALANCERS)},
        "hostvars": BALANCERS,
    }
    roles = ["condaport", "condaport_tools", "condaport_edge", "condaport_nginx"]
    renderer = Renderer(roles, base | inventory)
    return render_directives(
        renderer.render("condaport_nginx", "etc/nginx/conf.d/condaport.conf.j2")
    )


def listens(lines: list[str]) -> list[list[str]]:
    return [line.rstrip(";").split()[1:] for line in lines if line.startswith("listen ")]


def test_the_balancers_port_alone_takes_a_proxy_protocol_header() -> None:
    lines = edge_vhost(condaport_nginx_proxy_protocol_port=BALANCER_PORT)
    with_header = [words[0] for words in listens(lines) if "proxy_protocol" in words]
    assert with_header == [str(BALANCER_PORT), f"[::]:{BALANCER_PORT}"]
    # Direct clients keep the HTTPS port, where a PROXY header is no header but a broken
    # handshake: nobody can claim an address there.
    direct = [words for words in listens(lines) if words[0] in ("443", "[::]:443")]
    assert len(direct) == 2 and not any("proxy_protocol" in words for words in direct)


def test_only_the_balancers_may_name_the_client() -> None:
    lines = edge_vhost(condaport_nginx_proxy_protocol_port=BALANCER_PORT)
    trusted = [line for line in lines if line.startswith("set_real_ip_from ")]
    # Every host of channel_balancers, at its ansible_host or its inventory name.
    assert trusted == ["set_real_ip_from 192.0.2.7;", "set_real_ip_from lb2.example.org;"]
    assert "real_ip_header proxy_protocol;" in lines
    chosen = edge_vhost(
        condaport_nginx_proxy_protocol_port=BALANCER_PORT,
        condaport_nginx_proxy_protocol_sources=["10.1.2.0/28"],
    )
    assert [line for line in chosen if line.startswith("set_real_ip_from ")] == [
        "set_real_ip_from 10.1.2.0/28;"
    ]


def test_without_a_balancers_port_nobody_names_the_client() -> None:
    lines = edge_vhost()
    assert not any("proxy_protocol" in line or "real_ip" in line for line in lines)
