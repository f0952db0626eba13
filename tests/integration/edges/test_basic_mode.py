"""Access through an edge in the other auth mode (molecule/edges: edge2 checks passwords
with NGINX's own auth_basic, edge1 and the primary ask the verifier): a subset of the
access matrix, asked from inside the edge (it has no published port), including the
proxy channel. The answers are the primary's promises, so a client sees no difference
whichever edge the balancer picks.
"""

from __future__ import annotations

import pytest

from tests.support.live import Tiers

from .test_edges import _headers_for, edge_port, fetch_inside, podman

CASES = (
    ("main", "none", 401),
    ("main", "reader", 200),
    ("main", "reader-token", 200),
    ("main", "robot-token", 200),
    ("main", "wrong-password", 401),
    ("main", "unknown-token", 401),
    ("main", "partner", 401),
    ("partner", "partner", 200),
    ("partner", "reader", 401),
    ("partner", "reader-token", 401),
    ("public", "none", 200),
    ("mirror", "partner", 200),
    ("mirror", "reader", 401),
)


def _basic_edges(tiers: Tiers) -> list[str]:
    edges = [edge for edge, mode in tiers.edge_auth_modes.items() if mode == "basic"]
    assert edges, "molecule/edges puts one edge in basic mode"
    return edges


@pytest.mark.parametrize(("channel", "who", "expected"), CASES)
def test_an_edge_in_basic_mode_enforces_the_same_rules(
    tiers: Tiers, channel: str, who: str, expected: int
) -> None:
    prefix, headers = _headers_for(tiers, who)
    for edge in _basic_edges(tiers):
        url = f"https://localhost:{edge_port(tiers, edge)}{prefix}/{channel}/noarch/repodata.json"
        status = fetch_inside(edge, url, headers.get("Authorization", ""))
        assert status == expected, (edge, channel, who, status)


def test_the_basic_mode_edge_checks_passwords_itself(tiers: Tiers) -> None:
    for edge in _basic_edges(tiers):
        vhost = podman("exec", edge, "cat", "/etc/nginx/conf.d/condaport.conf").stdout
        assert "auth_basic_user_file" in vhost and "access_by_lua_block" not in vhost, edge
