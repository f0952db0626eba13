"""The CI templates in templates/, run for real against the uploading scenario's host.

Each template is read as its platform reads it (tests/support/cirunner.py) and its shell
lines run in order with bash in a fresh workspace holding a copy of the sample recipe
(tests/packages/hello-condaport) under a version of its own, with the template's variables
and secrets pointing at this host: its URL, its CA, the upload token `ci-main` of the
scenario's inventory. Then the channel's repodata must list the package and py-rattler
must install it (tests/support/client.py).

What only the CI platform does has a stand-in, named in each run's printed summary:
- actions/checkout: the test lays out the workspace. The SSH variants' condaport checkout
  (`path: condaport` on GitHub, the submodule on GitLab) is a link to this project.
- actions/setup-python and the python:3.12 image: a fresh venv holding only pip, first on
  PATH, so the templates' own `pip install` lines fill it from PyPI.
- the build matrix: one entry runs (this machine, Linux); upload-artifact and
  download-artifact do nothing, the jobs share one workspace.
- the rattler-build and pixi binaries (prefix-dev/setup-pixi, the pixi image): neither can
  be installed here, so tests/support/rattler_build_cli.py stands in for both: its
  `rattler-build upload artifactory` runs rattler-build's upload code through
  py-rattler-build (the same code the binary runs), with the CLI's options and its
  ARTIFACTORY_TOKEN; its `pixi` only answers `global install rattler-build`.
- SSH: the SSH variants run playbooks/publish.yml with the scenario's own Ansible
  inventory (MOLECULE_INVENTORY_FILE) in place of one that reaches the hosts by SSH; its
  container connection stands in for SSH. Their SSH agent step still runs, with a throwaway
  key and known_hosts line, and must clean up after itself, but nothing connects through it.
- anaconda.org is unreachable from here: every run asserts its step or job is skipped
  when nothing asks for it, which is the templates' default.

Set CONDAPORT_CI_VENV to a folder to keep the venv between runs while iterating.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.cirunner import GithubJob, GitlabPipeline, Outcome, StandIn
from tests.support.client import run_install, write_auth_file
from tests.support.live import fetch, require

PROJECT = Path(__file__).resolve().parents[2]
TEMPLATES = PROJECT / "templates"
RECIPE = PROJECT / "tests" / "packages" / "hello-condaport" / "recipe.yaml"
STAMP = int(time.time())
GITHUB_UPLOAD_STEP = "Publish to the condaport channel (HTTPS, upload token)"
STAND_IN_CLI = PROJECT / "tests" / "support" / "rattler_build_cli.py"
GITHUB_SSH_STEP = "Publish with playbooks/publish.yml (SSH)"
ANACONDA_STEP = "Upload to anaconda.org (only when ANACONDA_UPLOAD is true)"
ANACONDA_JOB = "conda-publish-anaconda"


@dataclass(frozen=True)
class Site:
    base_url: str
    ca_file: Path
    reader_password: str
    tokens: dict[str, str]


@dataclass(frozen=True)
class Runner:
    """Where a template runs: its workspace, runner temp, home and base environment."""

    workspace: Path
    temp: Path
    home: Path
    env: dict[str, str]
    curl_log: Path
    tools: Path  # the rattler-build and pixi stand-ins (not on PATH until a step asks)


@pytest.fixture(scope="session")
def site() -> Site:
    inventory = json.loads(require("CONDAPORT_UPLOAD"))
    return Site(
        base_url=require("CONDAPORT_BASE_URL").rstrip("/"),
        ca_file=Path(require("CONDAPORT_CA")),
        reader_password=next(u["password"] for u in inventory["users"] if u["name"] == "reader"),
        tokens={t["name"]: t["token"] for t in inventory["tokens"]},
    )


@pytest.fixture(scope="session")
def ci_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh Python with pip and nothing else: the stand-in for actions/setup-python and
    the python:3.12 image. The templates' own install lines fill it from PyPI."""
    kept = os.environ.get("CONDAPORT_CI_VENV")
    venv = Path(kept) if kept else tmp_path_factory.mktemp("ci") / "venv"
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    return venv / "bin"


