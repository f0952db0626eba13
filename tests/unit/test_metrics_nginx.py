"""NGINX's side of the metrics, in a real NGINX: stub_status and the Lua counters on
loopback, Debian's prometheus-nginx-exporter reading stub_status with the arguments the role
renders, the edge cache's statuses counted, and the token-only HTTPS door to all of it."""

from __future__ import annotations

import base64
import os
import shlex
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench import bench_auth
from bench.bench_auth import LUA_MODULES, free_port, self_signed
from tests.support.nginx import running
from tests.support.render import Renderer, scratch_host_paths
from tests.unit.test_edge_nginx import EDGE_CONF, PRIMARY_CONF
from tests.unit.test_metrics import promtool_accepts, value

TOKEN = "metrics-token-0123456789abcdefghijkl"
PATH = "/.well-known/condaport/metrics"
EXPORTER = shutil.which("prometheus-nginx-exporter") or "/usr/bin/prometheus-nginx-exporter"


@dataclass
class Site:
    prefix: Path
    port: int
    status_port: int
    exporter_port: int
    renderer: Renderer

    def get(self, path: str, token: str | None = None) -> tuple[int, str]:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        request = urllib.request.Request(f"https://127.0.0.1:{self.port}{path}")
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, context=context, timeout=20) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as refused:
            return refused.code, ""

    def loopback(self, port: int, path: str) -> str:
        url = f"http://127.0.0.1:{port}{path}"
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.read().decode()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    prefix = tmp_path_factory.mktemp("metrics-nginx")
    prefix.chmod(0o755)
    for folder in ("tmp", "auth", "run", "edge", "edge-cache", "local", "primary/main/noarch"):
        (prefix / folder).mkdir(parents=True)
    (prefix / "primary/main/noarch/pkg-1.0-0.conda").write_bytes(b"a package")
    tls = self_signed(prefix)
    primary_port, port, status_port, exporter_port = (free_port() for _ in range(4))
    inventory = {
        "condaport_auth_mode": "basic",
        "condaport_nginx_edge": True,
        "condaport_edge_upstream_url": f"https://localhost:{primary_port}",
        "condaport_edge_upstream_user": "edge",
        "condaport_nginx_https_port": port,
        "condaport_nginx_http_port": 0,
        "condaport_nginx_listen_ipv6": False,
        "condaport_nginx_status_port": status_port,
        "condaport_nginx_exporter_port": exporter_port,
        "condaport_metrics_token": TOKEN,
        "condaport_channels": [{"name": "main", "anonymous": True}],
        "condaport_nginx_users": [{"name": "edge", "password": "edge-password-0815"}],
        **scratch_host_paths(prefix),
        "condaport_edge_nginx_dir": str(prefix / "edge"),
        "condaport_edge_cache_dir": str(prefix / "edge-cache"),
    }
    renderer = Renderer(["condaport", "condaport_nginx", "condaport_edge"], inventory)
    out = {
        "condaport.conf": ("condaport_nginx", "etc/nginx/conf.d/condaport.conf.j2"),
        "metrics.conf": ("condaport_nginx", "etc/nginx/conf.d/condaport-metrics.conf.j2"),
        "cache.conf": ("condaport_nginx", "etc/nginx/snippets/condaport-cache.conf.j2"),
        "auth/tokens.map": ("condaport_nginx", "etc/nginx/condaport/tokens.map.j2"),
        "auth/metrics-token.map": ("condaport_nginx", "etc/nginx/condaport/metrics-token.map.j2"),
    }
    for kind in ("http", "proxy", "package", "index"):
        out[f"edge/{kind}.conf"] = ("condaport_edge", f"etc/nginx/condaport-edge/{kind}.conf.j2")
    for name, (role, template) in out.items():
        (prefix / name).write_text(renderer.render(role, template))
    shutil.copy(prefix / "cert.pem", prefix / "edge/upstream-ca.crt")
    (prefix / "auth/generation.conf").write_text('return 200 "test\\n";\n')
    primary_conf = prefix / "primary.conf"
    primary_conf.write_text(PRIMARY_CONF.format(prefix=prefix, port=primary_port, tls=tls))
    conf = prefix / "nginx.conf"
    load = "".join(f"load_module {module};\n" for module in LUA_MODULES)
    edge = EDGE_CONF.format(prefix=prefix).replace(
        f"include {prefix}/condaport.conf;",
        f"include {prefix}/metrics.conf;\n    include {prefix}/condaport.conf;",
    )
    conf.write_text(load + edge)
    with running(prefix, conf, primary_conf):
        yield Site(prefix, port, status_port, exporter_port, renderer)


