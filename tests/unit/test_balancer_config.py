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
