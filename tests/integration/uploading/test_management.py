"""Channel management over HTTPS, through NGINX, in both auth modes: who may patch, mark
broken and promote (the upload rights model extended), what a real client then solves
(py-rattler), that the shards agree with repodata.json after each change, and what the
inventory declares (molecule/uploading: main's patches and broken lists)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.client import run_install, write_auth_file
from tests.support.live import fetch
from tests.support.pkgbuild import build_tar_bz2
from uploading.site import RUN, Site, credentials, listed, put, send, shard_mismatches

API = "/api/channels"


def manage(site: Site, who: str, method: str, path: str, body: object = None):
    data = None if body is None else json.dumps(body).encode()
    headers = {**credentials(site, who), "Content-Type": "application/json"}
    return send(site, method, f"{API}/{path}", data, headers)


def _uploaded(site: Site, tmp_path: Path, name: str, channel: str = "main", **index) -> Path:
    package = build_tar_bz2(tmp_path / name, name, index_overrides=index or None)
    who = "bearer:ci-other" if channel == "other" else "maintainer"
    reply = put(site, who, channel, package)
    assert reply.status in (200, 201), reply
    return package


def _solves(site: Site, tmp_path: Path, channel: str, spec: str):
    url = f"{site.base_url}/{channel}"
    scratch = tmp_path / f"solve-{len(list(tmp_path.iterdir()))}"
    scratch.mkdir()
    auth = write_auth_file(scratch / "auth.json", url, "reader", site.passwords["reader"])
    return run_install(
        url, [spec], scratch / "env", auth_file=auth, ca_file=site.ca_file, cache_dir=scratch / "c"
    )


# channel -> caller -> status of a patch (the maintainer's right, as replacing a file)
PATCHERS = {
    "main": {
        "none": 401,
        "reader": 403,
        "uploader": 403,
        "bearer:ci-main": 403,
        "apikey:ci-main": 403,
        "maintainer": 200,
    },
    "other": {"bearer:ci-main": 403, "bearer:ci-other": 200},
}
PATCH_CASES = [(c, w) for c, callers in PATCHERS.items() for w in callers]


@pytest.mark.basic_mode
@pytest.mark.parametrize(("channel", "who"), PATCH_CASES, ids=[f"{c}-{w}" for c, w in PATCH_CASES])
def test_who_may_patch_and_mark_broken(site: Site, tmp_path: Path, channel: str, who: str) -> None:
    name = f"p-{channel}-{who.replace(':', '-')}-{site.mode}-{RUN}"
    package = _uploaded(site, tmp_path, name, channel)
    where = f"{channel}/packages/noarch/{package.name}"
    patched = manage(site, who, "POST", f"{where}/patch", {"license": "Patched-1.0"})
    broken = manage(site, who, "POST", f"{where}/broken", {"reason": "rights test"})
    assert (patched.status, broken.status) == (PATCHERS[channel][who],) * 2, (patched, broken)
    if patched.status == 401:
        assert "WWW-Authenticate" in patched.headers
    assert (package.name in listed(site, channel)) == (broken.status != 200)


@pytest.mark.basic_mode
def test_a_patch_and_a_broken_mark_change_what_a_real_client_solves(
    site: Site, tmp_path: Path
) -> None:
    name = f"solved-{site.mode}-{RUN}"
    package = _uploaded(site, tmp_path, name)
    where = f"main/packages/noarch/{package.name}"
    assert _solves(site, tmp_path, "main", name).returncode == 0
    # A dependency nothing provides: the solve now fails, in both repodata forms.
    reply = manage(site, "maintainer", "POST", f"{where}/patch", {"depends": ["nowhere-to-be >=1"]})
    assert (reply.status, reply.body["result"]) == (200, "patched"), reply
    assert listed(site, "main")[package.name]["depends"] == ["nowhere-to-be >=1"]
    assert shard_mismatches(site, "main") == []
    unsolvable = _solves(site, tmp_path, "main", name)
    assert unsolvable.returncode != 0
    assert "nowhere-to-be" in unsolvable.stderr
    reply = manage(site, "maintainer", "DELETE", f"{where}/patch")
    assert reply.body["result"] == "unpatched"
    assert _solves(site, tmp_path, "main", name).returncode == 0
    # Broken: out of the index, still downloadable by its URL (existing lockfiles).
    reply = manage(site, "maintainer", "POST", f"{where}/broken", {"reason": "bad build"})
    assert reply.body["result"] == "broken"
    assert package.name not in listed(site, "main")
    assert shard_mismatches(site, "main") == []
    assert _solves(site, tmp_path, "main", name).returncode != 0
    download = fetch(
        f"{site.base_url}/main/noarch/{package.name}",
        ca_file=site.ca_file,
        auth=("reader", site.passwords["reader"]),
    )
    assert (download.status, download.body) == (200, package.read_bytes())
    assert manage(site, "maintainer", "DELETE", f"{where}/broken").body["result"] == "unbroken"
    assert _solves(site, tmp_path, "main", name).returncode == 0
    assert shard_mismatches(site, "main") == []


# (caller, source, target, move) -> status: the read right on the source, the upload right
# on the target (and the delete right on the source to move)
PROMOTIONS = {
    ("uploader", "main", "public", False): 201,  # reads main, uploads to public
    ("bearer:ci-main", "public", "main", False): 201,  # public is anonymous
    ("bearer:ci-other", "main", "other", False): 403,  # uploads to other, cannot read main
    ("reader", "main", "public", False): 403,  # reads main, no upload right on public
    ("uploader", "main", "public", True): 403,  # no delete right on main
    ("none", "main", "public", False): 401,
}
PROMOTION_CASES = list(PROMOTIONS)


@pytest.mark.basic_mode
@pytest.mark.parametrize(
    "case", PROMOTION_CASES, ids=["-".join(str(p) for p in c) for c in PROMOTION_CASES]
)
def test_who_may_promote(site: Site, tmp_path: Path, case: tuple[str, str, str, bool]) -> None:
    who, source, target, move = case
    name = f"promo-{who.replace(':', '-')}-{source}-{target}-{move}-{site.mode}-{RUN}".lower()
    package = build_tar_bz2(tmp_path / "dist", name)
    assert (
        put(site, "uploader" if source == "public" else "maintainer", source, package).status == 201
    )
    body = {"from": source, "file": f"noarch/{package.name}", "move": move}
    reply = manage(site, who, "POST", f"{target}/promote", body)
    expected = PROMOTIONS[case]
    assert reply.status == expected, reply
    assert (package.name in listed(site, target)) == (expected == 201)
    assert package.name in listed(site, source)  # a copy, or nothing done
    if expected == 201:
        assert reply.body["from"] == source and reply.body["result"] == "added"
        assert _solves(site, tmp_path, target, name).returncode == 0


def test_a_maintainer_moves_a_package_and_bad_requests_say_why(site: Site, tmp_path: Path) -> None:
    name = f"moved-{site.mode}-{RUN}"
    package = build_tar_bz2(tmp_path / "dist", name)
    assert put(site, "uploader", "public", package).status == 201
    # ci-main may delete nowhere: it cannot move out of public.
    body = {"from": "public", "file": f"noarch/{package.name}", "move": True}
    assert manage(site, "bearer:ci-main", "POST", "main/promote", body).status == 403
    bad = {
        "no source": ({"file": f"noarch/{package.name}"}, 400),
        "no such file": ({"from": "public", "file": "noarch/none-1.0-0.tar.bz2"}, 404),
        "path trick": ({"from": "public", "file": f"../public/noarch/{package.name}"}, 400),
        "no such channel": ({"from": "nowhere", "file": f"noarch/{package.name}"}, 404),
    }
    for label, (request, status) in bad.items():
        reply = manage(site, "bearer:ci-main", "POST", "main/promote", request)
        assert reply.status == status, (label, reply)
        assert reply.body.get("error"), (label, reply)
    patch = {"license": "MIT"}
    reply = manage(site, "maintainer", "POST", f"main/packages/noarch/{package.name}/patch", patch)
    assert reply.status == 404  # not in main
    assert package.name in listed(site, "public")


DECLARED_BROKEN = "declared-broken-1.0-0.tar.bz2"
DECLARED_PATCHED = "declared-patched-1.0-0.tar.bz2"


def test_what_the_inventory_declares_applies_from_the_first_upload(
    site: Site, tmp_path: Path
) -> None:
    for filename in (DECLARED_BROKEN, DECLARED_PATCHED):
        name = filename.removesuffix("-1.0-0.tar.bz2")
        package = build_tar_bz2(tmp_path / name, name)
        assert put(site, "maintainer", "main", package).status in (200, 201)
    now = listed(site, "main")
    assert DECLARED_BROKEN not in now
    assert now[DECLARED_PATCHED]["license"] == "Declared-1.0"
    assert shard_mismatches(site, "main") == []
