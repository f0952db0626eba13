"""Seconds of `site.yml` over SSH against one channel host: first run, then no-change runs.

Operators converge real hosts over SSH, where each task costs round trips that the podman
connection of the Molecule scenarios hides or distorts; this measures that case. It starts a
Debian 12 systemd container (`condaport-bench-converge`), installs an SSH server in it that
listens on 127.0.0.1:<free port> (published from the container's port 22) and trusts a
throwaway key pair, copies `inventories/production` to a temp folder outside the checkout
with the few edits that point it at the container (`adapt_inventory`), and runs the
checkout's `site.yml` with the checkout's ansible.cfg: once to converge, then --rounds more
times, each of which must report changed=0. Prints each run's seconds and the recap's task
counts, median/min/max of the second runs, and the slowest tasks of the last second run
(ansible.posix.profile_tasks), which show where a converge spends its time.

Usage: python -m bench.bench_converge [--rounds 5] [--top 15] [--keep]
The container and the scratch folder (inventory copy, key) are removed at the end
unless --keep is given. Asserts nothing on time.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
CONTAINER = "condaport-bench-converge"
IMAGE = "localhost/condaport-debian-systemd:12"

_RECAP = re.compile(
    rf"^{re.escape(CONTAINER)}\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)"
    r"\s+failed=(\d+)\s+skipped=(\d+)",
    re.MULTILINE,
)
# profile_tasks' summary lines: "role : task name ---------- 1.23s"
_PROFILE_LINE = re.compile(r"^(.+?) -{2,} (\d+\.\d+)s$", re.MULTILINE)


def adapt_inventory(inventory: Path, scratch: Path, port: int, key: Path) -> None:
    """Point a copy of inventories/production at the container; the only edits the bench makes.

    Kept in one place because the sample inventory changes shape from time to time: the
    host's name and connection, the vault values (plain text: a throwaway host), and the TLS
    names the private CA signs, with the CA fetched into the scratch folder, not the checkout.
    """
    (inventory / "hosts.yml").write_text(
        "---\n"
        "all:\n"
        "  children:\n"
        "    channel_hosts:\n"
        "      hosts:\n"
        f"        {CONTAINER}:\n"
        "          ansible_host: 127.0.0.1\n"
        f"          ansible_port: {port}\n"
        "          ansible_user: root\n"
        f"          ansible_ssh_private_key_file: {key}\n"
        f"          ansible_ssh_common_args: >-\n"
        f"            -o UserKnownHostsFile={scratch / 'known_hosts'}\n"
        "            -o StrictHostKeyChecking=accept-new\n"
    )
    vault_dir = inventory / "group_vars" / "channel_hosts"
    shutil.copy(vault_dir / "vault.yml.example", vault_dir / "vault.yml")
    tls = vault_dir / "tls.yml"
    tls.write_text(
        tls.read_text().replace("conda.example.org", "localhost")
        + f"condaport_tls_ca_fetch_dir: {scratch / 'ca'}\n"
    )


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "ANSIBLE_FORCE_COLOR"}
    return {
        **env,
        "ANSIBLE_CONFIG": str(PROJECT / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks",
        "PROFILE_TASKS_TASK_OUTPUT_LIMIT": "all",
        "CONTAINERS_CONF": str(PROJECT / "molecule" / "resources" / "containers.conf"),
    }


def _podman(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", *argv], capture_output=True, text=True, check=check, env=_env()
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start_container(port: int, public_key: str) -> None:
    """A systemd container with sshd on port 22, published on 127.0.0.1:<port>."""
    _podman("rm", "--force", CONTAINER, check=False)
    _podman(
        "run", "-d", "--name", CONTAINER, "--hostname", CONTAINER, "--systemd=always",
        "-p", f"127.0.0.1:{port}:22", IMAGE, "/lib/systemd/systemd",
    )  # fmt: skip
    setup = (
        # The container's network may come up a moment after systemd starts.
        "set -e; for n in 1 2 3 4 5; do apt-get update -qq && break; sleep 2; done; "
        "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server >/dev/null; "
        "install -d -m 0700 /root/.ssh; "
        'printf "%s\\n" "$BENCH_KEY" > /root/.ssh/authorized_keys; '
        "chmod 0600 /root/.ssh/authorized_keys; systemctl enable --now ssh"
    )
    _podman("exec", "-e", f"BENCH_KEY={public_key}", CONTAINER, "sh", "-c", setup)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
                if conn.recv(4).startswith(b"SSH"):
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"sshd in {CONTAINER} did not answer on 127.0.0.1:{port}")


def _playbook(inventory: Path) -> tuple[float, tuple[int, ...], str]:
    """Seconds, recap counts (ok, changed, unreachable, failed, skipped) and the output."""
    argv = ["ansible-playbook", "-i", str(inventory), str(PROJECT / "site.yml")]
    started = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, env=_env())
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"site.yml failed (rc {result.returncode}):\n{result.stdout[-6000:]}")
    found = _RECAP.search(result.stdout)
    if not found:
        raise SystemExit(f"no play recap for {CONTAINER} in:\n{result.stdout[-2000:]}")
    return elapsed, tuple(int(n) for n in found.groups()), result.stdout


def _slowest(output: str, top: int) -> list[tuple[float, str]]:
    """The profile_tasks summary at the end of the output, slowest first."""
    summary = output[output.rfind("=" * 20) :]
    tasks = [(float(s), name.strip()) for name, s in _PROFILE_LINE.findall(summary)]
    return sorted(tasks, reverse=True)[:top]


def _recap(counts: tuple[int, ...]) -> str:
    ok, changed, _, _, skipped = counts
    return f"ok={ok} changed={changed} skipped={skipped}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--keep", action="store_true", help="leave the container running")
    args = parser.parse_args(argv)
    port = _free_port()
    scratch = Path(tempfile.mkdtemp(prefix="condaport-bench-converge-"))
    key = scratch / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    try:
        _start_container(port, key.with_suffix(".pub").read_text().strip())
        inventory = scratch / "production"
        shutil.copytree(PROJECT / "inventories" / "production", inventory)
        adapt_inventory(inventory, scratch, port, key)
        seconds, counts, _ = _playbook(inventory)
        print(f"first run: {seconds:.1f} s, {_recap(counts)}")
        timings, output = [], ""
        for n in range(args.rounds):
            seconds, counts, output = _playbook(inventory)
            timings.append(seconds)
            print(f"second run, round {n + 1}: {seconds:.1f} s, {_recap(counts)}")
            if counts[1]:
                print("  NOT IDEMPOTENT: changed tasks above 0")
        print(
            f"site.yml over SSH (127.0.0.1:{port}), nothing to change, {args.rounds} "
            f"rounds: median {statistics.median(timings):.1f} s, min {min(timings):.1f} s, "
            f"max {max(timings):.1f} s"
        )
        print(f"slowest {args.top} tasks of the last second run:")
        for seconds, name in _slowest(output, args.top):
            print(f"  {seconds:6.2f} s  {name}")
    finally:
        if args.keep:
            print(f"kept {CONTAINER} and {scratch} (inventory, key)")
        else:
            _podman("rm", "--force", CONTAINER, check=False)
            shutil.rmtree(scratch)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