@pytest.fixture
def runner(ci_bin: Path, tmp_path: Path) -> Runner:
    """A clean runner: no project venv, none of this machine's CA overrides, an empty home;
    curl on PATH through a shim that records its arguments (no secret may be among them)."""
    dirs = {name: tmp_path / name for name in ("workspace", "temp", "home", "tmp", "shim", "tools")}
    for folder in dirs.values():
        folder.mkdir()
    curl_log = tmp_path / "curl-argv.log"
    shim = dirs["shim"] / "curl"
    shim.write_text('#!/bin/sh\nprintf "%s\\n" "$*" >> "$CURL_ARGV_LOG"\nexec /usr/bin/curl "$@"\n')
    shim.chmod(0o755)
    # This test's Python has py-rattler-build: the stand-ins run the upload code with it.
    for tool in ("rattler-build", "pixi"):
        wrapper = dirs["tools"] / tool
        wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{STAND_IN_CLI}" {tool} "$@"\n')
        wrapper.chmod(0o755)
    system_path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    env = {
        "PATH": f"{ci_bin}:{dirs['shim']}:{system_path}",
        "HOME": str(dirs["home"]),
        "TMPDIR": str(dirs["tmp"]),
        "LANG": "C.UTF-8",
        "CURL_ARGV_LOG": str(curl_log),
    }
    # The runner's own settings: this machine's pip configuration (index, certificate);
    # and what the SSH stand-in uses: podman's configuration and the connection plugin
    # the scenario's inventory names.
    env.update({k: v for k, v in os.environ.items() if k.startswith("PIP_")})
    for name in ("CONTAINERS_CONF", "ANSIBLE_CONNECTION_PLUGINS"):
        if name in os.environ:
            env[name] = os.environ[name]
    return Runner(dirs["workspace"], dirs["temp"], dirs["home"], env, curl_log, dirs["tools"])


def lay_out(runner: Runner, version: str, *, condaport: bool = False) -> None:
    """The team's repository: the sample recipe under its own version (and, for the SSH
    variants, condaport beside it)."""
    text = RECIPE.read_text()
    assert text.count("version: 1.0.0\n") == 1
    (runner.workspace / "recipe").mkdir()
    (runner.workspace / "recipe" / "recipe.yaml").write_text(
        text.replace("version: 1.0.0\n", f"version: {version}\n")
    )
    if condaport:
        (runner.workspace / "condaport").symlink_to(PROJECT)


def checkout(runner: Runner) -> StandIn:
    def stand_in(inputs: dict) -> None:
        if "path" in inputs:
            assert inputs["path"] == "condaport" and inputs.get("repository"), inputs
            assert (runner.workspace / "condaport").is_symlink()
        else:
            assert (runner.workspace / "recipe" / "recipe.yaml").is_file()

    return stand_in


def setup_python(runner: Runner) -> StandIn:
    def stand_in(inputs: dict) -> None:
        assert inputs.get("python-version"), inputs
        assert Path(runner.env["PATH"].split(":")[0], "python").exists()

    return stand_in


def github_job(
    runner: Runner,
    name: str,
    variables: dict,
    secrets: dict,
    job: str = "publish",
    matrix: dict | None = None,
) -> GithubJob:
    def artifact_upload(inputs: dict) -> None:
        assert inputs["name"].startswith("packages-") and inputs.get("path"), inputs
        assert list(runner.workspace.glob("output/*/*.conda")), "nothing to keep"

    def artifact_download(inputs: dict) -> None:
        assert inputs == {"pattern": "packages-*", "merge-multiple": "True", "path": "output"}

    github = GithubJob(
        TEMPLATES / "github-actions" / name,
        job,
        workspace=runner.workspace,
        temp=runner.temp,
        base_env=runner.env,
        variables=variables,
        secrets=secrets,
        actions={},
        matrix=matrix,
    )
    github.actions = {
        "actions/checkout": checkout(runner),
        "actions/setup-python": setup_python(runner),
        "actions/upload-artifact": artifact_upload,
        "actions/download-artifact": artifact_download,
        # setup-pixi puts pixi on PATH; `pixi global install` adds rattler-build beside it.
        "prefix-dev/setup-pixi": lambda inputs: github.added_path.append(str(runner.tools)),
    }
    return github


