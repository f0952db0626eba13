"""Ansible connection for the Molecule scenarios: a task reaches a local podman container
through nsenter instead of `podman exec`.

Ansible runs four or five commands per task on the host. Through `podman exec` each costs a
podman process, conmon and runc (about a third of a second of CPU on the CI machine), and
the scenarios run thousands of tasks; nsenter joins the container's namespaces in a few
milliseconds. The container is looked up by name (the inventory name, as Molecule creates
it) once per connection, so a container restarted by a test is found at its new PID. The
commands see the environment `podman exec` gives them, not the controller's.
"""

from __future__ import annotations

import json
import subprocess

from ansible.errors import AnsibleConnectionFailure
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
"""

# What `podman exec` sets in the scenario images (their image sets no variables).
CONTAINER_ENVIRONMENT = (
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME=/root",
    "TERM=xterm",
    "container=podman",
)


class Connection(NsenterConnection):
    transport = "podman_nsenter"

    def _connect(self) -> Connection:
        if not self._connected:
            name = self._play_context.remote_addr
            found = subprocess.run(
                [self.get_option("podman_executable"), "container", "inspect", name],
                capture_output=True,
                text=True,
                check=False,
            )
            pid = json.loads(found.stdout or "[{}]")[0].get("State", {}).get("Pid", 0)
            if found.returncode != 0 or not pid:
                raise AnsibleConnectionFailure(
                    f"container {name!r} is not running: {found.stderr.strip()}"
                )
            self._nsenter_pid = pid
            self._play_context.remote_user = "root"
            self._connected = True
        return self

    def exec_command(self, cmd, in_data=None, sudoable=True):
        clean = ["env", "-i", *CONTAINER_ENVIRONMENT]
        if isinstance(cmd, str):
            cmd = " ".join([*clean, cmd])
        else:
            cmd = [*clean, *cmd]
        # The base class connects (self._connect) before nsenter's own code runs.
        return super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
