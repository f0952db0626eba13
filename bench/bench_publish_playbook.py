"""End-to-end time of `playbooks/publish.yml` for one small package, as a CI job runs it.

Creates its own channel host: a podman container (`condaport-bench-publish`, HTTPS on
127.0.0.1:38443) converged by site.yml, reached through Ansible's podman connection
(containers.podman.podman). Then, for each round, builds one fresh .conda offline and times
`ansible-playbook playbooks/publish.yml -e condaport_publish_source_dir=...` from start to
exit, and reads the number of tasks from the play recap. A last run publishes the same
folder again (nothing to do: the idempotent case). The container is removed at the end
unless --keep is given. Prints numbers; asserts nothing on time.

Usage: python -m bench.bench_publish_playbook [--rounds 5] [--keep]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.pkgbuild import build_conda

PROJECT = Path(__file__).resolve().parents[1]
CONTAINER = "condaport-bench-publish"
HTTPS_PORT = 38443
IMAGE = "localhost/condaport-debian-systemd:12"

INVENTORY = f"""---
all:
  children:
    channel_hosts:
      hosts:
        {CONTAINER}:
          ansible_connection: containers.podman.podman
          ansible_python_interpreter: /usr/bin/python3
      vars:
        condaport_nginx_https_port: {HTTPS_PORT}
        condaport_nginx_http_port: 0
        condaport_tls_server_names: [localhost]
        condaport_tls_server_ips: [127.0.0.1]
        condaport_channels:
          - name: main
            subdirs: [noarch, linux-64]
        condaport_nginx_users:
          - name: bench
            password: bench-only-password
"""

_RECAP = re.compile(rf"^{re.escape(CONTAINER)}\s*:\s*ok=(\d+)\s+changed=(\d+)", re.MULTILINE)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "ANSIBLE_FORCE_COLOR"}
    return {
        **env,
        "ANSIBLE_CONFIG": str(PROJECT / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "CONTAINERS_CONF": str(PROJECT / "molecule" / "resources" / "containers.conf"),
    }


def _podman(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", *argv], capture_output=True, text=True, check=check, env=_env()
    )


def _playbook(inventory: Path, name: str, *extra: str) -> tuple[float, int, int, str]:
    """Seconds, recap ok=, recap changed= and the output of one ansible-playbook run."""
    argv = ["ansible-playbook", "-i", str(inventory), str(PROJECT / name), *extra]
    started = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, env=_env())
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{name} failed (rc {result.returncode}):\n{result.stdout[-4000:]}")
    found = _RECAP.search(result.stdout)
    if not found:
        raise SystemExit(f"no play recap for {CONTAINER} in:\n{result.stdout[-2000:]}")
    return elapsed, int(found.group(1)), int(found.group(2)), result.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="leave the container running")
    args = parser.parse_args(argv)
    _podman("rm", "--force", CONTAINER, check=False)
    _podman(
        "run", "-d", "--name", CONTAINER, "--hostname", CONTAINER, "--systemd=always",
        "-p", f"127.0.0.1:{HTTPS_PORT}:{HTTPS_PORT}", IMAGE, "/lib/systemd/systemd",
    )  # fmt: skip
    try:
        with tempfile.TemporaryDirectory() as scratch:
            root = Path(scratch)
            inventory = root / "hosts.yml"
            inventory.write_text(INVENTORY)
            seconds, ok, changed, _ = _playbook(
                inventory, "site.yml", "-e", f"condaport_tls_ca_fetch_dir={root / 'ca'}"
            )
            print(f"converged {CONTAINER} with site.yml in {seconds:.0f} s (ok={ok})")
            timings, tasks = [], set()
            folder = root / "dist-0"
            run = os.urandom(3).hex()
            for n in range(args.rounds):
                folder = root / f"dist-{n}"
                build_conda(folder, f"bench-{run}-{n}", version="1.0")
                source = f"condaport_publish_source_dir={folder}"
                seconds, ok, changed, _ = _playbook(
                    inventory, "playbooks/publish.yml", "-e", source
                )
                timings.append(seconds)
                tasks.add((ok, changed))
                print(f"  round {n + 1}: {seconds:.2f} s, recap ok={ok} changed={changed}")
            again, ok_again, changed_again, _ = _playbook(
                inventory, "playbooks/publish.yml", "-e", f"condaport_publish_source_dir={folder}"
            )
            print(
                "playbooks/publish.yml, one new .conda per run, connection "
                "containers.podman.podman to a local container (podman exec per task), "
                f"{args.rounds} rounds: p50 {statistics.median(timings):.2f} s, "
                f"min {min(timings):.2f} s, max {max(timings):.2f} s; tasks run "
                "(the recap's ok=, which counts the changed ones too): "
                + ", ".join(f"{ok} ({changed} changed)" for ok, changed in sorted(tasks))
            )
            print(
                f"same folder again (nothing new): {again:.2f} s, "
                f"recap ok={ok_again} changed={changed_again}"
            )
    finally:
        if not args.keep:
            _podman("rm", "--force", CONTAINER, check=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
