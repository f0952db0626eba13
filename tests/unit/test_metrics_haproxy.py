"""The balancer's metrics frontend in a real HAProxy: its built-in Prometheus exporter and
the node exporter behind it, on loopback by default; off loopback, for the monitoring
hosts' addresses and the token only."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bench.bench_auth import free_port
from tests.support.render import Renderer
from tests.unit.test_metrics import value

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
NODE_EXPORTER = shutil.which("prometheus-node-exporter") or "/usr/bin/prometheus-node-exporter"
TOKEN = "metrics-token-0123456789abcdefghijkl"
# What only a host's HAProxy may do (chroot, drop to its user, the admin socket, fork).
HOST_ONLY = re.compile(r"^\s*(chroot|user|group|daemon|stats socket|stats timeout)\b")


def rendered(tmp_path: Path, **inventory: object) -> tuple[Path, int, int]:
    port, node_port = free_port(), free_port()
    settings = {
        "condaport_balancer_backends": [{"name": "edge1", "address": "127.0.0.1", "port": 9}],
        "condaport_balancer_port": free_port(),
        "condaport_balancer_listen_ipv6": False,
        "condaport_balancer_metrics_port": port,
        "condaport_metrics_node_port": node_port,
        "__condaport_balancer_generation_socket": str(tmp_path / "generation.sock"),
        **inventory,
    }
    text = Renderer(["condaport", "condaport_balancer"], settings).render(
        "condaport_balancer", "etc/haproxy/haproxy.cfg.j2"
    )
    kept = "\n".join(line for line in text.splitlines() if not HOST_ONLY.match(line))
    # Traffic stays on loopback: a frontend rendered for another address listens here.
    kept = re.sub(rf"bind \S+:{port}\n", f"bind 127.0.0.1:{port}\n", kept + "\n")
    config = tmp_path / "haproxy.cfg"
    config.write_text(kept)
    return config, port, node_port


@contextmanager
def running(config: Path, node_port: int) -> Iterator[None]:
    checked = subprocess.run([HAPROXY, "-c", "-f", str(config)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    node = subprocess.Popen(
        [NODE_EXPORTER, f"--web.listen-address=127.0.0.1:{node_port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    haproxy = subprocess.Popen([HAPROXY, "-db", "-f", str(config)], stdout=subprocess.DEVNULL)
    time.sleep(0.5)
    try:
        yield
    finally:
        for process in (haproxy, node):
            process.terminate()
            process.wait()


def fetch(port: int, path: str, token: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    for _ in range(30):
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as refused:
            return refused.code, ""
        except urllib.error.URLError:
            time.sleep(0.2)
    raise AssertionError(f"nothing answers on {port}")


def test_the_exporter_and_the_node_exporter_on_loopback(tmp_path: Path) -> None:
    config, port, node_port = rendered(tmp_path)
    assert f"bind 127.0.0.1:{port}" in config.read_text()
    assert "use-service prometheus-exporter" in config.read_text()
    with running(config, node_port):
        status, text = fetch(port, "/metrics")
        assert status == 200
        assert value(text, "haproxy_backend_active_servers", proxy="condaport_edges") is not None
        assert (
            value(
                text, "haproxy_server_status", proxy="condaport_edges", server="edge1", state="UP"
            )
            is not None
        )
        status, node = fetch(port, "/node")
        assert status == 200 and "node_filesystem_avail_bytes" in node
        assert fetch(port, "/other")[0] == 404


def test_off_loopback_only_the_monitoring_hosts_with_the_token(tmp_path: Path) -> None:
    config, port, node_port = rendered(
        tmp_path,
        condaport_balancer_metrics_address="192.0.2.10",
        condaport_balancer_metrics_sources=["127.0.0.1"],
        condaport_metrics_token=TOKEN,
    )
    with running(config, node_port):
        assert fetch(port, "/metrics")[0] == 404
        assert fetch(port, "/metrics", TOKEN.upper())[0] == 404
        status, text = fetch(port, "/metrics", TOKEN)
        assert status == 200 and "haproxy_process_" in text


def test_off_loopback_other_addresses_are_not_answered(tmp_path: Path) -> None:
    config, port, node_port = rendered(
        tmp_path,
        condaport_balancer_metrics_address="192.0.2.10",
        condaport_balancer_metrics_sources=["192.0.2.99"],
        condaport_metrics_token=TOKEN,
    )
    with running(config, node_port), pytest.raises((ConnectionError, urllib.error.URLError)):
        request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
        request.add_header("Authorization", f"Bearer {TOKEN}")
        time.sleep(0.3)
        urllib.request.urlopen(request, timeout=10)
