"""No token reaches a file on the host: not the access log, not the error log, nothing.

Tokens sit in a URL, so everything that logs URLs is a way for them to leak to whoever reads
the logs (group adm on Debian) and to every backup of them. The token map NGINX reads is the
one root-only place they may live. This suite sends valid, unknown and revoked tokens in
many shapes to paths that exist and paths that do not, then searches every file of the host
for every token the suites used, and reads back the log lines it caused to see that they are
still written, masked.

Runs last in each Molecule verify call, after the access matrix sent its tokens too.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import uuid

import pytest

from tests.support.live import Channel, fetch, require

TOKEN_MAP = "/etc/nginx/condaport/tokens.map"
ACCESS_LOG = "/var/log/nginx/access.log"
# Kernel and device trees are no files a token could be written to.
NOT_FILES = ["proc", "sys", "dev"]


def _podman(channel: Channel, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", "exec", channel.container, *argv],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def _inventory() -> dict:
    return json.loads(require("CONDAPORT_ACCESS"))


def _tokens_of(users: list[dict]) -> list[str]:
    return [token for user in users for token in user.get("tokens", [])]


def _revoked_tokens() -> list[str]:
    """Tokens the revocation step removes (still valid before it, unknown after it)."""
    tokens: list[str] = []
    for name in ("CONDAPORT_TO_BE_REVOKED", "CONDAPORT_REVOKED"):
        raw = os.environ.get(name)
        if raw:
            tokens += json.loads(raw)["tokens"]
    return tokens


@pytest.fixture(scope="module")
def urls() -> tuple[str, str]:
    """The HTTPS and the plain HTTP base URLs of the host."""
    https = require("CONDAPORT_BASE_URL").rstrip("/")
    http = require("CONDAPORT_HTTP_URL").rstrip("/").rsplit("/", 1)[0]
    return https, http


def _requests(channel: Channel, urls: tuple[str, str], agent: str) -> dict[str, list]:
    """Send token requests of every kind; return the tokens used and the answers."""
    https, http = urls
    inventory = _inventory()
    holder = next(u for u in inventory["users"] if u.get("tokens"))
    valid = holder["tokens"][0]
    readable = next(
        c["name"]
        for c in inventory["channels"]
        if c.get("anonymous") or holder["name"] in c.get("users", [holder["name"]])
    )
    other = next(
        (c["name"] for c in inventory["channels"] if holder["name"] not in c.get("users", [])),
        readable,
    )
    unknown = secrets.token_urlsafe(24)  # never in any inventory: a guess, or a typo
    tokens = [valid, unknown, *_revoked_tokens()]
    sent = []
    for token in tokens:
        for path in (
            f"/t/{token}/{readable}/noarch/repodata.json",  # exists
            f"/t/{token}/{readable}/noarch/not-there-0-0.conda",  # missing file
            f"/t/{token}/{readable}/linux-ppc64le/repodata.json",  # missing subdir
            f"/t/{token}/{readable}/noarch/.cache/cache.db",  # dot path
            f"/t/{token}/{readable}/",  # browse page
            f"/t/{token}/{other}/noarch/repodata.json",  # maybe not this token's channel
            f"/t/{token}/no-such-channel/noarch/repodata.json",
            f"/t/{token}",  # no path after the token
            f"/T/{token}/{readable}/noarch/repodata.json",  # not the token form
            f"/t/%{ord(token[0]):02X}{token[1:]}/{readable}/noarch/repodata.json",  # encoded
            f"//t//{token}//{readable}/noarch/repodata.json",  # extra slashes
            f"/{readable}/../t/{token}/{readable}/noarch/repodata.json",  # dot segment
            f"/t/{token}/{readable}/noarch/repodata.json?token={token}",  # query string
        ):
            headers = {"User-Agent": agent, "Referer": f"{https}/t/{token}/{readable}/"}
            answer = fetch(f"{https}{path}", ca_file=channel.ca_file, headers=headers)
            sent.append((path, answer.status))
        # With basic credentials too (wrong ones): a refusal by auth_basic or the verifier
        # would write the request line to the error log.
        answer = fetch(
            f"{https}/t/{token}/{other}/noarch/repodata.json",
            ca_file=channel.ca_file,
            auth=(holder["name"], "certainly-not-the-password"),
            headers={"User-Agent": agent},
        )
        sent.append(("with basic auth", answer.status))
        # The plain HTTP server only redirects, and logs too.
        answer = fetch(
            f"{http}/t/{token}/{readable}/noarch/repodata.json",
            ca_file=None,
            headers={"User-Agent": agent},
        )
        assert answer.status == 301
        sent.append(("http", answer.status))
    return {"tokens": tokens, "sent": sent, "valid": [valid, holder["name"], readable]}


@pytest.fixture(scope="module")
def traffic(channel: Channel, urls: tuple[str, str]) -> dict:
    agent = f"condaport-test-logs/{uuid.uuid4()}"
    return {"agent": agent, **_requests(channel, urls, agent)}


def test_the_valid_token_worked(traffic: dict) -> None:
    """Else the search below would prove little about a token NGINX let in."""
    statuses = [status for path, status in traffic["sent"] if path.endswith("repodata.json")]
    assert 200 in statuses


def test_token_requests_are_logged_with_the_token_masked(channel: Channel, traffic: dict) -> None:
    log = _podman(channel, "cat", ACCESS_LOG)
    assert log.returncode == 0, log.stderr
    ours = [line for line in log.stdout.splitlines() if traffic["agent"] in line]
    # Every request made one line (the encoded and dot-segment forms included).
    assert len(ours) == len(traffic["sent"]), ours
    assert all("/t/<redacted>" in line for line in ours), ours
    assert all('"-" "condaport-test-logs/' in line for line in ours), "the Referer is logged"
    # The valid token's request names its user and the path after the token.
    _, user, readable = traffic["valid"]
    request = f'"GET /t/<redacted>/{readable}/noarch/repodata.json HTTP/1.1" 200 '
    assert any(f" - {user} [" in line and request in line for line in ours), ours


def test_no_token_reaches_a_file(channel: Channel, traffic: dict) -> None:
    """Every token of the inventory and every token sent here: only in the token map."""
    tokens = sorted(set(traffic["tokens"] + _tokens_of(_inventory()["users"])))
    patterns = [arg for token in tokens for arg in ("-e", token)]
    excluded = [f"--exclude-dir={name}" for name in NOT_FILES]
    found = _podman(
        channel, "grep", "-r", "-l", "-a", "-F", "-D", "skip", *excluded, *patterns, "/"
    )
    # grep: 1 = nothing found, 0 = found (listed), 2 = error (a file vanished meanwhile).
    assert found.returncode in (0, 1), found.stderr
    leaked = [path for path in found.stdout.splitlines() if path != TOKEN_MAP]
    assert leaked == [], leaked