def report(title: str, outcome: Outcome) -> None:
    print(f"\n{title}\n{outcome.summary()}")


def listed(site: Site, channel: str, version: str) -> list[str]:
    auth = None if channel == "public" else ("reader", site.reader_password)
    answer = fetch(
        f"{site.base_url}/{channel}/noarch/repodata.json", ca_file=site.ca_file, auth=auth
    )
    assert answer.status == 200, answer.status
    data = json.loads(answer.body)
    records = {**data["packages"], **data["packages.conda"]}
    return [
        file
        for file, record in records.items()
        if record["name"] == "hello-condaport" and record["version"] == version
    ]


def assert_installs(site: Site, tmp_path: Path, channel: str, version: str) -> None:
    url = f"{site.base_url}/{channel}"
    auth = None
    if channel != "public":
        auth = write_auth_file(tmp_path / "auth.json", url, "reader", site.reader_password)
    prefix = tmp_path / "env"
    result = run_install(
        url,
        [f"hello-condaport=={version}"],
        prefix,
        auth_file=auth,
        ca_file=site.ca_file,
        cache_dir=tmp_path / "rattler-cache",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (prefix / "share/hello-condaport/hello.txt").read_text() == "hello from condaport\n"


def assert_secret_free(outcome: Outcome, runner: Runner, *secrets: str) -> None:
    text = outcome.output
    argv = runner.curl_log.read_text() if runner.curl_log.exists() else ""
    for secret in secrets:
        assert secret not in text, "a secret reached the job's log"
        assert secret not in argv, "a secret was a command-line argument of curl"


def throwaway_ssh_key(tmp_path: Path) -> tuple[str, str]:
    key = tmp_path / "deploy-key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ci", "-f", str(key)], check=True
    )
    private = key.read_text()
    public = Path(f"{key}.pub").read_text().strip()
    key.unlink()
    return private, f"conda.example.org {public}"


