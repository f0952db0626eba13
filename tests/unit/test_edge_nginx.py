"""An edge's cache rules under a real NGINX (item 2 of issue 17), on loopback, no containers.

The channel vhost in edge mode and the edge's snippets are rendered from the roles
(tests/support/render.py) into a scratch prefix and loaded by Debian's NGINX as an edge
loads them; a second NGINX plays the primary (HTTPS, files from disk). Only package files
and content-addressed repodata shards may stay in the edge's cache and in clients' caches
for a year; channeldata.json, run_exports.json and the index files change with every
publish and are fetched again after the index validity. Skipped where NGINX is not
installed; molecule/edges checks edges end to end with py-rattler.
"""

from __future__ import annotations

import http.client
import os
import shutil
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.bench_auth import free_port, self_signed
from tests.support.nginx import NGINX, running
from tests.support.render import Renderer, scratch_host_paths

CACHE = "X-Condaport-Cache"
VALIDITY = 1
PACKAGE = "noarch/pkg-1.0-0.conda"
SHARD = "noarch/shards/" + "0123456789abcdef" * 4 + ".msgpack.zst"
# What changes with a publish, and what never does.
REVALIDATED = [
    "channeldata.json",
    "noarch/run_exports.json",
    "noarch/repodata.json",
    "noarch/repodata_shards.msgpack.zst",
]
IMMUTABLE = [PACKAGE, SHARD]

PRIMARY_CONF = """
user root root;
worker_processes 1;
pid {prefix}/primary.pid;
error_log {prefix}/primary-error.log;
events {{ worker_connections 64; }}
http {{
    client_body_temp_path {prefix}/tmp; proxy_temp_path {prefix}/tmp;
    fastcgi_temp_path {prefix}/tmp; uwsgi_temp_path {prefix}/tmp; scgi_temp_path {prefix}/tmp;
    access_log off;
    server {{
        listen 127.0.0.1:{port} {tls}
        root {prefix}/primary;
        location / {{ try_files $uri ${{uri}}index.html =404; }}
    }}
}}
"""

EDGE_CONF = """
user root root;
worker_processes 1;
pid {prefix}/edge.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 64; }}
http {{
    types {{ application/json json; }}
    client_body_temp_path {prefix}/tmp; proxy_temp_path {prefix}/tmp;
    fastcgi_temp_path {prefix}/tmp; uwsgi_temp_path {prefix}/tmp; scgi_temp_path {prefix}/tmp;
    include {prefix}/condaport.conf;
}}
"""


@dataclass
class Reply:
    status: int
    body: bytes
    headers: http.client.HTTPMessage


@dataclass
class Edge:
    port: int
    primary: Path

    def get(self, path: str) -> Reply:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=context, timeout=20)
        try:
            conn.request("GET", path)
            answer = conn.getresponse()
            return Reply(answer.status, answer.read(), answer.headers)
        finally:
            conn.close()

    def publish(self, path: str, body: bytes) -> None:
        """The primary's file rewritten, dated later than the copy the edge holds."""
        served = self.primary / "main" / path
        served.write_bytes(body)
        later = time.time() + 10
        os.utime(served, (later, later))


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    if not Path(NGINX).exists():
        pytest.skip("nginx is not installed")
    prefix = tmp_path_factory.mktemp("edge-nginx")
    prefix.chmod(0o755)
    for folder in ("tmp", "auth", "run", "edge", "edge-cache", "local", "primary/main/noarch"):
        (prefix / folder).mkdir(parents=True)
    (prefix / "primary/main/noarch/shards").mkdir()
    tls = self_signed(prefix)
    an_hour_ago = time.time() - 3600
    for path in REVALIDATED + IMMUTABLE + ["index.html"]:
        served = prefix / "primary/main" / path
        served.write_bytes(b"generation 1")
        os.utime(served, (an_hour_ago, an_hour_ago))

    primary_port, port = free_port(), free_port()
    inventory = {
        "condaport_auth_mode": "basic",
        # Without the metrics (and Lua): tests/unit/test_metrics_nginx.py runs with them.
        "condaport_metrics_enabled": False,
        "condaport_nginx_edge": True,
        "condaport_edge_upstream_url": f"https://localhost:{primary_port}",
        "condaport_edge_upstream_user": "edge",
        "condaport_edge_index_validity": VALIDITY,
        "condaport_nginx_https_port": port,
        "condaport_nginx_http_port": 0,
        "condaport_nginx_listen_ipv6": False,
        "condaport_channels": [{"name": "main", "anonymous": True}],
        "condaport_nginx_users": [{"name": "edge", "password": "edge-password-0815"}],
        **scratch_host_paths(prefix),
        "condaport_edge_nginx_dir": str(prefix / "edge"),
        "condaport_edge_cache_dir": str(prefix / "edge-cache"),
    }
    renderer = Renderer(["condaport", "condaport_nginx", "condaport_edge"], inventory)
    out = {
        "condaport.conf": ("condaport_nginx", "etc/nginx/conf.d/condaport.conf.j2"),
        "cache.conf": ("condaport_nginx", "etc/nginx/snippets/condaport-cache.conf.j2"),
        "auth/tokens.map": ("condaport_nginx", "etc/nginx/condaport/tokens.map.j2"),
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
    conf.write_text(EDGE_CONF.format(prefix=prefix))
    with running(prefix, conf, primary_conf):
        yield Edge(port, prefix / "primary")


def test_clients_keep_only_package_files_and_shards_for_a_year(edge: Edge) -> None:
    for path in IMMUTABLE:
        answer = edge.get(f"/main/{path}")
        assert answer.status == 200, path
        assert answer.headers["Cache-Control"] == "public, max-age=31536000, immutable", path
    for path in REVALIDATED:
        answer = edge.get(f"/main/{path}")
        assert answer.status == 200, path
        assert answer.headers["Cache-Control"] == "public, max-age=30, must-revalidate", path
    assert edge.get("/main/").headers["Cache-Control"] == "public, no-cache"


def test_the_edge_refetches_all_but_package_files_and_shards(edge: Edge) -> None:
    for path in REVALIDATED + IMMUTABLE:
        assert edge.get(f"/main/{path}").body == b"generation 1", path
        # (A shard or a package file never changes on a primary: this only shows which
        # the edge would ask for again.)
        edge.publish(path, b"generation 2")
    # NGINX counts validity in whole seconds: up to one more.
    time.sleep(VALIDITY + 1.2)
    for path in REVALIDATED:
        fresh = edge.get(f"/main/{path}")
        assert (fresh.body, fresh.headers[CACHE]) == (b"generation 2", "EXPIRED"), path
    for path in IMMUTABLE:
        kept = edge.get(f"/main/{path}")
        assert (kept.body, kept.headers[CACHE]) == (b"generation 1", "HIT"), path
