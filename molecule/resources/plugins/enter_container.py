"""Runs one command inside a running rootful podman container as `podman exec` places it:
in all of the container's namespaces (cgroup included), in the container's cgroups, and
with no capability the container lacks.

The podman_nsenter connection runs this for each command of a task, instead of plain
nsenter: nsenter keeps the caller's cgroups and its full capability set, so a task (and any
binary inside the container that a task runs, which the container itself may have
replaced) could load kernel modules, mount the host's disks and so leave the container.

The order below is what makes it safe. Everything this script needs from the host (the
namespace files, the cgroup files, the capability numbers, its own code) is opened or
loaded while it still stands in the host's mount namespace. The capabilities are cut from
the bounding set before the exec, so the first code the container supplies (its dynamic
loader) already runs with the container's set: for root, an exec grants exactly the
bounding set (plus inheritable and ambient ones, which are checked or cleared). A tool
that drops capabilities after entering (setpriv, capsh) would be the container's own
binary, run with the host's full set.

Run with the controller's Python as `python -I -S enter_container.py PID CGROUP -- ARGV...`
(-S: no site packages, only the standard library, which starts in a few milliseconds).
PID is the container's main process on the host, CGROUP the container's cgroup path as
`podman inspect` reports it (.State.CgroupPath), ARGV an absolute program path and its
arguments, resolved inside the container.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

# From <sched.h> and <linux/prctl.h>; the standard library of Python 3.11 has no setns.
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWNET = 0x40000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNS = 0x00020000
PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

# Entered by the command itself, in this order: the mount namespace last, since after it
# every path resolves inside the container.
COMMAND_NAMESPACES = (
    ("cgroup", CLONE_NEWCGROUP),
    ("ipc", CLONE_NEWIPC),
    ("uts", CLONE_NEWUTS),
    ("net", CLONE_NEWNET),
    ("mnt", CLONE_NEWNS),
)

# podman's own code for "could not run the command in the container".
ENTER_FAILED = 125

libc = ctypes.CDLL(None, use_errno=True)


class EnterError(Exception):
    """The container cannot be entered as `podman exec` would; the command must not run."""


def check_libc(result: int, what: str) -> None:
    """Raise with the C library's errno when a call failed."""
    if result != 0:
        code = ctypes.get_errno()
        raise EnterError(f"{what}: {os.strerror(code)}")


def read_status_mask(status: str, field: str) -> int:
    """A capability mask (hex) of a /proc/<pid>/status text."""
    for line in status.splitlines():
        name, _, value = line.partition(":")
        if name == field:
            return int(value.strip(), 16)
    raise EnterError(f"no {field} in the process status")


def read_text(path: str, dir_fd: int | None = None) -> str:
    """A small /proc or /sys file, opened relative to dir_fd when given."""
    fd = os.open(path, os.O_RDONLY, dir_fd=dir_fd)
    try:
        return os.read(fd, 1 << 20).decode()
    finally:
        os.close(fd)


def cgroup_mounts() -> tuple[dict[frozenset[str], str], str | None]:
    """The host's cgroup v1 hierarchies (by their controllers or name=) and v2 mount point."""
    legacy: dict[frozenset[str], str] = {}
    unified = None
    for line in read_text("/proc/self/mountinfo").splitlines():
        fields = line.split()
        separator = fields.index("-")
        mount_point, fs_type, super_options = fields[4], fields[separator + 1], fields[-1]
        if fields[3] != "/":
            continue  # a bind mount of a sub-tree: the paths below would not line up
        if fs_type == "cgroup2" and unified is None:
            unified = mount_point
        elif fs_type == "cgroup":
            options = set(super_options.split(","))
            legacy.setdefault(frozenset(options - {"rw", "ro"}), mount_point)
    return legacy, unified


def cgroup_procs_paths(
    container_cgroups: str,
    container_cgroup: str,
    legacy: dict[frozenset[str], str],
    unified: str | None,
) -> list[str]:
    """The cgroup.procs paths, one per hierarchy, of the cgroup `podman exec` would use.

    That is the container's own cgroup (a systemd inside the container moves itself one
    level down, into init.scope, where commands do not belong); a hierarchy in which the
    container's main process is not below it keeps that process's cgroup. A hierarchy that
    is mounted only in some other mount namespace (another container's systemd may mount
    one the host never did) is listed by the kernel all the same: where the container sits
    at its root, as every process does until moved, there is nothing to join.
    """
    paths = []
    for line in container_cgroups.splitlines():
        hierarchy, controllers, path = line.split(":", 2)
        if hierarchy == "0" and not controllers:
            mount_point = unified
        else:
            mount_point = legacy.get(frozenset(controllers.split(",")))
        if mount_point is None:
            if path == "/":
                continue
            raise EnterError(f"the cgroup hierarchy {line!r} is not mounted on the host")
        container_root = container_cgroup.rstrip("/")
        if path == container_root or path.startswith(container_root + "/"):
            path = container_root
        paths.append(os.path.join(mount_point, path.lstrip("/"), "cgroup.procs"))
    return paths


