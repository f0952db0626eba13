"""What NGINX reading upload bodies whole costs: one large package through the real upload
location, with request buffering (what the role renders) and streamed (as before).

Renders the channel vhost and the upload location from the roles (auth_basic mode, one
channel, an upload token) twice into a scratch folder: once as rendered, once with
`proxy_request_buffering off` (the body streamed to the service as it arrives, the
previous configuration). Both NGINX instances (Debian's nginx binary, on loopback with a
self-signed certificate, no container) pass uploads to one `condaport-upload` process.
Each round sends the package through each of them, in alternating order, with a
Content-Length body streamed from disk, then a chunked body through the buffering one (as
rattler's clients send: the service only ever sees a Content-Length), and deletes it
again. Prints each round's times and the buffered/streamed ratio of each round (the ratio
within a round is what to read on a machine whose speed drifts). Asserts nothing.

Usage: python -m bench.bench_upload_nginx [--size-mib 512] [--rounds 3] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.bench_auth import free_port, self_signed
from condaport import index
from tests.support.pkgbuild import build_large_conda
from tests.support.render import Renderer, scratch_host_paths

MIB = 1 << 20
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
TOKEN = "bench-upload-token-0123456789abcdef"
TEMPLATES = {
    "condaport.conf": "etc/nginx/conf.d/condaport.conf.j2",
    "upload-http.conf": "etc/nginx/conf.d/condaport-upload.conf.j2",
    "upload-server.conf": "etc/nginx/snippets/condaport-upload.conf.j2",
    "auth/tokens.map": "etc/nginx/condaport/tokens.map.j2",
    "auth/upload-tokens.map": "etc/nginx/condaport/upload-tokens.map.j2",
}
# Workers as root: the scratch folder is root's. The vhost's own temp paths are set.
MAIN_CONF = """
user root root;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log;
events {{ worker_connections 64; }}
http {{
    types {{ application/json json; }}
    sendfile on;
    client_body_temp_path {prefix}/tmp; proxy_temp_path {prefix}/tmp;
    fastcgi_temp_path {prefix}/tmp; uwsgi_temp_path {prefix}/tmp; scgi_temp_path {prefix}/tmp;
    include {prefix}/upload-http.conf;
    include {prefix}/condaport.conf;
}}
"""


def render_nginx(prefix: Path, root: Path, socket_path: Path, buffered: bool) -> int:
    """One NGINX prefix with the role's configuration; returns its HTTPS port."""
    for folder in ("tmp", "auth", "run"):
        (prefix / folder).mkdir(parents=True)
    self_signed(prefix)
    port = free_port()
    inventory = {
        "condaport_auth_mode": "basic",
        "condaport_nginx_https_port": port,
        "condaport_nginx_http_port": 0,
        "condaport_nginx_listen_ipv6": False,
        "condaport_channels": [{"name": "main", "users": ["reader"]}],
        "condaport_nginx_users": [{"name": "reader", "password": "bench-reader-password"}],
        "condaport_upload_tokens": [
            {"name": "bench", "token": TOKEN, "channels": ["main"], "overwrite": True}
        ],
        "condaport_upload_max_size": 8 << 30,
        **scratch_host_paths(prefix),
        "condaport_channels_root": str(root / "channels"),
        "condaport_upload_socket": str(socket_path),
    }
    renderer = Renderer(["condaport", "condaport_nginx"], inventory)
    for name, template in TEMPLATES.items():
        text = renderer.render("condaport_nginx", template)
        if name == "upload-server.conf" and not buffered:
            assert "proxy_request_buffering on;" in text
            text = text.replace("proxy_request_buffering on;", "proxy_request_buffering off;")
        (prefix / name).write_text(text)
    (prefix / "auth/generation.conf").write_text('return 200 "bench\\n";\n')
    (prefix / "nginx.conf").write_text(MAIN_CONF.format(prefix=prefix))
    subprocess.run([NGINX, "-p", str(prefix), "-c", str(prefix / "nginx.conf")], check=True)
    return port


