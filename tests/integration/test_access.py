"""The access matrix: every channel x every kind of credential x every kind of path.

Who may read what is derived from the inventory Molecule converged (passed in as JSON),
so the expected answers follow the same rules the roles implement, and a change in either
shows up here as a wrong status, never as an unexpected 200 that nobody looked at.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.live import fetch, require
from tests.support.screenshot import dump_dom, screenshot

CREDENTIALS = [
    "none",
    "wrong_password",
    "other_channel_user",
    "valid_user",
    "valid_token",
    "other_channel_token",
    "unknown_token",
]
TARGETS = ["repodata", "package", "missing_subdir", "dot_path", "browse_page"]
UNKNOWN_TOKEN = "not-a-token-of-anybody-0123456789"
RESULTS = Path(__file__).resolve().parents[2] / "artifacts" / "test-results"


@dataclass(frozen=True)
class Access:
    base_url: str
    ca_file: Path
    channels: list[dict]
    users: list[dict]
    package: str

    def readers(self, channel: dict) -> list[dict]:
        names = channel.get("users", [u["name"] for u in self.users])
        return [u for u in self.users if u["name"] in names]

    def outsiders(self, channel: dict) -> list[dict]:
        return [u for u in self.users if u not in self.readers(channel)]


@pytest.fixture(scope="session")
def access() -> Access:
    inventory = json.loads(require("CONDAPORT_ACCESS"))
    published = sorted(Path(require("CONDAPORT_PUBLISHED_DIR")).glob("*.conda"))
    assert published, "the sample package was not built"
    return Access(
        base_url=require("CONDAPORT_BASE_URL").rstrip("/"),
        ca_file=Path(require("CONDAPORT_CA")),
        channels=inventory["channels"],
        users=inventory["users"],
        package=published[0].name,
    )


def _channel_names() -> list[str]:
    raw = os.environ.get("CONDAPORT_ACCESS")
    return [c["name"] for c in json.loads(raw)["channels"]] if raw else ["unset"]


def _credential(access: Access, channel: dict, kind: str) -> tuple[str, tuple | None] | None:
    """(URL prefix, basic auth) for a kind of credential, or None if the inventory has none."""
    readers, outsiders = access.readers(channel), access.outsiders(channel)
    with_password = [u for u in readers if u.get("password")]
    with_token = [u for u in readers if u.get("tokens")]
    if kind == "none":
        return access.base_url, None
    if kind == "wrong_password":
        name = with_password[0]["name"] if with_password else access.users[0]["name"]
        return access.base_url, (name, "certainly-not-the-password")
    if kind == "valid_user":
        user = with_password[0] if with_password else None
        return (access.base_url, (user["name"], user["password"])) if user else None
    if kind == "valid_token":
        user = with_token[0] if with_token else None
        return (f"{access.base_url}/t/{user['tokens'][0]}", None) if user else None
    if kind == "other_channel_user":
        user = next((u for u in outsiders if u.get("password")), None)
        return (access.base_url, (user["name"], user["password"])) if user else None
    if kind == "other_channel_token":
        user = next((u for u in outsiders if u.get("tokens")), None)
        return (f"{access.base_url}/t/{user['tokens'][0]}", None) if user else None
    if kind == "unknown_token":
        return f"{access.base_url}/t/{UNKNOWN_TOKEN}", None
    raise ValueError(kind)


def _path(access: Access, channel: dict, target: str) -> str:
    name = channel["name"]
    return {
        "repodata": f"{name}/noarch/repodata.json",
        "package": f"{name}/noarch/{access.package}",
        "missing_subdir": f"{name}/linux-ppc64le/repodata.json",
        "dot_path": f"{name}/noarch/.cache/cache.db",
        "browse_page": f"{name}/",
    }[target]


def _expected(channel: dict, credential: str, target: str) -> int:
    if target == "dot_path":
        return 404
    if credential == "unknown_token":
        return 401
    allowed = channel.get("anonymous", False) or credential in ("valid_user", "valid_token")
    if not allowed:
        return 401
    return 404 if target == "missing_subdir" else 200


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("credential", CREDENTIALS)
@pytest.mark.parametrize("channel_name", _channel_names())
def test_access_matrix(access: Access, channel_name: str, credential: str, target: str) -> None:
    channel = next(c for c in access.channels if c["name"] == channel_name)
    prepared = _credential(access, channel, credential)
    if prepared is None:
        pytest.skip(f"the inventory has no {credential} for channel {channel_name}")
    prefix, auth = prepared
    answer = fetch(f"{prefix}/{_path(access, channel, target)}", ca_file=access.ca_file, auth=auth)
    assert answer.status == _expected(channel, credential, target), answer.body[:200]


def test_every_token_opens_exactly_its_users_channels(access: Access) -> None:
    for user in access.users:
        for token in user.get("tokens", []):
            for channel in access.channels:
                allowed = channel.get("anonymous", False) or user in access.readers(channel)
                answer = fetch(
                    f"{access.base_url}/t/{token}/{channel['name']}/noarch/repodata.json",
                    ca_file=access.ca_file,
                )
                assert answer.status == (200 if allowed else 401), (user["name"], channel["name"])


def _repodata_url(access: Access, channel: dict, prefix: str = "") -> str:
    return f"{access.base_url}{prefix}/{channel['name']}/noarch/repodata.json"


def test_a_token_in_another_case_opens_nothing(access: Access) -> None:
    """NGINX compares plain map strings without regard to case; tokens must match exactly."""
    checked = 0
    for user in access.users:
        for token in user.get("tokens", []):
            flipped = token.swapcase()
            assert flipped != token, f"a token of {user['name']} has no letter to flip"
            for channel in access.channels:
                answer = fetch(
                    _repodata_url(access, channel, f"/t/{flipped}"), ca_file=access.ca_file
                )
                assert answer.status == 401, (user["name"], channel["name"])
                checked += 1
    assert checked > 0, "the inventory has no token"


def test_a_user_name_in_another_case_is_refused(access: Access) -> None:
    """The right password under the name in another case: not that user (both modes)."""
    checked = 0
    for channel in access.channels:
        if channel.get("anonymous"):
            continue
        for user in access.readers(channel):
            if not user.get("password"):
                continue
            name = user["name"]
            for other in {name.swapcase(), name.capitalize(), name.lower()} - {name}:
                answer = fetch(
                    _repodata_url(access, channel),
                    ca_file=access.ca_file,
                    auth=(other, user["password"]),
                )
                assert answer.status == 401, (other, channel["name"])
                checked += 1
    assert checked > 0, "no protected channel has a reader with a password"


def test_content_types(access: Access) -> None:
    public = next((c for c in access.channels if c.get("anonymous")), None)
    if public is None:
        pytest.skip("the inventory has no anonymous channel")
    expected = {
        "noarch/repodata.json": "application/json",
        "": "text/html",
        f"noarch/{access.package}": "application/octet-stream",
    }
    for path, content_type in expected.items():
        answer = fetch(f"{access.base_url}/{public['name']}/{path}", ca_file=access.ca_file)
        assert answer.status == 200, path
        assert answer.headers["Content-Type"].startswith(content_type), path


def _statuses_of(access: Access, revoked: dict) -> list[int]:
    """One answer per token, two per user (the second from the verifier mode's cache)."""
    channel = revoked["channel"]
    url = f"{channel}/noarch/repodata.json"
    statuses = [
        fetch(f"{access.base_url}/t/{token}/{url}", ca_file=access.ca_file).status
        for token in revoked["tokens"]
    ]
    for name, password in revoked["users"]:
        for _ in range(2):
            auth = (name, password)
            statuses.append(
                fetch(f"{access.base_url}/{url}", ca_file=access.ca_file, auth=auth).status
            )
    return statuses


def test_credentials_to_be_revoked_work_now(access: Access) -> None:
    """Run just before the converge that removes them (and caches their answers)."""
    revoked = json.loads(require("CONDAPORT_TO_BE_REVOKED"))
    assert set(_statuses_of(access, revoked)) == {200}


def test_revoked_credentials_are_refused(access: Access) -> None:
    """Run after a converge that removed these: the very next request is refused."""
    revoked = json.loads(require("CONDAPORT_REVOKED"))
    assert set(_statuses_of(access, revoked)) == {401}


def test_public_browse_page_renders_live_in_chromium(access: Access) -> None:
    public = next((c for c in access.channels if c.get("anonymous")), None)
    if public is None:
        pytest.skip("the inventory has no anonymous channel")
    url = f"{access.base_url}/{public['name']}/"
    png = RESULTS / f"browse-{public['name']}-live.png"
    png.parent.mkdir(parents=True, exist_ok=True)
    screenshot(url, png)
    assert png.stat().st_size > 10_000
    dom = dump_dom(url)
    # The script filled in the URL the browser used, and the package table is there.
    assert f'conda config --add channels <span class="channel-url">{url}</span>' in dom
    assert f'href="noarch/{access.package}"' in dom