def open_cgroup_procs(container_process: int, container_cgroup: str) -> list[int]:
    """The cgroup.procs files `podman exec` would write the command's pid into, opened."""
    legacy, unified = cgroup_mounts()
    listed = read_text("cgroup", dir_fd=container_process)
    return [
        os.open(target, os.O_WRONLY)
        for target in cgroup_procs_paths(listed, container_cgroup, legacy, unified)
    ]


def capabilities_to_drop(container_bounding: int) -> list[int]:
    """The capabilities of this process's bounding set that the container's lacks.

    Read on the host, before any namespace changes what /proc shows. The caller's
    inheritable set must already be within the container's: an exec adds it to root's.
    """
    own_inheritable = read_status_mask(read_text("/proc/self/status"), "CapInh")
    if own_inheritable & ~container_bounding:
        raise EnterError("the caller has inheritable capabilities the container lacks")
    last_capability = int(read_text("/proc/sys/kernel/cap_last_cap"))
    return [
        capability
        for capability in range(last_capability + 1)
        if not container_bounding & (1 << capability)
    ]


def run_in_container(
    namespaces: list[tuple[int, int]], cgroup_procs: list[int], dropped: list[int], argv: list[str]
) -> None:
    """In the forked child, already in the container's PID namespace: join the cgroups
    (their files are the host's), the other namespaces, cut the capabilities, exec.

    The capabilities go last: entering a namespace needs CAP_SYS_ADMIN, and until the exec
    the process runs only this file's code. The exec then grants root exactly the bounding
    set, before the first instruction the container supplies (its dynamic loader) runs.
    """
    try:
        for procs in cgroup_procs:
            try:
                os.write(procs, b"0")  # 0: the writing process
            except OSError as error:
                raise EnterError(f"joining the container's cgroup: {error}") from error
        for fd, kind in namespaces:
            check_libc(libc.setns(fd, kind), "setns")
        for capability in dropped:
            check_libc(libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0), "PR_CAPBSET_DROP")
        check_libc(libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "ambient")
        os.execv(argv[0], argv)
    except (EnterError, OSError) as error:
        os.write(2, f"enter_container: {error}\n".encode())
    os._exit(ENTER_FAILED)


def main(arguments: list[str]) -> int:
    """Enter, run the command, hand back its exit status (128 + N for signal N)."""
    if len(arguments) < 4 or arguments[2] != "--" or not arguments[3].startswith("/"):
        os.write(2, b"usage: enter_container.py PID CGROUP -- /ABSOLUTE/PROGRAM [ARG...]\n")
        return 2
    pid, container_cgroup, argv = int(arguments[0]), arguments[1], arguments[3:]
    try:
        # The directory pins the process: if the PID were reused, these opens would fail
        # or still name the same (dead) process, never a newcomer.
        container_process = os.open(f"/proc/{pid}", os.O_RDONLY | os.O_DIRECTORY)
        own_user_namespace = os.stat("/proc/self/ns/user").st_ino
        if os.stat("ns/user", dir_fd=container_process).st_ino != own_user_namespace:
            raise EnterError("the container has its own user namespace (only rootful podman)")
        dropped = capabilities_to_drop(
            read_status_mask(read_text("status", dir_fd=container_process), "CapBnd")
        )
        namespaces = [
            (os.open(f"ns/{name}", os.O_RDONLY, dir_fd=container_process), kind)
            for name, kind in COMMAND_NAMESPACES
        ]
        cgroup_procs = open_cgroup_procs(container_process, container_cgroup)
        pid_namespace = os.open("ns/pid", os.O_RDONLY, dir_fd=container_process)
        # Only this process's children join a PID namespace: the command is one.
        check_libc(libc.setns(pid_namespace, CLONE_NEWPID), "setns pid")
    except (EnterError, OSError) as error:
        os.write(2, f"enter_container: {error}\n".encode())
        return ENTER_FAILED

    child = os.fork()
    if child == 0:
        run_in_container(namespaces, cgroup_procs, dropped, argv)

    # Ansible stops a command that times out by signalling this process; pass it on, as
    # the child is invisible from here to anyone else.
    for forwarded in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(forwarded, lambda number, _frame: os.kill(child, number))
    _, status = os.waitpid(child, 0)
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
