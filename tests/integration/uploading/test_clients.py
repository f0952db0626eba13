"""The real clients: rattler-build's own upload code (artifactory with a token or with the
auth file's password, quetz with an API key or the auth file) and curl -T; py-rattler
installs what was uploaded, and a refusal reaches the client as a failure."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.client import write_auth_file
from tests.support.pkgbuild import build_tar_bz2
from tests.support.uploader import run_upload, write_token_auth_file
from uploading.site import RUN, Site, credentials, installs, listed


def built(folder: Path, name: str) -> Path:
    """A .conda as rattler-build writes it, info/about.json included (its artifactory
    upload reads the package's metadata from there)."""
    import rattler_build

    files = folder / f"{name}-files"
    (files / "share" / name).mkdir(parents=True)
    (files / "share" / name / "data.txt").write_text(f"payload of {name}\n")
    rattler_build.assemble_package(
        name=name,
        version="1.0",
        target_platform="noarch",
        build_string="0",
        output_dir=folder,
        files_dir=files,
        noarch="generic",
        summary=f"{name}, uploaded by the condaport test suite",
        license="Apache-2.0",
    )
    return folder / f"{name}-1.0-0.conda"


def test_rattler_build_artifactory_upload_with_a_token_then_py_rattler_installs_it(
    site: Site, tmp_path: Path
) -> None:
    package = built(tmp_path, f"art-token-{RUN}")
    started = time.monotonic()
    result = run_upload(
        "artifactory",
        site.base_url,
        "main",
        [package],
        ca_file=site.ca_file,
        cache_dir=tmp_path / "cache",
        token=site.tokens["ci-main"],
    )
    uploaded = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-2000:]
    assert package.name in listed(site, "main")
    installs(site, tmp_path, "main", f"art-token-{RUN}")
    print(f"artifactory upload (token) answered after {uploaded:.2f} s, installable at once")


@pytest.mark.basic_mode
def test_rattler_build_artifactory_upload_with_a_password_from_the_auth_file(
    site: Site, tmp_path: Path
) -> None:
    package = built(tmp_path, f"art-user-{RUN}-{site.mode}")
    auth = write_auth_file(
        tmp_path / "auth.json", site.base_url, "uploader", site.passwords["uploader"]
    )
    result = run_upload(
        "artifactory",
        site.base_url,
        "main",
        [package],
        ca_file=site.ca_file,
        cache_dir=tmp_path / "cache",
        auth_file=auth,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert package.name in listed(site, "main")


@pytest.mark.parametrize("how", ["api_key", "auth_file"])
def test_rattler_build_quetz_upload(site: Site, tmp_path: Path, how: str) -> None:
    package = built(tmp_path, f"quetz-{how.replace('_', '-')}-{RUN}")
    token = site.tokens["ci-main"]
    auth = write_token_auth_file(tmp_path / "auth.json", site.host, "CondaToken", token)
    result = run_upload(
        "quetz",
        site.base_url,
        "public",
        [package],
        ca_file=site.ca_file,
        cache_dir=tmp_path / "cache",
        token=token if how == "api_key" else None,
        auth_file=auth if how == "auth_file" else None,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert package.name in listed(site, "public")


def test_the_real_client_reports_a_refusal(site: Site, tmp_path: Path) -> None:
    package = built(tmp_path, f"refused-{RUN}")
    result = run_upload(
        "artifactory",
        site.base_url,
        "other",
        [package],
        ca_file=site.ca_file,
        cache_dir=tmp_path / "cache",
        token=site.tokens["ci-main"],
    )
    assert result.returncode != 0
    assert package.name not in listed(site, "other")


def _curl(site: Site, config: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """curl with its secrets in a config read from stdin (never in the argument list)."""
    env = {k: v for k, v in os.environ.items() if k not in ("CURL_CA_BUNDLE", "SSL_CERT_DIR")}
    return subprocess.run(
        ["curl", "--silent", "--show-error", "--cacert", str(site.ca_file), "-K", "-", *argv],
        input=config,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("who", ["uploader", "bearer:ci-main"])
def test_curl_upload_answers_201_with_json(site: Site, tmp_path: Path, who: str) -> None:
    package = build_tar_bz2(tmp_path, f"curl-{who.replace(':', '-')}-{RUN}")
    header = credentials(site, who)["Authorization"]
    result = _curl(
        site,
        f'header = "Authorization: {header}"\n',
        "--write-out",
        "\n%{http_code}",
        "-T",
        str(package),
        f"{site.base_url}/main/noarch/{package.name}",
    )
    body, _, code = result.stdout.rpartition("\n")
    assert code == "201", result.stdout + result.stderr
    assert json.loads(body)["result"] == "added"
    assert package.name in listed(site, "main")
