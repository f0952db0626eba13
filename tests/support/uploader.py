"""Upload packages with rattler-build's own upload code (py-rattler-build), as CI would.

`rattler-build upload artifactory` and `upload quetz` (and pixi's `upload`) are this code;
py-rattler-build exposes it as functions. Each upload runs in a child process whose
environment trusts only the channel's CA and holds the credentials (an auth file, or the
token in the environment, never in a process argument).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path


def run_upload(
    api: str,
    server: str,
    channel: str,
    packages: list[Path],
    *,
    ca_file: Path,
    cache_dir: Path,
    auth_file: Path | None = None,
    token: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Upload with `api` (artifactory or quetz); the token, if any, travels in the env."""
    from tests.support.client import client_env  # the child runs this file as a script

    env = client_env(auth_file, ca_file, cache_dir)
    if token is not None:
        env["CONDAPORT_UPLOAD_SECRET"] = token
    argv = [sys.executable, __file__, api, "--server", server, "--channel", channel]
    return subprocess.run(
        [*argv, *map(str, packages)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def write_token_auth_file(path: Path, host: str, kind: str, token: str) -> Path:
    """A rattler auth file holding a token (BearerToken for artifactory, CondaToken for
    quetz), keyed by host name without the port."""
    path.write_text(json.dumps({host: {kind: token}}))
    path.chmod(0o600)
    return path


def main(argv: list[str] | None = None) -> int:
    import rattler_build

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("api", choices=["artifactory", "quetz"])
    parser.add_argument("--server", required=True)
    parser.add_argument("--channel", required=True)
    parser.add_argument("packages", nargs="+")
    args = parser.parse_args(argv)
    secret = os.environ.get("CONDAPORT_UPLOAD_SECRET")
    auth_file = os.environ.get("RATTLER_AUTH_FILE")
    try:
        if args.api == "artifactory":
            rattler_build.upload_package_to_artifactory(
                args.packages, args.server, args.channel, token=secret, auth_file=auth_file
            )
        else:
            rattler_build.upload_package_to_quetz(
                args.packages, args.server, args.channel, api_key=secret, auth_file=auth_file
            )
    except Exception as exc:  # the client's own message is what CI would show
        print(f"upload failed: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"uploaded": args.packages}))
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
