"""molecule/resources/plugins/enter_container.py, the Molecule connection's way into a
container, against a throwaway "container" made with unshare (no image needed): its own
namespaces, its own cgroup and a cut-down capability set, as podman gives one. A command
run through the helper must end up with exactly that, not with the caller's full set."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[2]
HELPER = REPOSITORY / "molecule/resources/plugins/enter_container.py"
# Fewer than podman's default set, so that a leak of any other capability shows.
CONTAINER_CAPABILITIES = "-all,+chown,+dac_override,+kill,+setgid,+setuid"


def unified_cgroup_mount() -> Path:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[fields.index("-") + 1] == "cgroup2" and fields[3] == "/":
            return Path(fields[4])
    pytest.fail("no cgroup2 hierarchy mounted")


def capability_lines(status: str) -> list[str]:
    return [line for line in status.splitlines() if line.startswith("Cap")]


@pytest.fixture
def container() -> Iterator[tuple[int, str]]:
    """(host PID of the container's main process, its cgroup path in the v2 hierarchy)."""
    cgroup_path = f"/condaport-enter-test-{uuid.uuid4().hex[:12]}"
    cgroup = unified_cgroup_mount() / cgroup_path.lstrip("/")
    cgroup.mkdir()
    outer = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--mount-proc", "--uts", "--ipc", "--net", "--cgroup",
         "--", "setpriv", f"--bounding-set={CONTAINER_CAPABILITIES}", "--inh-caps=-all",
         "sleep", "600"]
    )  # fmt: skip
    try:
        children = Path(f"/proc/{outer.pid}/task/{outer.pid}/children")
        for _ in range(200):
            if children.read_text().split():
                break
            time.sleep(0.01)
        main = int(children.read_text().split()[0])
        for _ in range(200):  # until setpriv has executed sleep, with the cut-down set
            if "sleep" in Path(f"/proc/{main}/cmdline").read_text():
                break
            time.sleep(0.01)
        (cgroup / "cgroup.procs").write_text(str(main))
        yield main, cgroup_path
    finally:
        outer.kill()
        outer.wait()
        for _ in range(200):
            try:
                cgroup.rmdir()
                break
            except OSError:  # busy until the killed sleep is gone
                time.sleep(0.01)


def enter(pid: int, cgroup_path: str, script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-I", "-S", str(HELPER), str(pid), cgroup_path, "--",
         "/bin/sh", "-c", script],
        capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip


def test_a_command_gets_the_containers_capabilities_cgroups_and_namespaces(container) -> None:
    pid, cgroup_path = container
    script = (
        "cat /proc/self/status; echo ===; cat /proc/self/cgroup; echo ===; "
        "cat /proc/1/cgroup; echo ===; tr '\\0' ' ' < /proc/1/cmdline"
    )
    ran = enter(pid, cgroup_path, script)
    assert ran.returncode == 0, ran.stderr
    status, cgroups, main_cgroups, first_process = ran.stdout.split("===\n")
    wanted = capability_lines(Path(f"/proc/{pid}/status").read_text())
    assert capability_lines(status) == wanted
    assert "CapBnd:\t00000000000000e3" in wanted  # the set above: sanity of the fixture
    # In the main process's cgroups (the test's own, but for the one made for it), as seen
    # from inside its cgroup namespace.
    assert cgroups == main_cgroups
    assert cgroups.splitlines()[-1].endswith(cgroup_path)
    assert first_process.startswith("sleep 600")


def test_exit_status_and_a_missing_container(container) -> None:
    pid, cgroup_path = container
    assert enter(pid, cgroup_path, "exit 7").returncode == 7
    assert enter(pid, cgroup_path, "kill -9 $$").returncode == 128 + 9
    gone = enter(2**22 + 1, cgroup_path, "true")
    assert gone.returncode == 125
    assert "enter_container:" in gone.stderr


def load_helper():
    spec = importlib.util.spec_from_file_location("enter_container", HELPER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_hierarchy_mounted_elsewhere_is_joined_only_where_the_container_left_its_root() -> None:
    """The kernel lists every hierarchy mounted in any namespace; one the host never mounted
    (another container's systemd mounted perf_event) holds the container at its root, like
    every process: nothing to join. Moved below its root there, the task could not follow."""
    helper = load_helper()
    legacy = {frozenset({"memory"}): "/sys/fs/cgroup/memory"}
    listed = "13:perf_event:/\n4:memory:/machine/c1/init.scope\n0::/machine/c1/init.scope\n"
    paths = helper.cgroup_procs_paths(listed, "/machine/c1", legacy, "/sys/fs/cgroup/unified")
    assert paths == [
        "/sys/fs/cgroup/memory/machine/c1/cgroup.procs",
        "/sys/fs/cgroup/unified/machine/c1/cgroup.procs",
    ]
    with pytest.raises(helper.EnterError, match="perf_event"):
        helper.cgroup_procs_paths("13:perf_event:/machine/c1\n", "/machine/c1", legacy, None)
