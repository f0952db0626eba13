"""The controller's side of molecule/operations, as commands its playbooks run.

`publish` uploads a package to the primary (the previous release's, in prepare.yml) and
records what it then serves; `loop-start` starts a py-rattler client that installs from a
channel again and again in the background, counting installs and failures, until
`loop-stop`. Secrets come from the environment, never from arguments:
CONDAPORT_OPS_UPLOAD_TOKEN, CONDAPORT_OPS_READER_PASSWORD.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

from tests.support.client import run_install, write_auth_file
from tests.support.pkgbuild import build_conda

PACKAGE = "ops-upgrade"
SPEC = f"{PACKAGE}==1.0"


def https(
    method: str, url: str, ca_file: Path, headers: dict[str, str] | None = None, body=None
) -> tuple[int, bytes]:
    """One request trusting only `ca_file` (never this machine's CA variables)."""
    parts = urllib.parse.urlsplit(url)
    context = ssl.create_default_context(cafile=str(ca_file))
    conn = http.client.HTTPSConnection(parts.hostname, parts.port, context=context, timeout=120)
    try:
        conn.request(method, parts.path, body=body, headers=headers or {})
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def upload(primary: str, ca_file: Path, package: Path, token: str) -> int:
    status, _ = https(
        "PUT",
        f"{primary}/main/noarch/{package.name}",
        ca_file,
        {"Authorization": f"Bearer {token}"},
        package.read_bytes(),
    )
    return status


def install_once(channel: str, ca_file: Path, password: str, scratch: Path) -> tuple[bool, str]:
    """One install of SPEC into a new prefix with a new cache, as reader."""
    scratch.mkdir(parents=True)
    auth = write_auth_file(scratch / "auth.json", channel, "reader", password)
    result = run_install(
        channel,
        [SPEC],
        scratch / "env",
        auth_file=auth,
        ca_file=ca_file,
        cache_dir=scratch / "cache",
    )
    return result.returncode == 0, (result.stderr or result.stdout)[-500:]


def _publish(args: argparse.Namespace) -> int:
    token = os.environ["CONDAPORT_OPS_UPLOAD_TOKEN"]
    password = os.environ["CONDAPORT_OPS_READER_PASSWORD"]
    with tempfile.TemporaryDirectory() as scratch:
        package = build_conda(Path(scratch), PACKAGE)
        status = upload(args.primary, args.ca, package, token)
        if status != 201:
            print(f"upload answered {status}", file=sys.stderr)
            return 1
        digest = hashlib.sha256(package.read_bytes()).hexdigest()
    args.record.mkdir(parents=True, exist_ok=True)
    status, repodata = https(
        "GET", f"{args.primary}/main/noarch/repodata.json", args.ca, basic("reader", password)
    )
    if status != 200 or package.name not in json.loads(repodata)["packages.conda"]:
        print(f"the primary does not list {package.name} ({status})", file=sys.stderr)
        return 1
    (args.record / "repodata.json").write_bytes(repodata)
    (args.record / "package.json").write_text(json.dumps({"file": package.name, "sha256": digest}))
    return 0


def _loop(args: argparse.Namespace) -> int:
    """The background client: install until the stop file appears, then write the counts."""
    password = os.environ["CONDAPORT_OPS_READER_PASSWORD"]
    counts: dict[str, object] = {"installs": 0, "failed": 0, "failures": []}
    number = 0
    while not (args.work / "stop").exists():
        number += 1
        ok, message = install_once(args.channel, args.ca, password, args.work / f"run-{number}")
        shutil.rmtree(args.work / f"run-{number}", ignore_errors=True)
        if ok:
            counts["installs"] = int(counts["installs"]) + 1  # type: ignore[call-overload]
        else:
            counts["failed"] = int(counts["failed"]) + 1  # type: ignore[call-overload]
            counts["failures"].append(message)  # type: ignore[union-attr]
    (args.work / "counts.json").write_text(json.dumps(counts))
    return 0


def _loop_start(args: argparse.Namespace) -> int:
    args.work.mkdir(parents=True, exist_ok=True)
    for stale in ("stop", "counts.json"):
        (args.work / stale).unlink(missing_ok=True)
    argv = [sys.executable, "-m", "tests.integration.operations.ops", "loop"]
    argv += ["--channel", args.channel, "--ca", str(args.ca), "--work", str(args.work)]
    with (args.work / "loop.log").open("ab") as log:
        child = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
    (args.work / "pid").write_text(str(child.pid))
    return 0


def _loop_stop(args: argparse.Namespace) -> int:
    (args.work / "stop").touch()
    deadline = time.monotonic() + 300
    while not (args.work / "counts.json").exists():
        if time.monotonic() > deadline:
            os.kill(int((args.work / "pid").read_text()), signal.SIGKILL)
            print("the client loop did not stop", file=sys.stderr)
            return 1
        time.sleep(0.5)
    counts = json.loads((args.work / "counts.json").read_text())
    upgrades = args.work.parent / "upgrade-counts"
    upgrades.mkdir(exist_ok=True)
    (upgrades / f"{time.time_ns()}.json").write_text(json.dumps(counts))
    print(f"installs through the balancer: {counts['installs']}, failed: {counts['failed']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    publish = sub.add_parser("publish")
    publish.add_argument("--primary", required=True)
    publish.add_argument("--ca", required=True, type=Path)
    publish.add_argument("--record", required=True, type=Path)
    for name in ("loop", "loop-start"):
        loop = sub.add_parser(name)
        loop.add_argument("--channel", required=True)
        loop.add_argument("--ca", required=True, type=Path)
        loop.add_argument("--work", required=True, type=Path)
    stop = sub.add_parser("loop-stop")
    stop.add_argument("--work", required=True, type=Path)
    args = parser.parse_args(argv)
    actions = {
        "publish": _publish,
        "loop": _loop,
        "loop-start": _loop_start,
        "loop-stop": _loop_stop,
    }
    return actions[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
