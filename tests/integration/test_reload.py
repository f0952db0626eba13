"""A configuration NGINX refuses at reload time fails the run, with NGINX's own reason.

`nginx -t` cannot see every refusal. A port another program holds is found only when the
master process binds it during the reload; `systemctl reload` still reports success and the
old configuration goes on serving. (Changing a limit_req zone's key is another such change;
changing a shared zone's size is not: NGINX then makes a new zone.) So this suite holds a
port inside the container, converges with the HTTP port moved onto it and expects the run
to fail naming NGINX's bind() error; converges again with nothing changed and expects the
same failure (the failed handlers of the first run are not notified again, yet the host
still runs the old configuration); then converges back and expects success.

Runs from Molecule's default scenario. The converges are limited to the preflight checks and
the NGINX role's vhost (tags `preflight,condaport_nginx_config`).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support.live import Channel, fetch, require

PROJECT = Path(__file__).resolve().parents[2]
# Nothing in the container listens here; the blocker below will.
BLOCKED_PORT = 18081
BLOCKER_PID = "/run/condaport-test-port-blocker.pid"
BLOCKER = f"""
import os, socket, time
server = socket.socket()
server.bind(("0.0.0.0", {BLOCKED_PORT}))
server.listen()
with open("{BLOCKER_PID}", "w") as pid:
    pid.write(str(os.getpid()))
time.sleep(1800)
"""
REFUSED = "NGINX refused to load the new configuration and still serves the previous one"
BIND_ERROR = f"bind() to 0.0.0.0:{BLOCKED_PORT} failed (98: Address already in use)"


def _podman(channel: Channel, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", "exec", channel.container, *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _converge(*extra: str) -> tuple[int, str]:
    """Run the NGINX role's part of the channel playbook; its exit code and output."""
    argv = [
        "ansible-playbook",
        "--inventory",
        require("CONDAPORT_INVENTORY"),
        "--tags",
        "preflight,condaport_nginx_config",
        *extra,
        str(PROJECT / "playbooks" / "channel.yml"),
    ]
    env = {**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1"}
    run = subprocess.run(argv, capture_output=True, text=True, timeout=1200, check=False, env=env)
    # Ansible prints a failed task's message on stderr, the rest on stdout.
    return run.returncode, run.stdout + run.stderr


def _redirects(channel: Channel) -> bool:
    """The plain HTTP server on its configured port still sends clients to HTTPS."""
    return fetch(f"{channel.http_url}/noarch/repodata.json", ca_file=None).status == 301


@pytest.fixture
def blocked_port(channel: Channel):
    started = subprocess.run(
        ["podman", "exec", "--detach", channel.container, "python3", "-c", BLOCKER],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert started.returncode == 0, started.stderr
    try:
        listening = _podman(
            channel,
            "bash",
            "-c",
            f"for i in $(seq 50); do test -s {BLOCKER_PID} && exit; sleep 0.1; done; exit 1",
        )
        assert listening.returncode == 0, "the port blocker did not start"
        yield BLOCKED_PORT
    finally:
        _podman(channel, "bash", "-c", f"kill $(cat {BLOCKER_PID}) && rm -f {BLOCKER_PID}")


def test_a_reload_nginx_refuses_fails_the_run_until_fixed(
    channel: Channel, blocked_port: int
) -> None:
    assert _redirects(channel)
    moved = ["--extra-vars", f"condaport_nginx_http_port={blocked_port}"]
    try:
        refused = _converge(*moved)
        # Nothing changes on disk this time, yet the host still runs the old configuration.
        again = _converge(*moved)
    finally:
        back = _converge()
    for code, output in (refused, again):
        assert code != 0, output[-3000:]
        assert REFUSED in output, output[-3000:]
        assert BIND_ERROR in output, output[-3000:]
    # nginx -t passed: the refusal came at reload time, and the old configuration served on.
    assert _redirects(channel)
    assert back[0] == 0, back[1][-3000:]
    assert _redirects(channel)