def agent_runs(pid: str) -> bool:
    """Whether ssh-agent `pid` still runs. A killed agent that nobody has reaped yet is a
    zombie (state Z): it holds no key and no socket. The agent daemonizes, so its parent is
    PID 1, and an init that does not reap promptly (CI containers) leaves zombies behind."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    command, _, rest = stat.partition(") ")
    return command.endswith("(ssh-agent") and not rest.startswith(("Z", "X"))


def assert_agent_gone(runner: Runner, pid: str | None = None) -> None:
    if pid:
        assert not agent_runs(pid), f"ssh-agent {pid} still runs"
    tmp = Path(runner.env["TMPDIR"])
    sockets = [*runner.temp.glob("ssh-agent.sock"), *tmp.glob("ssh-*/agent.*")]
    assert sockets == [], sockets


# -- token upload (HTTPS) -----------------------------------------------------------------


def test_github_actions_template_publishes_with_an_upload_token(
    site: Site, runner: Runner, tmp_path: Path
) -> None:
    """The build job (its ubuntu entry of the platform matrix), then the publish job, whose
    `rattler-build upload artifactory` runs through the py-rattler-build stand-in."""
    version = f"1.{STAMP}.1"
    lay_out(runner, version)
    token = site.tokens["ci-main"]
    variables = {"CONDAPORT_URL": site.base_url}
    secrets = {"CONDAPORT_UPLOAD_TOKEN": token, "CONDAPORT_CA_CERT": site.ca_file.read_text()}
    build = github_job(
        runner, "conda-publish.yml", variables, secrets, "build", {"runner": "ubuntu-24.04"}
    )
    assert build.job["strategy"]["matrix"]["runner"] == [
        "ubuntu-24.04",
        "macos-14",
        "windows-2022",
    ]
    built = build.run()
    report("GitHub Actions, conda-publish.yml, job build (ubuntu-24.04)", built)
    assert built.ok, built.failure()
    job = github_job(runner, "conda-publish.yml", variables, secrets)
    outcome = job.run()
    report("GitHub Actions, conda-publish.yml, job publish", outcome)
    assert outcome.ok, outcome.failure()
    expected = [s["name"] for s in job.steps() if "run" in s and s["name"] != ANACONDA_STEP]
    assert [s.name for s in outcome.steps if s.ran] == expected
    assert not outcome.step(ANACONDA_STEP).ran
    upload = outcome.step(GITHUB_UPLOAD_STEP).output
    assert "artifactory upload through py-rattler-build" in upload, upload
    assert re.search(rf"uploaded hello-condaport-{re.escape(version)}-\S+\.conda", upload), upload
    assert len(listed(site, "main", version)) == 1
    assert_installs(site, tmp_path, "main", version)

    # Re-running the publish step (a retried job) is harmless: the same file answers 200.
    again = job.run(only=[GITHUB_UPLOAD_STEP])
    assert again.ok, again.failure()
    # A token without rights on the channel fails the job (py-rattler-build's message does
    # not carry the status; the channel's 403 for this token is uploading/test_rights.py's).
    job.secrets["CONDAPORT_UPLOAD_TOKEN"] = site.tokens["ci-other"]
    refused = job.run(only=[GITHUB_UPLOAD_STEP])
    assert not refused.ok and "upload failed" in refused.output, refused.output
    assert_secret_free(built, runner, token)
    assert_secret_free(outcome, runner, token)
    assert_secret_free(refused, runner, site.tokens["ci-other"])


def test_gitlab_template_publishes_with_an_upload_token(
    site: Site, runner: Runner, tmp_path: Path
) -> None:
    """Into the anonymous channel `public` (the project variable overrides the file's
    `main`), the CA as a File variable, on a tag pipeline."""
    version = f"1.{STAMP}.2"
    lay_out(runner, version)
    token = site.tokens["ci-main"]
    # The publish job's image (ghcr.io/prefix-dev/pixi) has pixi: here the stand-ins.
    env = {**runner.env, "PATH": f"{runner.tools}:{runner.env['PATH']}"}
    pipeline = GitlabPipeline(
        TEMPLATES / "gitlab-ci" / "conda-publish.gitlab-ci.yml",
        workspace=runner.workspace,
        temp=runner.temp,
        base_env=env,
        variables={
            "CONDAPORT_URL": site.base_url,
            "CONDAPORT_CHANNEL": "public",
            "CONDAPORT_UPLOAD_TOKEN": token,
            "CI_COMMIT_TAG": f"v{version}",
        },
        file_variables={"CONDAPORT_CA_CERT": site.ca_file.read_text()},
    )
    outcome = pipeline.run()
    report("GitLab CI, conda-publish.gitlab-ci.yml", outcome)
    assert outcome.ok, outcome.failure()
    assert [s.name for s in outcome.steps if s.ran] == ["conda-build", "conda-publish"]
    assert not outcome.step(ANACONDA_JOB).ran
    published = outcome.step("conda-publish").output
    assert "artifactory upload through py-rattler-build" in published, published
    assert re.search(rf"uploaded hello-condaport-{re.escape(version)}-\S+\.conda", published), (
        published
    )
    assert len(listed(site, "public", version)) == 1
    assert listed(site, "main", version) == []
    assert_installs(site, tmp_path, "public", version)
    assert_secret_free(outcome, runner, token)


# -- playbooks/publish.yml (SSH; the container connection stands in) ---------------------------


def test_github_actions_ssh_template_publishes_with_the_playbook(
    site: Site, runner: Runner, tmp_path: Path
) -> None:
    version = f"1.{STAMP}.3"
    lay_out(runner, version, condaport=True)
    private_key, known_hosts = throwaway_ssh_key(tmp_path)
    vault_password = os.urandom(12).hex()
    job = github_job(
        runner,
        "conda-publish-ssh.yml",
        variables={
            "CONDAPORT_REPOSITORY": "example/condaport",
            "CONDAPORT_INVENTORY": require("MOLECULE_INVENTORY_FILE"),
            "CONDAPORT_SSH_KNOWN_HOSTS": known_hosts,
        },
        secrets={
            "CONDAPORT_REPOSITORY_TOKEN": "read-token-for-the-checkout",
            "CONDAPORT_SSH_PRIVATE_KEY": private_key,
            "CONDAPORT_VAULT_PASSWORD": vault_password,
        },
    )
    outcome = job.run()
    report("GitHub Actions, conda-publish-ssh.yml", outcome)
    assert outcome.ok, outcome.failure()
    assert not outcome.step(ANACONDA_STEP).ran
    played = outcome.step(GITHUB_SSH_STEP).output
    assert re.search(r"\S+\s*:\s*ok=\d+\s+changed=\d+\s+unreachable=0\s+failed=0", played), played
    [file] = listed(site, "main", version)
    assert file in played  # the play's summary names what it added
    assert_installs(site, tmp_path, "main", version)
    assert known_hosts in (runner.home / ".ssh" / "known_hosts").read_text()
    assert_agent_gone(runner, job.added_env.get("SSH_AGENT_PID"))
    assert_secret_free(outcome, runner, vault_password, private_key.splitlines()[1])


def test_gitlab_ssh_template_publishes_with_the_playbook(
    site: Site, runner: Runner, tmp_path: Path
) -> None:
    version = f"1.{STAMP}.4"
    path = TEMPLATES / "gitlab-ci" / "conda-publish-ssh.gitlab-ci.yml"
    # The runner's submodule checkout is the stand-in's link; the file must ask for it.
    assert (
        GitlabPipeline(
            path, workspace=runner.workspace, temp=runner.temp, base_env={}, variables={}
        )
        .variables({})
        .get("GIT_SUBMODULE_STRATEGY")
        == "recursive"
    )
    lay_out(runner, version, condaport=True)
    private_key, known_hosts = throwaway_ssh_key(tmp_path)
    vault_password = os.urandom(12).hex()
    pipeline = GitlabPipeline(
        path,
        workspace=runner.workspace,
        temp=runner.temp,
        base_env=runner.env,
        variables={
            "CONDAPORT_INVENTORY": require("MOLECULE_INVENTORY_FILE"),
            "CONDAPORT_VAULT_PASSWORD": vault_password,
            "CI_COMMIT_TAG": f"v{version}",
        },
        file_variables={
            "CONDAPORT_SSH_PRIVATE_KEY": private_key,
            "CONDAPORT_SSH_KNOWN_HOSTS": known_hosts + "\n",
        },
    )
    outcome = pipeline.run()
    report("GitLab CI, conda-publish-ssh.gitlab-ci.yml", outcome)
    assert outcome.ok, outcome.failure()
    assert [s.name for s in outcome.steps if s.ran] == ["conda-build", "conda-publish-ssh"]
    assert not outcome.step(ANACONDA_JOB).ran
    played = outcome.step("conda-publish-ssh").output
    assert re.search(r"\S+\s*:\s*ok=\d+\s+changed=\d+\s+unreachable=0\s+failed=0", played), played
    [file] = listed(site, "main", version)
    assert file in played
    assert_installs(site, tmp_path, "main", version)
    assert_agent_gone(runner)
    assert_secret_free(outcome, runner, vault_password, private_key.splitlines()[1])
