"""Install packages from a condaport channel with py-rattler, the way a user's client would.

Credentials come from a rattler auth file (RATTLER_AUTH_FILE) and trust in the channel's CA
from SSL_CERT_FILE, both set by `run_install` for the child process only; the password is
never part of a URL, so it cannot leak into `conda-meta/*.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

# Variables on this machine that would override the CA we mean to test.
_CA_OVERRIDES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_DIR")


def write_auth_file(path: Path, channel_url: str, user: str, password: str) -> Path:
    """Write a rattler auth file for the channel's host (rattler keys it by host, no port)."""
    host = urlsplit(channel_url).hostname or ""
    entry = {host: {"BasicHTTP": {"username": user, "password": password}}}
    path.write_text(json.dumps(entry))
    path.chmod(0o600)
    return path


def client_env(auth_file: Path | None, ca_file: Path | None, cache_dir: Path) -> dict[str, str]:
    """Environment for a client process that trusts only `ca_file` (or the system store)."""
    env = {k: v for k, v in os.environ.items() if k not in _CA_OVERRIDES}
    env.pop("RATTLER_AUTH_FILE", None)
    env["RATTLER_CACHE_DIR"] = str(cache_dir)
    if auth_file is not None:
        env["RATTLER_AUTH_FILE"] = str(auth_file)
    if ca_file is not None:
        env["SSL_CERT_FILE"] = str(ca_file)
    return env


def run_install(
    channel_url: str,
    specs: list[str],
    prefix: Path,
    *,
    auth_file: Path | None,
    ca_file: Path | None,
    cache_dir: Path,
) -> subprocess.CompletedProcess[str]:
    """Run this module's `install` command in a child process with a clean client env."""
    argv = [sys.executable, __file__, "install", "--channel", channel_url, "--prefix", str(prefix)]
    return subprocess.run(
        [*argv, *specs],
        env=client_env(auth_file, ca_file, cache_dir),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def pixi_mirrors(config_file: Path) -> dict[str, list[str]]:
    """The `[mirrors]` table of a pixi config file, read the way pixi reads it (TOML)."""
    mirrors = tomllib.loads(config_file.read_text()).get("mirrors", {})
    return {upstream: list(urls) for upstream, urls in mirrors.items()}


def _client(pixi_config: Path | None):
    """The authenticated client; with a pixi config, its mirrors applied before the auth,
    as pixi does, so the mirror's host gets the mirror host's credentials."""
    import rattler
    from rattler.networking import AuthenticationMiddleware, MirrorMiddleware

    if pixi_config is None:
        # The default gateway sends no credentials; the authenticated client reads
        # RATTLER_AUTH_FILE (or ~/.rattler/credentials.json, ~/.netrc), as pixi does.
        return rattler.Client.authenticated_client()
    return rattler.Client([MirrorMiddleware(pixi_mirrors(pixi_config)), AuthenticationMiddleware()])


async def _install(
    channel_url: str, specs: list[str], prefix: Path, pixi_config: Path | None = None
) -> list[str]:
    import rattler

    client = _client(pixi_config)
    # The gateway keeps repodata in ~/.cache/rattler unless told otherwise, and honours its
    # max-age there: a test must not read a channel through another test's cache.
    cache = os.environ.get("RATTLER_CACHE_DIR")
    gateway = rattler.Gateway(cache_dir=Path(cache) / "repodata" if cache else None, client=client)
    records = await rattler.solve(
        sources=[rattler.Channel(channel_url)],
        specs=specs,
        gateway=gateway,
        platforms=[rattler.Platform.current(), rattler.Platform("noarch")],
    )
    await rattler.install(records, target_prefix=prefix, show_progress=False, client=client)
    return [f"{r.name.normalized}-{r.version}-{r.build}" for r in records]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    install = sub.add_parser("install", help="solve and install specs into a new prefix")
    install.add_argument("--channel", required=True, help="channel URL, without credentials")
    install.add_argument("--prefix", required=True, type=Path)
    install.add_argument(
        "--pixi-config", type=Path, help="fetch through the [mirrors] of this pixi config file"
    )
    install.add_argument("specs", nargs="+")
    args = parser.parse_args(argv)
    try:
        installed = asyncio.run(_install(args.channel, args.specs, args.prefix, args.pixi_config))
    except Exception as exc:  # the client's own error text is what a user would read
        print(f"install from {args.channel} failed: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"installed": installed, "prefix": str(args.prefix)}))
    return 0


if __name__ == "__main__":
    # Leave without interpreter teardown, where py-rattler's runtime can crash after the
    # work is done (as the host tools do).
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
