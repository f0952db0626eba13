"""Client addresses through the balancer (issue 17): HAProxy tells the edges who connected
(PROXY protocol v2 on their port for balancers), so an edge logs each client by its own
address and the verifier's per-network login limit keeps one bucket per client network,
not one for everybody behind the balancer.

Two client containers, each on a podman network of its own that the balancer joins (as a
balancer faces several client networks), reach the edges through the balancer only. A host
that is not the balancer (the primary) tries to claim another address at an edge directly.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.live import Tiers

from .test_edges import RUN, edge_port, podman

SCRIPT = Path(__file__).with_name("client_inside.py")
INSIDE_SCRIPT = "/tmp/condaport-client.py"
INSIDE_CA = "/tmp/condaport-ca.crt"
CLIENTS = ("a", "b")
# An address nobody in the scenario has (TEST-NET-3).
CLAIMED = "203.0.113.77"
# The access log: '$remote_addr - user [time] "METHOD path protocol" status ...'.
LOG_LINE = re.compile(
    r'^(?P<address>\S+) - \S+ \[[^]]+\] "\S+ (?P<path>\S+) [^"]*" (?P<status>\d+) '
)


@dataclass(frozen=True)
class Client:
    container: str
    network: str
    address: str
    # The balancer's address on this client's network.
    balancer: str


def addresses(container: str) -> dict[str, str]:
    """network -> the container's IPv4 address on it."""
    inspected = podman("inspect", container, "--format", "{{json .NetworkSettings.Networks}}")
    return {name: net["IPAddress"] for name, net in json.loads(inspected.stdout).items()}


def remove_client(container: str, network: str, balancer: str) -> None:
    """Leaves nothing behind (also what an interrupted run left). No `network rm -f`: that
    would remove every container still on the network, the balancer included."""
    podman("rm", "--force", "--time", "0", container, check=False)
    podman("network", "disconnect", network, balancer, check=False)
    podman("network", "rm", network, check=False)


def install_client_files(container: str, tiers: Tiers) -> None:
    podman("cp", str(SCRIPT), f"{container}:{INSIDE_SCRIPT}")
    podman("cp", str(tiers.ca_file), f"{container}:{INSIDE_CA}")


@pytest.fixture(scope="module")
def clients(tiers: Tiers) -> Iterator[dict[str, Client]]:
    image = podman("inspect", tiers.balancer, "--format", "{{.ImageName}}").stdout.strip()
    made: dict[str, Client] = {}
    try:
        for name in CLIENTS:
            container = f"condaport-edges-client-{name}"
            network = f"condaport-edges-clients-{name}"
            remove_client(container, network, tiers.balancer)
            podman("network", "create", network)
            podman("network", "connect", network, tiers.balancer)
            podman("run", "--detach", "--name", container, "--network", network, image,
                   "sleep", "infinity")  # fmt: skip
            install_client_files(container, tiers)
            made[name] = Client(
                container,
                network,
                addresses(container)[network],
                addresses(tiers.balancer)[network],
            )
        yield made
    finally:
        for name in CLIENTS:
            remove_client(
                f"condaport-edges-client-{name}", f"condaport-edges-clients-{name}", tiers.balancer
            )


