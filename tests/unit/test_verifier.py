"""The verifier NGINX asks: real HTTP over a real unix socket, real htpasswd hashes."""

from __future__ import annotations

import base64
import http.client
import logging
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from passlib.hash import bcrypt, sha512_crypt

from condaport import verifier
from condaport.service import listener_from_args

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
def start(auth_dir: Path, tmp_path: Path) -> Iterator[Callable[..., verifier.VerifierServer]]:
    """Starts a verifier on a unix socket (tmp_path/verifier.sock) for auth_dir."""
    servers: list[verifier.VerifierServer] = []

    def started(workers: int = 2, queue: int = verifier.DEFAULT_QUEUE) -> verifier.VerifierServer:
        args = verifier.argparse.Namespace(
            systemd_socket=False, socket=str(tmp_path / "verifier.sock")
        )
        server = verifier.VerifierServer(
            listener_from_args(args), verifier.HtpasswdStore(auth_dir), workers, queue
        )
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return server

    yield started
    for server in servers:
        server.shutdown()
        server.server_close()


def _request(path: Path, target: str, authorization: str | None = None, **headers: str):
    connection = _UnixConnection(str(path))
    if authorization is not None:
        headers["Authorization"] = authorization
    connection.request("GET", target, headers=headers)
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


@pytest.fixture
def ask(start, tmp_path: Path) -> Callable[..., http.client.HTTPResponse]:
    start()

    def request(target: str, authorization: str | None = None, **headers: str):
        return _request(tmp_path / "verifier.sock", target, authorization, **headers)

    return request


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


def test_a_name_the_channel_does_not_know_is_not_logged(ask, caplog) -> None:
    # A password typed into the name field must not reach the journal: only the channel's
    # own user names are logged. carol is a user, but of another channel.
    with caplog.at_level(logging.INFO, logger="condaport-verifier"):
        ask(
            "/check/main",
            _basic("Summer2026-typed-as-name", "x"),
            **{"X-Condaport-Client": "192.0.2.8"},
        )
        ask("/check/main", _basic("carol", PASSWORD), **{"X-Condaport-Client": "192.0.2.9"})
    assert "Summer2026-typed-as-name" not in caplog.text
    assert "carol" not in caplog.text
    assert caplog.text.count(verifier.UNKNOWN_USER) == 2
    assert "192.0.2.8" in caplog.text and "192.0.2.9" in caplog.text


def test_systemd_socket_requires_being_started_by_systemd(monkeypatch) -> None:
    monkeypatch.delenv("LISTEN_PID", raising=False)
    args = verifier.argparse.Namespace(systemd_socket=True, socket=None)
    with pytest.raises(SystemExit, match="systemd socket"):
        listener_from_args(args)


def test_parse_htpasswd_skips_comments_and_blank_lines() -> None:
    text = "# comment\n\nalice:$2b$04$x\nbroken-line\nbob:$6$y\n"
    assert verifier.parse_htpasswd(text) == {"alice": "$2b$04$x", "bob": "$6$y"}


# Issue 11 item 12: an entry whose hash is empty or unreadable must never allow, whatever
# the password (the decoy's included: `user:` once accepted the decoy's password).
@pytest.mark.parametrize(
    "entry",
    [
        "",
        "   ",
        "$6$saltonly",  # a bare salt, no checksum
        "$6$saltonly$",
        "$2b$04$x",  # truncated bcrypt
        "hunter2",  # a plain-text password
        "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=",  # a scheme the verifier does not take
    ],
)
@pytest.mark.parametrize("password", ["condaport-decoy", "", "hunter2", "password"])
def test_an_empty_or_malformed_hash_never_allows(tmp_path: Path, entry: str, password: str) -> None:
    (tmp_path / "main.htpasswd").write_text(
        f"mallory:{entry}\nalice:{bcrypt.using(rounds=4).hash(PASSWORD)}\n"
    )
    store = verifier.HtpasswdStore(tmp_path)
    assert verifier.verify(store, "main", _basic("mallory", password)) == (False, "mallory")
    # Whatever the decoy's password is, it does not open an unusable entry either.
    decoy_password = verifier._DECOY_PASSWORD  # noqa: SLF001 - the secret under test
    assert verifier.verify(store, "main", _basic("mallory", decoy_password)) == (False, "mallory")
    assert verifier.verify(store, "main", _basic("alice", PASSWORD)) == (True, "alice")


def test_a_file_without_a_usable_hash_denies_without_a_decoy(tmp_path: Path) -> None:
    (tmp_path / "main.htpasswd").write_text("mallory:\n")
    store = verifier.HtpasswdStore(tmp_path)
    assert store.channel("main").decoy is None
    assert verifier.verify(store, "main", _basic("mallory", "")) == (False, "mallory")


# Issue 11 item 6: the decoy an unknown user is checked against costs what the channel's
# real hashes cost, whatever scheme and rounds the role was told to write.
@pytest.mark.parametrize(
    ("scheme", "hashed"),
    [
        ("bcrypt", bcrypt.using(rounds=5).hash(PASSWORD)),
        ("sha512_crypt", sha512_crypt.using(rounds=5000).hash(PASSWORD)),
        ("sha512_crypt", sha512_crypt.using(rounds=20000).hash(PASSWORD)),
    ],
)
def test_the_decoy_has_the_scheme_and_rounds_of_the_channel(scheme: str, hashed: str) -> None:
    auth = verifier.channel_auth({"alice": hashed, "broken": ""})
    assert auth.decoy is not None
    assert verifier.hash_cost(auth.decoy) == verifier.hash_cost(hashed)
    assert verifier.hash_cost(hashed)[0] == scheme
    assert auth.users == {"alice": hashed, "broken": None}