def send(port: int, method: str, path: str, package: Path | None, chunked: bool) -> tuple:
    """(status, answer, seconds until the answer)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=3600)
    started = time.perf_counter()
    connection.putrequest(method, path)
    connection.putheader("Authorization", f"Bearer {TOKEN}")
    if package is None:
        connection.putheader("Content-Length", "0")
        connection.endheaders()
    else:
        size = package.stat().st_size
        connection.putheader(
            *(("Transfer-Encoding", "chunked") if chunked else ("Content-Length", str(size)))
        )
        connection.endheaders()
        with package.open("rb") as body:
            for block in iter(lambda: body.read(MIB), b""):
                connection.send(b"%x\r\n%s\r\n" % (len(block), block) if chunked else block)
        if chunked:
            connection.send(b"0\r\n\r\n")
    response = connection.getresponse()
    answer = json.loads(response.read() or b"{}")
    connection.close()
    return response.status, answer, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, help="scratch folder (needs ~4x the size free)")
    args = parser.parse_args(argv)
    if not Path(NGINX).exists():
        print("nginx is not installed")
        return 1
    with tempfile.TemporaryDirectory(dir=args.workdir) as scratch:
        root = Path(scratch)
        root.chmod(0o755)
        channels, state = root / "channels", root / "state"
        (channels / "main" / "noarch").mkdir(parents=True)
        (root / "staging").mkdir()
        package = build_large_conda(root / "dist", args.size_mib * MIB)
        size = package.stat().st_size
        config, settings = root / "condaport.json", root / "upload.json"
        config.write_text(
            json.dumps(
                {
                    "channels_root": str(channels),
                    "staging_root": str(root / "staging"),
                    "state_dir": str(state),
                    "channels": [{"name": "main", "subdirs": ["noarch"]}],
                }
            )
        )
        settings.write_text(
            json.dumps(
                {"max_size": 8 << 30, "channels": {"main": {"token:bench": {"overwrite": True}}}}
            )
        )
        index.run(channels, state, None)
        socket_path = root / "upload.sock"
        service = subprocess.Popen(
            [sys.executable, "-m", "condaport.upload", "--config", str(config)]
            + ["--settings", str(settings), "--socket", str(socket_path), "--workers", "2"],
            stderr=subprocess.DEVNULL,
        )
        ports = {
            "buffered": render_nginx(root / "nginx-buffered", root, socket_path, True),
            "streamed": render_nginx(root / "nginx-streamed", root, socket_path, False),
        }
        path = f"/main/noarch/{package.name}"
        timings: dict[str, list[float]] = {"buffered": [], "streamed": [], "chunked": []}
        try:
            time.sleep(0.5)
            for n in range(args.rounds):
                order = ["buffered", "streamed"] if n % 2 == 0 else ["streamed", "buffered"]
                runs = [(kind, ports[kind], False) for kind in order]
                runs.append(("chunked", ports["buffered"], True))
                for kind, port, chunked in runs:
                    status, answer, seconds = send(port, "PUT", path, package, chunked)
                    assert status == 201, (kind, status, answer)
                    timings[kind].append(seconds)
                    status, answer, _ = send(port, "DELETE", path, None, False)
                    assert status == 200, (kind, status, answer)
                print(
                    f"round {n + 1}: streamed {timings['streamed'][-1]:.2f} s,"
                    f" buffered {timings['buffered'][-1]:.2f} s,"
                    f" chunked client (buffered) {timings['chunked'][-1]:.2f} s;"
                    f" buffered/streamed {timings['buffered'][-1] / timings['streamed'][-1]:.2f}"
                )
        finally:
            for kind in ports:
                prefix = root / f"nginx-{kind}"
                stop = [NGINX, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-s", "stop"]
                subprocess.run(stop, check=False, capture_output=True)
            service.terminate()
            service.wait(timeout=30)
        ratios = [b / s for b, s in zip(timings["buffered"], timings["streamed"], strict=True)]
        print(
            f"{size / MIB:.0f} MiB over HTTPS (loopback), upload to answer (validated, placed,"
            f" indexed): streamed median {statistics.median(timings['streamed']):.2f} s,"
            f" buffered median {statistics.median(timings['buffered']):.2f} s;"
            f" buffered/streamed per round {', '.join(f'{r:.2f}' for r in ratios)}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
