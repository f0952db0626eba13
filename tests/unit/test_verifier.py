"""The verifier NGINX asks: real HTTP over a real unix socket, real htpasswd hashes."""

from __future__ import annotations

import base64
import http.client
import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from passlib.hash import bcrypt, sha512_crypt

from condaport import verifier

PASSWORD = "correct horse battery"


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("verifier", timeout=10)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self._path)


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def auth_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "auth"
    directory.mkdir()
    (directory / "main.htpasswd").write_text(
        f"alice:{bcrypt.using(rounds=4).hash(PASSWORD)}\n"
        f"bob:{sha512_crypt.using(rounds=5000).hash(PASSWORD)}\n"
    )
    (directory / "partner.htpasswd").write_text(f"carol:{bcrypt.using(rounds=4).hash(PASSWORD)}\n")
    return directory


@pytest.fixture
def ask(auth_dir: Path, tmp_path: Path) -> Iterator:
    path = str(tmp_path / "verifier.sock")
    args = verifier.argparse.Namespace(systemd_socket=False, socket=path)
    server = verifier.VerifierServer(
        verifier.listener_from_args(args), verifier.HtpasswdStore(auth_dir), workers=2
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def request(target: str, authorization: str | None = None, **headers: str):
        connection = _UnixConnection(path)
        if authorization is not None:
            headers["Authorization"] = authorization
        connection.request("GET", target, headers=headers)
        response = connection.getresponse()
        response.read()
        connection.close()
        return response

    yield request
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("user", ["alice", "bob"])  # bcrypt and sha512_crypt
def test_valid_credentials_are_allowed(ask, user: str) -> None:
    assert ask("/check/main", _basic(user, PASSWORD)).status == 200


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        _basic("alice", "wrong"),
        _basic("nobody", PASSWORD),
        _basic("carol", PASSWORD),  # a user of another channel
        "Basic !!!not-base64!!!",
        "Bearer " + base64.b64encode(b"alice:" + PASSWORD.encode()).decode(),
        _basic("", PASSWORD),
    ],
)
def test_everything_else_is_denied_with_a_challenge(ask, authorization) -> None:
    response = ask("/check/main", authorization)
    assert response.status == 401
    assert response.getheader("WWW-Authenticate") == 'Basic realm="condaport main"'


@pytest.mark.parametrize("channel", ["missing", "..%2Fmain", "../main", ".hidden", ""])
def test_unknown_or_malformed_channels_are_denied(ask, channel: str) -> None:
    assert ask(f"/check/{channel}", _basic("alice", PASSWORD)).status == 401


def test_other_paths_are_not_found(ask) -> None:
    assert ask("/", _basic("alice", PASSWORD)).status == 404


def test_a_removed_user_is_denied_on_the_next_request(ask, auth_dir: Path) -> None:
    assert ask("/check/main", _basic("alice", PASSWORD)).status == 200
    htpasswd = auth_dir / "main.htpasswd"
    kept = [line for line in htpasswd.read_text().splitlines() if not line.startswith("alice:")]
    # Replaced the way the role's module writes it: a new file renamed over the old one.
    (auth_dir / ".main.tmp").write_text("\n".join(kept) + "\n")
    (auth_dir / ".main.tmp").rename(htpasswd)
    assert ask("/check/main", _basic("alice", PASSWORD)).status == 401
    assert ask("/check/main", _basic("bob", PASSWORD)).status == 200


def test_a_removed_channel_file_denies_everyone(ask, auth_dir: Path) -> None:
    assert ask("/check/partner", _basic("carol", PASSWORD)).status == 200
    (auth_dir / "partner.htpasswd").unlink()
    assert ask("/check/partner", _basic("carol", PASSWORD)).status == 401


def test_denials_are_logged_without_the_password(ask, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="condaport-verifier"):
        ask("/check/main", _basic("alice", "hunter2-secret"), **{"X-Condaport-Client": "192.0.2.7"})
    assert "alice" in caplog.text and "192.0.2.7" in caplog.text
    assert "hunter2-secret" not in caplog.text


def test_systemd_socket_requires_being_started_by_systemd(monkeypatch) -> None:
    monkeypatch.delenv("LISTEN_PID", raising=False)
    args = verifier.argparse.Namespace(systemd_socket=True, socket=None)
    with pytest.raises(SystemExit, match="systemd socket"):
        verifier.listener_from_args(args)


def test_parse_htpasswd_skips_comments_and_blank_lines() -> None:
    text = "# comment\n\nalice:$2b$04$x\nbroken-line\nbob:$6$y\n"
    assert verifier.parse_htpasswd(text) == {"alice": "$2b$04$x", "bob": "$6$y"}


def test_the_uploaders_file_is_checked_and_nothing_else_with_an_at(ask, auth_dir: Path) -> None:
    (auth_dir / "@upload.htpasswd").write_text(f"dave:{bcrypt.using(rounds=4).hash(PASSWORD)}\n")
    (auth_dir / "x@upload.htpasswd").write_text(f"dave:{bcrypt.using(rounds=4).hash(PASSWORD)}\n")
    assert ask("/check/@upload", _basic("dave", PASSWORD)).status == 200
    assert ask("/check/@upload", _basic("dave", "wrong")).status == 401
    assert ask("/check/x@upload", _basic("dave", PASSWORD)).status == 401
    assert ask("/check/main", _basic("dave", PASSWORD)).status == 401