@pytest.mark.parametrize(
    ("hasher", "pairs"),
    [(bcrypt.using(rounds=10), 15), (sha512_crypt.using(rounds=5000), 41)],
    ids=["bcrypt-10", "sha512_crypt-5000"],
)
def test_unknown_users_take_as_long_as_known_ones(tmp_path: Path, hasher, pairs: int) -> None:
    """Answer times over a real unix socket: a wrong password for a known user against
    any password for an unknown one. Each pair is asked back to back, and the median of
    the pairs' ratios is taken, so the load of a shared machine hits both sides alike."""
    auth_dir = tmp_path / "auth"
    auth_dir.mkdir()
    (auth_dir / "main.htpasswd").write_text(
        "".join(f"user{i}:{hasher.hash(PASSWORD)}\n" for i in range(3))
    )
    socket_path = tmp_path / "verifier.sock"
    args = verifier.argparse.Namespace(systemd_socket=False, socket=str(socket_path))
    server = verifier.VerifierServer(
        listener_from_args(args), verifier.HtpasswdStore(auth_dir), workers=1
    )
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()

    def seconds(user: str, password: str) -> float:
        started = time.perf_counter()
        assert _request(socket_path, "/check/main", _basic(user, password)).status == 401
        return time.perf_counter() - started

    try:
        seconds("user0", "warm-up")  # loads the file and derives the decoy
        ratios = []
        for attempt in range(pairs):
            known = seconds("user1", f"guess{attempt}")
            ratios.append(seconds(f"nobody{attempt}", f"guess{attempt}") / known)
    finally:
        server.shutdown()
        server.server_close()
    # Before the fix: bcrypt 10 gave about 4, sha512_crypt 5,000 rounds about 50.
    assert 0.5 < statistics.median(ratios) < 2, sorted(ratios)


def _raw_check(path: Path, user: str) -> socket.socket:
    """A check sent on a raw socket, its answer not read yet."""
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    connection.settimeout(10)
    connection.connect(str(path))
    connection.sendall(
        f"GET /check/main HTTP/1.0\r\nAuthorization: {_basic(user, PASSWORD)}\r\n\r\n".encode()
    )
    return connection


def _status(connection: socket.socket) -> int:
    with connection, connection.makefile("rb") as answer:
        return int(answer.readline().split()[1])


def _wait_until(condition: Callable[[], bool], seconds: float = 10) -> None:
    give_up = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < give_up, "timed out"
        time.sleep(0.01)


# Issue 11 item 9: at most `queue` checks wait beyond the workers; more get 503 at once,
# without a thread each.
def test_checks_beyond_the_queue_are_shed_with_503(start, tmp_path: Path) -> None:
    server = start(workers=1, queue=1)
    socket_path = tmp_path / "verifier.sock"
    server.hashing.acquire()  # the only worker is busy
    try:
        waiting = [_raw_check(socket_path, "alice"), _raw_check(socket_path, "bob")]
        _wait_until(lambda: server.in_progress == 2)
        started = time.monotonic()
        assert _status(_raw_check(socket_path, "alice")) == 503
        assert time.monotonic() - started < 2
        threads_before = threading.active_count()
        assert [_status(_raw_check(socket_path, "bob")) for _ in range(20)] == [503] * 20
        assert threading.active_count() == threads_before
    finally:
        server.hashing.release()
    assert [_status(connection) for connection in waiting] == [200, 200]
    _wait_until(lambda: server.in_progress == 0)
    assert _request(socket_path, "/check/main", _basic("alice", PASSWORD)).status == 200


# Issue 11 item 9: a check whose NGINX connection closed while it waited costs no hash.
def test_a_check_whose_client_is_gone_is_not_hashed(start, tmp_path: Path, monkeypatch) -> None:
    hashed: list[str] = []
    real_verify = verifier.verify

    def counting_verify(store, channel, authorization):  # noqa: ANN001, ANN202
        allowed, user = real_verify(store, channel, authorization)
        hashed.append(user)
        return allowed, user

    monkeypatch.setattr(verifier, "verify", counting_verify)
    server = start(workers=1, queue=4)
    socket_path = tmp_path / "verifier.sock"
    server.hashing.acquire()
    try:
        gone = _raw_check(socket_path, "alice")
        _wait_until(lambda: server.in_progress == 1)
        gone.close()
        staying = _raw_check(socket_path, "bob")
        _wait_until(lambda: server.in_progress == 2)
    finally:
        server.hashing.release()
    assert _status(staying) == 200
    _wait_until(lambda: server.in_progress == 0)
    assert hashed == ["bob"]


def test_the_uploaders_file_is_checked_and_nothing_else_with_an_at(ask, auth_dir: Path) -> None:
    (auth_dir / "@upload.htpasswd").write_text(f"dave:{bcrypt.using(rounds=4).hash(PASSWORD)}\n")
    (auth_dir / "x@upload.htpasswd").write_text(f"dave:{bcrypt.using(rounds=4).hash(PASSWORD)}\n")
    assert ask("/check/@upload", _basic("dave", PASSWORD)).status == 200
    assert ask("/check/@upload", _basic("dave", "wrong")).status == 401
    assert ask("/check/x@upload", _basic("dave", PASSWORD)).status == 401
    assert ask("/check/main", _basic("dave", PASSWORD)).status == 401
