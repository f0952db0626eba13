"""The balancer's HAProxy configuration names itself: the handlers compare the checksum it
serves on a local socket with the one in the file on disk, so a reload HAProxy refused
fails the play (the Molecule `edges` converge runs those handlers against a real HAProxy).
"""

from __future__ import annotations

import base64
import hashlib
import re

from tests.support.render import Renderer

INVENTORY = {
    "condaport_balancer_backends": [
        {"name": "edge1", "address": "10.0.0.11", "port": 443},
        {"name": "edge2", "address": "10.0.0.12", "port": 443},
    ]
}


def rendered(inventory: dict[str, object]) -> tuple[Renderer, str]:
    renderer = Renderer(["condaport", "condaport_balancer"], inventory)
    return renderer, renderer.render("condaport_balancer", "etc/haproxy/haproxy.cfg.j2")


def expected_generation(renderer: Renderer, text: str) -> str:
    """What the handler reads out of the file on disk (slurp gives it base64-encoded)."""
    slurped = {"content": base64.b64encode(text.encode()).decode()}
    return renderer.value(
        "__condaport_balancer_expected_generation", __condaport_balancer_rendered=slurped
    )


def test_the_served_checksum_covers_everything_before_it() -> None:
    renderer, text = rendered(INVENTORY)
    checked, _, generation_frontend = text.partition("frontend condaport_generation")
    assert "server edge2 10.0.0.12:443" in checked
    generation = expected_generation(renderer, text)
    assert re.fullmatch(r"[0-9a-f]{40}", generation)
    assert f"string {generation}" in generation_frontend
    # The block the template checksums: from `global` to the blank line before the comment.
    configuration = text[text.index("global\n") :].partition("\n\n# Which configuration")[0]
    assert generation == hashlib.sha1(configuration.encode()).hexdigest()


def test_another_edge_is_another_generation() -> None:
    renderer, text = rendered(INVENTORY)
    moved = {"condaport_balancer_backends": [*INVENTORY["condaport_balancer_backends"][:1]]}
    other_renderer, other = rendered(moved)
    assert expected_generation(renderer, text) != expected_generation(other_renderer, other)


def test_the_generation_socket_is_root_only() -> None:
    _, text = rendered(INVENTORY)
    frontend = text.partition("frontend condaport_generation")[2]
    lines = [line.strip() for line in frontend.splitlines() if line.strip()]
    assert any(re.fullmatch(r"bind unix@/run/haproxy/\S+\.sock mode 600", line) for line in lines)


# -- client addresses (issue 17) -----------------------------------------------------------------


def server_lines(text: str) -> list[list[str]]:
    """The edges' servers (the metrics frontend's node exporter is another backend)."""
    edges = text.partition("\nbackend condaport_edges")[2].partition("\n\n")[0]
    return [line.split() for line in edges.splitlines() if line.strip().startswith("server ")]


def test_every_edge_and_its_health_check_get_the_clients_address() -> None:
    _, text = rendered(INVENTORY)
    servers = server_lines(text)
    assert len(servers) == 2
    for words in servers:
        # PROXY protocol v2 on the connections and on the health checks alike: the edge's
        # port for balancers takes nothing without the header.
        assert "send-proxy-v2" in words and "check-send-proxy" in words, words


def test_edges_of_the_group_are_reached_at_their_port_for_balancers() -> None:
    edges = {
        "edge1.example.org": {
            "ansible_host": "192.0.2.11",
            "condaport_nginx_https_port": 443,
            "condaport_nginx_proxy_protocol_port": 8444,
        },
        "edge2.example.org": {"condaport_nginx_proxy_protocol_port": 8445},
    }
    inventory = {"groups": {"channel_edges": list(edges)}, "hostvars": edges}
    _, text = rendered(inventory)
    assert [words[2] for words in server_lines(text)] == [
        "192.0.2.11:8444",
        "edge2.example.org:8445",
    ]
    # Turned off, the balancer goes to the HTTPS ports and sends no header there.
    _, plain = rendered(inventory | {"condaport_balancer_proxy_protocol": False})
    servers = server_lines(plain)
    assert [words[2] for words in servers] == ["192.0.2.11:443", "edge2.example.org:443"]
    assert not any("proxy" in word for words in servers for word in words)


def test_ipv4_clients_reach_the_edges_as_ipv4_addresses() -> None:
    # A dual-stack socket would see (and name to the edges) ::ffff:a.b.c.d.
    _, text = rendered(INVENTORY)
    frontend = text.partition("frontend condaport_https")[2].partition("backend ")[0]
    binds = [line.split()[1:] for line in frontend.splitlines() if line.strip().startswith("bind")]
    assert binds == [["0.0.0.0:443"], ["[::]:443", "v6only"]]
    _, ipv4_only = rendered(INVENTORY | {"condaport_balancer_listen_ipv6": False})
    assert "[::]" not in ipv4_only.partition("frontend condaport_generation")[0]
