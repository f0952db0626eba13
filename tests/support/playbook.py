"""Drive the project's playbooks and a podman host the way CI jobs and operators do.

Shared by the integration suites (and anything else that runs playbooks against a
Molecule host): the inventory comes from CONDAPORT_INVENTORY, which verify.yml sets.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]


def ansible_playbook_path() -> str:
    """The ansible-playbook of the Python running the tests (the project's venv), else the
    one on PATH; the calling test is skipped when there is none."""
    beside_python = Path(sys.executable).with_name("ansible-playbook")
    found = str(beside_python) if beside_python.exists() else shutil.which("ansible-playbook")
    if found is None:
        pytest.skip("ansible-playbook is not installed")
    return found


def playbook_argv(
    name: str,
    extra_vars: Mapping[str, object] | None = None,
    *,
    as_strings: bool = False,
) -> list[str]:
    """ansible-playbook's argv for playbooks/<name>.

    Extra variables go as one JSON document, or with `as_strings` one `-e key=value` each
    (lists stay JSON), as people type them: Ansible then hands those values to the play as
    strings.
    """
    argv = ["ansible-playbook", "-i", os.environ["CONDAPORT_INVENTORY"]]
    argv.append(str(PROJECT / "playbooks" / name))
    structured = dict(extra_vars or {})
    if as_strings:
        # Lists and mappings cannot be written as key=value: they stay JSON.
        for key, value in list(structured.items()):
            if not isinstance(value, (list, dict)):
                argv += ["-e", f"{key}={value}"]
                del structured[key]
    if structured:
        argv += ["-e", json.dumps(structured)]
    return argv


def _env() -> dict[str, str]:
    # Molecule exports ANSIBLE_FORCE_COLOR, which beats NOCOLOR: drop it.
    env = {k: v for k, v in os.environ.items() if k != "ANSIBLE_FORCE_COLOR"}
    return {**env, "ANSIBLE_CONFIG": str(PROJECT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}


def playbook(
    name: str,
    extra_vars: Mapping[str, object] | None = None,
    *,
    as_strings: bool = False,
    timeout: int = 600,
) -> subprocess.CompletedProcess[str]:
    """Run a playbook to the end; its output is in .stdout (see `said`)."""
    return subprocess.run(
        playbook_argv(name, extra_vars, as_strings=as_strings),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_playbook(
    name: str, extra_vars: Mapping[str, object] | None = None
) -> subprocess.Popen[str]:
    """Start a playbook in the background (parallel CI jobs); stderr joins stdout."""
    return subprocess.Popen(
        playbook_argv(name, extra_vars),
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def said(result: subprocess.CompletedProcess[str]) -> str:
    """The play's output without colours and with line folding undone, for message checks."""
    return " ".join(_ANSI.sub("", result.stdout).split())


def on_host(container: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", "exec", container, *argv], capture_output=True, text=True, check=check
    )


def copy_to_host(container: str, folder: Path, destination: str) -> None:
    """Copy a folder's files into a host folder behind every tool's back (as an operator's
    cp or rsync would), as one tar stream. The destination folder keeps its own owner and
    mode, as it would under cp: tar would otherwise give it those of the source folder."""
    subprocess.run(
        f"tar -C {folder} -cf - . | podman exec -i {container} "
        f"tar -C {destination} --no-overwrite-dir -xf -",
        shell=True,
        check=True,
    )


# The host image has no procps: find processes through /proc, as the kernel shows them.
# $1: pattern; $2: seconds to keep watching for it (0: one pass). Prints how many died.
_KILL = """end=$(( $(date +%s) + $2 ))
while :; do
  n=0
  for p in /proc/[0-9]*; do
    [ "${p#/proc/}" = "$$" ] && continue
    if tr '\\0' ' ' < "$p/cmdline" 2>/dev/null | grep -q "$1"; then
      kill -9 "${p#/proc/}" && n=$((n+1))
    fi
  done
  if [ "$n" -gt 0 ] || [ "$(date +%s)" -ge "$end" ]; then echo "$n"; exit 0; fi
  sleep 0.01
done"""


def kill_on_host(container: str, pattern: str) -> int:
    """SIGKILL every process on the host whose command line matches; returns how many."""
    out = on_host(container, "sh", "-c", _KILL, "kill", pattern, "0", check=False).stdout
    return int(out.strip() or 0)


def kill_when_seen(container: str, pattern: str, timeout: int = 600) -> subprocess.Popen[str]:
    """Watch inside the host, with no round trips, and SIGKILL the first matching process."""
    return subprocess.Popen(
        ["podman", "exec", container, "sh", "-c", _KILL, "kill", pattern, str(timeout)],
        stdout=subprocess.PIPE,
        text=True,
    )