def inside(container: str, *argv: str) -> object:
    result = subprocess.run(
        ["podman", "exec", container, "python3", INSIDE_SCRIPT, *argv],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def logged(tiers: Tiers, edge: str, path: str, wait: float = 5) -> list[dict[str, str]]:
    """The edge's access log lines for `path`, once NGINX has written them (it logs a
    request after answering it); none after `wait` seconds."""
    deadline = time.monotonic() + wait
    while True:
        text = podman("exec", edge, "cat", "/var/log/nginx/access.log").stdout
        lines = [m.groupdict() for m in map(LOG_LINE.match, text.splitlines()) if m]
        found = [line for line in lines if line["path"] == path]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def logged_everywhere(tiers: Tiers, path: str) -> dict[str, list[dict[str, str]]]:
    return {edge: logged(tiers, edge, path) for edge in tiers.edges}


def balancer_addresses(tiers: Tiers) -> set[str]:
    return set(addresses(tiers.balancer).values())


def test_each_client_is_logged_by_its_own_address(tiers: Tiers, clients: dict[str, Client]) -> None:
    for name, client in clients.items():
        path = f"/public/noarch/whoami-{RUN}-{name}.json"
        statuses = inside(
            client.container, "probe", client.balancer, str(tiers.balancer_port), path, "6"
        )
        assert statuses == [404] * 6, statuses
        seen = [line for lines in logged_everywhere(tiers, path).values() for line in lines]
        assert len(seen) == 6, seen
        assert {line["address"] for line in seen} == {client.address}, (client, seen)
    assert clients["a"].address != clients["b"].address


def test_one_networks_login_flood_does_not_throttle_another(
    tiers: Tiers, clients: dict[str, Client]
) -> None:
    """Client a runs past the verifier gate's per-network rate (its checks answer 503);
    meanwhile client b's checks at the same edge are still answered (401, wrong
    credentials), not refused for a's flood. Behind a balancer that hid the clients, both
    were one network: b got a's 503s."""
    verifier_edges = [edge for edge, mode in tiers.edge_auth_modes.items() if mode == "verifier"]
    assert verifier_edges, "molecule/edges has an edge in verifier mode"
    edge = verifier_edges[0]
    flood_path = f"/main/noarch/flood-{RUN}-a"
    probe_path = f"/main/noarch/probe-{RUN}-b"
    a, b = clients["a"], clients["b"]
    flooding = subprocess.Popen(
        ["podman", "exec", a.container, "python3", INSIDE_SCRIPT, "flood", a.balancer,
         str(tiers.balancer_port), flood_path, "12", "4"],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        started = json.loads(flooding.stdout.readline() or "{}")
        assert started.get("throttled"), f"client a never reached the limit: {started}"
        # Fresh connections, so the balancer spreads them over the edges; by least
        # connections, so while a's connections crowd one edge b may land on the other
        # for a while (all 8 of a round did, once in CI): rounds until b reached `edge`.
        checks: list[int] = []
        for _ in range(5):
            checks += inside(
                b.container, "check", b.balancer, str(tiers.balancer_port), probe_path, "8"
            )
            if logged(tiers, edge, probe_path, wait=1):
                break
        summary = json.loads(flooding.stdout.read().strip().splitlines()[-1])
    finally:
        flooding.wait(timeout=120)
    print(f"\nclient network a flooding: {summary}; client network b meanwhile: {checks}")
    # Wrong credentials, answered as such at either edge: none refused for a's flood.
    assert checks == [401] * len(checks), checks
    b_at_edge = logged(tiers, edge, probe_path)
    assert b_at_edge, f"none of client b's checks reached {edge}"
    assert {(line["address"], line["status"]) for line in b_at_edge} == {(b.address, "401")}
    a_at_edge = logged(tiers, edge, flood_path)
    assert {line["address"] for line in a_at_edge} == {a.address}
    assert any(line["status"] == "503" for line in a_at_edge)
    # a was still over its limit while b was checked.
    assert int(summary["after"].get("503", 0)) > 0, summary


def test_only_the_balancer_may_name_the_client(tiers: Tiers) -> None:
    """A host that is not the balancer (the primary) connects to an edge itself and opens
    with a PROXY header claiming another address: on the edge's port for balancers the
    header is not believed (the log names the host), on its HTTPS port it is no header at
    all but a broken handshake."""
    host = tiers.primary
    install_client_files(host, tiers)
    (network, host_address), *_ = addresses(host).items()
    edge = tiers.edges[0]
    edge_address = addresses(edge)[network]
    assert host_address not in balancer_addresses(tiers)
    path = f"/public/noarch/claim-{RUN}.json"
    status = inside(host, "spoof", edge_address, str(tiers.edge_proxy_protocol_port), path, CLAIMED)
    assert status == 404, status
    assert [line["address"] for line in logged(tiers, edge, path)] == [host_address]
    direct_path = f"/public/noarch/claim-direct-{RUN}.json"
    status = inside(host, "spoof", edge_address, str(edge_port(tiers, edge)), direct_path, CLAIMED)
    assert status == 0, status
    log = podman("exec", edge, "cat", "/var/log/nginx/access.log").stdout
    assert CLAIMED not in log
