"""Ansible connection for the Molecule scenarios: a task reaches a local podman container
by entering its namespaces instead of through `podman exec`.

Ansible runs four or five commands per task on the host. Through `podman exec` each costs a
podman process, conmon and runc (about a third of a second of CPU on the CI machine), and
the scenarios run thousands of tasks; entering the namespaces directly takes milliseconds.
Plain nsenter is not enough: it leaves the command in the controller's cgroups and with all
of root's capabilities, so a task (or a binary the container replaced, which a task runs)
could load kernel modules or mount the host's disks. enter_container.py, next to this
folder, enters as `podman exec` does: every namespace, the container's cgroups, and no
capability beyond the container's bounding set (the Python standard library only, started
with -S, in a few milliseconds).

The container is looked up by name (the inventory name, as Molecule creates it) once per
connection, so a container restarted by a test is found at its new PID. The commands see
the environment `podman exec` gives them, not the controller's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ansible.errors import AnsibleConnectionFailure
from ansible.utils.display import Display
from ansible_collections.community.docker.plugins.connection.nsenter import (
    Connection as NsenterConnection,
)

DOCUMENTATION = r"""
name: podman_nsenter
short_description: run tasks in a local podman container through nsenter
description:
  - Enters the namespaces of a running local podman container, found by name, with nsenter.
  - Test infrastructure of the condaport Molecule scenarios (root on the controller).
author: condaport developers
options:
  podman_executable:
    description: The podman command that finds the container.
    type: str
    default: podman
    vars:
      - name: ansible_podman_executable
  pipelining:
    description:
      - Runs a module in one command (its code on the standard input) rather than five.
      - On by default, unlike Ansible's own: each command pays for entering the container.
    type: bool
    default: true
    env:
      - name: ANSIBLE_PIPELINING
    vars:
      - name: ansible_pipelining
"""

# What `podman exec` sets in the scenario images (their image sets no variables).
CONTAINER_ENVIRONMENT = (
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME=/root",
    "TERM=xterm",
    "container=podman",
)

ENTER_CONTAINER = Path(__file__).resolve().parent.parent / "enter_container.py"

display = Display()


class Connection(NsenterConnection):
    transport = "podman_nsenter"
    # Entering costs a Python start and cgroup moves (tens of milliseconds each command).
    has_pipelining = True

    def _connect(self) -> Connection:
        if not self._connected:
            name = self._play_context.remote_addr
            found = subprocess.run(
                [self.get_option("podman_executable"), "container", "inspect", name],
                capture_output=True,
                text=True,
                check=False,
            )
            state = json.loads(found.stdout or "[{}]")[0].get("State", {})
            pid, cgroup = state.get("Pid", 0), state.get("CgroupPath", "")
            if found.returncode != 0 or not pid or not cgroup:
                raise AnsibleConnectionFailure(
                    f"container {name!r} is not running: {found.stderr.strip()}"
                )
            self._nsenter_pid = pid
            self._container_cgroup = cgroup
            self._play_context.remote_user = "root"
            self._connected = True
        return self

    def exec_command(self, cmd, in_data=None, sudoable=True):
        """Run cmd (a shell command line, or an argument list) in the container.

        The command line goes to the container's /bin/sh, as it went to the host's with
        nsenter; becoming another user needs no password prompt in the scenarios (root
        becomes any account with sudo -n), so no terminal is set up for one.
        """
        self._connect()
        if sudoable and self.become and self.become.expect_prompt():
            raise AnsibleConnectionFailure("podman_nsenter answers no become password prompt")
        argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str | bytes) else list(cmd)
        enter = [
            sys.executable,
            "-I",
            "-S",
            str(ENTER_CONTAINER),
            str(self._nsenter_pid),
            self._container_cgroup,
            "--",
            "/usr/bin/env",
            "-i",
            *CONTAINER_ENVIRONMENT,
            *argv,
        ]
        display.vvv(f"EXEC {argv}", host=self._play_context.remote_addr)
        entered = subprocess.run(enter, input=in_data or b"", capture_output=True, check=False)
        return entered.returncode, entered.stdout, entered.stderr