def test_the_edge_cache_statuses_are_counted(site: Site) -> None:
    path = "/main/noarch/pkg-1.0-0.conda"
    assert site.get(path)[0] == 200
    assert site.get(path)[0] == 200
    text = site.loopback(site.status_port, "/metrics")
    promtool_accepts(text)
    assert value(text, "condaport_cache_requests_total", status="MISS") == 1
    assert value(text, "condaport_cache_requests_total", status="HIT") == 1
    assert value(text, "condaport_auth_checks_total", result="cache_hit") == 0


def test_stub_status_is_on_loopback_and_the_exporter_reads_it(site: Site) -> None:
    assert "Active connections" in site.loopback(site.status_port, "/stub_status")
    defaults = site.renderer.render("condaport_nginx", "etc/default/prometheus-nginx-exporter.j2")
    args_line = next(line for line in defaults.splitlines() if line.startswith("ARGS="))
    args = shlex.split(args_line.removeprefix("ARGS="))[0].split()
    assert f"--web.listen-address=127.0.0.1:{site.exporter_port}" in args
    exporter = subprocess.Popen(
        [EXPORTER, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        text = ""
        for _ in range(50):
            try:
                text = site.loopback(site.exporter_port, "/metrics")
                break
            except OSError:
                time.sleep(0.1)
        assert value(text, "nginx_up") == 1
        assert value(text, "nginx_connections_accepted") is not None
    finally:
        exporter.terminate()
        exporter.wait()


def test_the_https_door_answers_the_token_only(site: Site) -> None:
    status, text = site.get(f"{PATH}/lua", TOKEN)
    assert status == 200 and "condaport_cache_requests_total" in text
    assert site.get(f"{PATH}/lua")[0] == 404
    assert site.get(f"{PATH}/lua", TOKEN.upper())[0] == 404
    assert site.get(f"{PATH}/lua", TOKEN + "x")[0] == 404
    assert site.get(f"{PATH}/other", TOKEN)[0] == 404
    # Not through the token URL form either, nor a dot path beside it.
    assert site.get(f"/t/{TOKEN}{PATH}/lua")[0] in (401, 403, 404)
    assert site.get("/.well-known/condaport/other")[0] == 404


def test_nothing_new_listens_beyond_loopback(site: Site) -> None:
    metrics_conf = (site.prefix / "metrics.conf").read_text()
    listens = [line.split()[1] for line in metrics_conf.splitlines() if "listen " in line]
    assert listens and all(address.startswith("127.0.0.1:") for address in listens)
    assert os.path.getsize(site.prefix / "auth/metrics-token.map") > 0


def test_verifier_mode_checks_are_counted(tmp_path: Path) -> None:
    """The role's Lua check with the real verifier: answers, answer cache hits, and a check
    the verifier cannot take (here: gone) counted as shed."""
    prefix = tmp_path
    prefix.chmod(0o755)
    for folder in ("auth", "tmp", "www"):
        (prefix / folder).mkdir()
    (prefix / "www" / "file").write_text("served")
    port, status_port = free_port(), free_port()
    tls = self_signed(prefix)
    conf = bench_auth.nginx_conf(prefix, port, ["cached:bcrypt:4"], tls)
    renderer = Renderer(
        ["condaport", "condaport_nginx"], {"condaport_nginx_status_port": status_port}
    )
    (prefix / "metrics.conf").write_text(
        renderer.render("condaport_nginx", "etc/nginx/conf.d/condaport-metrics.conf.j2")
    )
    conf = conf.replace(
        "lua_shared_dict condaport_auth_answers 8m;",
        f"lua_shared_dict condaport_auth_answers 8m; include {prefix}/metrics.conf;",
    )
    # Workers as root, as the other tests here: pytest's folders are root's alone.
    conf = conf.replace("worker_processes auto;", "user root root;\nworker_processes auto;")
    (prefix / "nginx.conf").write_text(conf)
    verifier = bench_auth.start_verifier(prefix)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE

    def fetch(password: str) -> int:
        request = urllib.request.Request(f"https://127.0.0.1:{port}/s0/file")
        pair = base64.b64encode(f"{bench_auth.USER}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {pair}")
        try:
            with urllib.request.urlopen(request, context=context, timeout=20) as answer:
                return answer.status
        except urllib.error.HTTPError as refused:
            return refused.code

    def checks(result: str) -> float | None:
        url = f"http://127.0.0.1:{status_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as answer:
            return value(answer.read().decode(), "condaport_auth_checks_total", result=result)

    with running(prefix, prefix / "nginx.conf"):
        try:
            assert fetch(bench_auth.PASSWORD) == 200
            assert fetch(bench_auth.PASSWORD) == 200
            assert fetch("wrong-password") == 401
        finally:
            verifier.terminate()
            verifier.wait()
        (prefix / "verifier.sock").unlink(missing_ok=True)
        assert fetch("another-wrong-one") == 503
        assert checks("allowed") == 1
        assert checks("cache_hit") == 1
        assert checks("denied") == 1
        assert checks("shed") == 1
