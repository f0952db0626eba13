"""Verifier mode (auth_request + cached answers): fail closed, survive floods, leak nothing.

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


def _header(user: str, password: str, scheme: str = "Basic") -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"{scheme} {token}"}


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


def test_cached_answers_hold_no_credentials(channel: Channel, repodata_url: str) -> None:
    answer = fetch(repodata_url, ca_file=channel.ca_file, auth=(channel.user, channel.password))
    assert answer.status == 200
    cache = subprocess.run(
        [
            "podman",
            "exec",
            channel.container,
            "sh",
            "-c",
            "find /run/condaport/auth-cache -type f -exec cat {} +",
        ],
        capture_output=True,
        timeout=120,
        check=False,
    ).stdout
    assert b"KEY: " in cache, "nothing was cached"
    encoded = base64.b64encode(f"{channel.user}:{channel.password}".encode()).decode()
    for secret in (channel.password, encoded, channel.user + ":"):
        assert secret.encode() not in cache
    # /run is tmpfs: nothing reaches persistent storage.
    assert (
        _podman(
            channel, "findmnt", "-n", "-o", "FSTYPE", "--target", "/run/condaport"
        ).stdout.strip()
        == "tmpfs"
    )


def test_verifier_down_fails_closed(channel: Channel, repodata_url: str) -> None:
    # "basic" in lower case is the same valid credential under a cache key never seen.
    fresh = _header(channel.user, channel.password, scheme="basic")
    _podman(channel, "systemctl", "stop", "condaport-verifier.socket", "condaport-verifier.service")
    try:
        for headers in (fresh, _header(channel.user, "wrong"), {}):
            answer = fetch(repodata_url, ca_file=channel.ca_file, headers=headers)
            assert answer.status in (401, 503), headers
            assert b'"packages' not in answer.body
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
