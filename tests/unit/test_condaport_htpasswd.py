"""The condaport_htpasswd module, run as Ansible runs it: a process fed its arguments."""

from __future__ import annotations

import crypt  # noqa: F401 - deprecated, but it is glibc's crypt(3), the call NGINX makes
import json
import os
import stat
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

MODULE = Path(__file__).resolve().parents[2] / "plugins/modules/condaport_htpasswd.py"

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt as glibc_crypt


def run_module(
    tmp_path: Path, check_mode: bool = False, diff: bool = False, env: dict | None = None, **args
) -> dict:
    payload = {
        "ANSIBLE_MODULE_ARGS": {**args, "_ansible_check_mode": check_mode, "_ansible_diff": diff}
    }
    args_file = tmp_path / "args.json"
    args_file.write_text(json.dumps(payload))
    result = subprocess.run(
        [sys.executable, str(MODULE), str(args_file)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
    )
    assert result.stdout, result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def htpasswd(tmp_path: Path) -> Path:
    return tmp_path / "users.htpasswd"


USERS = [{"name": "alice", "password": "alice-secret"}, {"name": "bob", "password": "bob-secret"}]


def entries(path: Path) -> dict[str, str]:
    return dict(line.split(":", 1) for line in path.read_text().splitlines())


@pytest.mark.parametrize(
    ("scheme", "rounds", "prefix"),
    [
        ("sha512_crypt", None, "$6$"),
        ("sha256_crypt", 6000, "$5$rounds=6000$"),
        ("bcrypt", 5, "$2b$05$"),
        ("apr_md5_crypt", None, "$apr1$"),
    ],
)
def test_hashes_verify_with_glibc_crypt_as_nginx_does(
    tmp_path: Path, htpasswd: Path, scheme: str, rounds: int | None, prefix: str
) -> None:
    args = {"path": str(htpasswd), "users": USERS, "scheme": scheme}
    if rounds:
        args["rounds"] = rounds
    result = run_module(tmp_path, **args)
    assert result["changed"] and result["added"] == ["alice", "bob"]
    for user in USERS:
        hashed = entries(htpasswd)[user["name"]]
        assert hashed.startswith(prefix)
        if scheme != "apr_md5_crypt":  # glibc has no apr1; NGINX implements it itself
            assert glibc_crypt.crypt(user["password"], hashed) == hashed


def test_second_run_changes_nothing(tmp_path: Path, htpasswd: Path) -> None:
    run_module(tmp_path, path=str(htpasswd), users=USERS, mode="0640")
    before = htpasswd.read_text()
    result = run_module(tmp_path, path=str(htpasswd), users=USERS, mode="0640")
    assert result["changed"] is False
    assert result["unchanged"] == ["alice", "bob"]
    assert htpasswd.read_text() == before


def test_a_new_password_rehashes_only_that_user(tmp_path: Path, htpasswd: Path) -> None:
    run_module(tmp_path, path=str(htpasswd), users=USERS)
    before = entries(htpasswd)
    changed = [USERS[0], {"name": "bob", "password": "new-bob-secret"}]
    result = run_module(tmp_path, path=str(htpasswd), users=changed)
    assert result["updated"] == ["bob"]
    after = entries(htpasswd)
    assert after["alice"] == before["alice"]
    assert glibc_crypt.crypt("new-bob-secret", after["bob"]) == after["bob"]


@pytest.mark.parametrize(
    "change", [{"scheme": "bcrypt", "rounds": 5}, {"scheme": "sha512_crypt", "rounds": 6000}]
)
def test_a_scheme_or_rounds_change_rehashes_everyone(
    tmp_path: Path, htpasswd: Path, change: dict
) -> None:
    run_module(tmp_path, path=str(htpasswd), users=USERS, scheme="sha512_crypt")
    result = run_module(tmp_path, path=str(htpasswd), users=USERS, **change)
    assert result["updated"] == ["alice", "bob"]


def test_a_user_dropped_from_the_list_is_removed(tmp_path: Path, htpasswd: Path) -> None:
    run_module(tmp_path, path=str(htpasswd), users=USERS)
    result = run_module(tmp_path, path=str(htpasswd), users=USERS[:1])
    assert result["removed"] == ["bob"]
    assert list(entries(htpasswd)) == ["alice"]


def test_check_mode_writes_nothing_and_diff_shows_no_hash(tmp_path: Path, htpasswd: Path) -> None:
    result = run_module(tmp_path, check_mode=True, diff=True, path=str(htpasswd), users=USERS)
    assert result["changed"] is True
    assert not htpasswd.exists()
    run_module(tmp_path, path=str(htpasswd), users=USERS)
    result = run_module(
        tmp_path,
        check_mode=True,
        diff=True,
        path=str(htpasswd),
        users=[{"name": "alice", "password": "other"}],
    )
    shown = json.dumps(result["diff"])
    assert "$6$" not in shown and "other" not in shown
    assert "alice  (hash renewed)" in result["diff"]["after"]
    assert "bob" in result["diff"]["before"] and "bob" not in result["diff"]["after"]
    assert "bob" in entries(htpasswd)


def test_mode_is_applied(tmp_path: Path, htpasswd: Path) -> None:
    run_module(tmp_path, path=str(htpasswd), users=USERS, mode="0640")
    assert stat.S_IMODE(os.stat(htpasswd).st_mode) == 0o640


@pytest.mark.parametrize(
    ("users", "extra", "message"),
    [
        ([{"name": "a:b", "password": "s3cret-value"}], {}, "is invalid"),
        ([{"name": "a b", "password": "s3cret-value"}], {}, "is invalid"),
        ([{"name": "", "password": "s3cret-value"}], {}, "is invalid"),
        ([{"name": "a", "password": "s3cret-value"}, {"name": "a", "password": "y"}], {}, "twice"),
        ([{"name": "a", "password": ""}], {}, "empty password"),
        (USERS, {"scheme": "bcrypt", "rounds": 40}, "outside"),
        (USERS, {"scheme": "plaintext"}, "value of scheme must be one of"),
    ],
)
def test_bad_input_fails_with_a_message(
    tmp_path: Path, htpasswd: Path, users: list, extra: dict, message: str
) -> None:
    result = run_module(tmp_path, path=str(htpasswd), users=users, **extra)
    assert result.get("failed") is True
    assert message in result["msg"]
    assert not htpasswd.exists()
    assert "s3cret-value" not in json.dumps(result)


def test_a_missing_directory_is_reported(tmp_path: Path) -> None:
    result = run_module(tmp_path, path=str(tmp_path / "nowhere" / "f"), users=USERS)
    assert result["failed"] is True and "does not exist" in result["msg"]


def test_check_mode_on_a_new_host_adds_everyone(tmp_path: Path) -> None:
    """--check before the first run: no folder and no passlib on the host yet."""
    hidden = tmp_path / "no-passlib"
    (hidden / "passlib").mkdir(parents=True)
    (hidden / "passlib" / "__init__.py").write_text("raise ImportError('not installed yet')\n")
    path = tmp_path / "nowhere" / "f.htpasswd"
    result = run_module(
        tmp_path, check_mode=True, diff=True, env={"PYTHONPATH": str(hidden)},
        path=str(path), users=USERS,
    )  # fmt: skip
    assert result.get("failed") is not True, result
    assert result["changed"] is True
    assert result["added"] == [user["name"] for user in USERS]
    assert "alice-secret" not in json.dumps(result) and "$6$" not in json.dumps(result)
    assert not path.parent.exists()
    # Without --check the same call still refuses the missing folder.
    result = run_module(tmp_path, env={"PYTHONPATH": str(hidden)}, path=str(path), users=USERS)
    assert result["failed"] is True
