"""Verifier mode (Lua check, verifier, answers in shared memory): fail closed, survive
floods, check once per credential, leak nothing to files.

Runs from molecule's default scenario, where condaport_auth_mode is `verifier`.
"""

from __future__ import annotations

import base64
import subprocess
import threading
import time
from collections import Counter

import pytest
from conftest import Channel, fetch


def _podman(channel: Channel, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", "exec", channel.container, *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _header(user: str, password: str, scheme: str = "Basic", spaces: int = 1) -> dict[str, str]:
    """Basic credentials; another `scheme` spelling or more `spaces` give the same valid
    credential under a name NGINX has not kept an answer for."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"{scheme}{' ' * spaces}{token}"}


@pytest.fixture
def repodata_url(channel: Channel) -> str:
    return f"{channel.url}/noarch/repodata.json"


def test_the_verifier_runs_sandboxed_under_its_own_user(channel: Channel) -> None:
    fetch(
        f"{channel.url}/noarch/repodata.json",
        ca_file=channel.ca_file,
        auth=(channel.user, channel.password),
    )
    shown = _podman(
        channel,
        "systemctl",
        "show",
        "condaport-verifier.service",
        "-p",
        "ActiveState",
        "-p",
        "User",
        "-p",
        "ProtectSystem",
        "-p",
        "NoNewPrivileges",
    )
    assert "ActiveState=active" in shown.stdout
    assert "User=condaport-verifier" in shown.stdout
    assert "ProtectSystem=strict" in shown.stdout
    assert "NoNewPrivileges=yes" in shown.stdout


def test_parallel_first_requests_cost_one_check(channel: Channel, repodata_url: str) -> None:
    # The gate allows 1 check/s (burst 5) here; earlier tests may have drained it.
    time.sleep(6)
    fresh = _header(channel.user, channel.password, spaces=7)
    answers: Counter[int] = Counter()

    def download() -> None:
        answers[fetch(repodata_url, ca_file=channel.ca_file, headers=fresh).status] += 1

    clients = [threading.Thread(target=download) for _ in range(16)]
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join()
    # One check each would have run into the gate's limit (503).
    assert answers == Counter({200: 16})


def test_no_credential_reaches_a_file(channel: Channel, repodata_url: str) -> None:
    answer = fetch(repodata_url, ca_file=channel.ca_file, auth=(channel.user, channel.password))
    assert answer.status == 200
    encoded = base64.b64encode(f"{channel.user}:{channel.password}".encode()).decode()
    found = _podman(
        channel,
        "grep",
        "-r",
        "-l",
        "-a",
        "-F",
        "-e",
        channel.password,
        "-e",
        encoded,
        "/run",
        "/tmp",
        "/var",
        "/etc",
    )
    # grep: 1 = nothing found, 0 = found (listed), 2 = error.
    assert found.returncode == 1, found.stdout + found.stderr


def test_verifier_down_fails_closed(channel: Channel, repodata_url: str) -> None:
    kept = _header(channel.user, channel.password)
    assert fetch(repodata_url, ca_file=channel.ca_file, headers=kept).status == 200
    # "basic" in lower case is the same valid credential under a name never seen.
    fresh = _header(channel.user, channel.password, scheme="basic")
    _podman(channel, "systemctl", "stop", "condaport-verifier.socket", "condaport-verifier.service")
    try:
        for headers in (fresh, _header(channel.user, "wrong"), {}):
            answer = fetch(repodata_url, ca_file=channel.ca_file, headers=headers)
            assert answer.status in (401, 503), headers
            assert b'"packages' not in answer.body
        # A session checked before the outage goes on for its TTL.
        assert fetch(repodata_url, ca_file=channel.ca_file, headers=kept).status == 200
    finally:
        _podman(channel, "systemctl", "start", "condaport-verifier.socket")
    assert fetch(repodata_url, ca_file=channel.ca_file, headers=fresh).status == 200


def test_a_wrong_password_flood_does_not_lock_out_a_cached_client(
    channel: Channel, repodata_url: str
) -> None:
    valid = (channel.user, channel.password)
    assert fetch(repodata_url, ca_file=channel.ca_file, auth=valid).status == 200  # cached now
    flood: Counter[int] = Counter()
    stop = threading.Event()

    def attacker(index: int) -> None:
        while not stop.is_set():
            answer = fetch(
                repodata_url,
                ca_file=channel.ca_file,
                auth=(channel.user, f"guess-{index}-{time.monotonic()}"),
            )
            flood[answer.status] += 1

    attackers = [threading.Thread(target=attacker, args=(i,)) for i in range(8)]
    for thread in attackers:
        thread.start()
    try:
        downloads = Counter(
            fetch(repodata_url, ca_file=channel.ca_file, auth=valid).status for _ in range(100)
        )
    finally:
        stop.set()
        for thread in attackers:
            thread.join()
    assert downloads == Counter({200: 100})
    assert flood[200] == 0
    assert flood[503] > 0, flood  # the rate limit engaged
    assert sum(flood.values()) > 100
