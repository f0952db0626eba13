"""The CI templates (templates/) read as their platforms read them.

Every script is valid bash; secrets reach scripts only through the environment; every
GitHub action has a stand-in in the integration suite; GitLab publishes on tags only; the
anaconda.org upload stays off unless asked for. tests/integration/test_templates.py runs
the templates for real against the uploading scenario's host; this file also checks the
reader (tests/support/cirunner.py) those runs rely on.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.support.cirunner import (
    STAND_INS,
    GithubExpression,
    GithubJob,
    GitlabPipeline,
    github_condition,
    gitlab_rule,
    load,
    substitute,
)

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
GITHUB = sorted((TEMPLATES / "github-actions").glob("*.yml"))
GITLAB = sorted((TEMPLATES / "gitlab-ci").glob("*.yml"))
ANACONDA_STEP = "Upload to anaconda.org (only when ANACONDA_UPLOAD is true)"
ANACONDA_JOB = "conda-publish-anaconda"


def ids(paths: list[Path]) -> list[str]:
    return [p.name for p in paths]


def contexts(**variables: str) -> dict[str, dict[str, str]]:
    return {
        "vars": variables,
        "secrets": {},
        "runner": {"temp": "/t"},
        "github": {"workspace": "/w"},
    }


def steps(path: Path) -> list[dict]:
    return [s for job in load(path)["jobs"].values() for s in job["steps"]]


def bash_syntax(script: str) -> str:
    done = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
    return done.stderr


def strings(node: object, where: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], str]]:
    """Every string in a YAML tree with the keys that lead to it."""
    if isinstance(node, dict):
        return [x for k, v in node.items() for x in strings(v, (*where, str(k)))]
    if isinstance(node, list):
        return [x for v in node for x in strings(v, where)]
    return [(where, node)] if isinstance(node, str) else []


def test_the_templates_are_all_there() -> None:
    assert ids(GITHUB) == ["conda-publish-ssh.yml", "conda-publish.yml"]
    assert ids(GITLAB) == ["conda-publish-ssh.gitlab-ci.yml", "conda-publish.gitlab-ci.yml"]
    assert (TEMPLATES / "README.md").is_file()


@pytest.mark.parametrize("path", GITHUB, ids=ids(GITHUB))
def test_github_scripts_are_bash_with_no_expression_inside(path: Path) -> None:
    """GitHub pastes `${{ }}` into a script before bash reads it: a secret would land in the
    script file, and a value holding quotes would be script injection. Only env: may."""
    for step in steps(path):
        if "run" in step:
            assert "${{" not in step["run"], step["name"]
            assert bash_syntax(step["run"]) == "", step["name"]


@pytest.mark.parametrize("path", GITHUB, ids=ids(GITHUB))
def test_every_github_action_has_a_stand_in_in_the_tests(path: Path) -> None:
    used = {s["uses"].split("@")[0] for s in steps(path) if "uses" in s}
    assert used <= set(STAND_INS), used - set(STAND_INS)
    assert all(("uses" in s) != ("run" in s) for s in steps(path))


@pytest.mark.parametrize("path", GITHUB, ids=ids(GITHUB))
def test_secrets_reach_github_steps_only_through_env_or_the_checkout_token(path: Path) -> None:
    found = [(where, text) for where, text in strings(load(path)) if "secrets." in text]
    assert found
    for where, _ in found:
        assert where[-2] == "env" or where[-2:] == ("with", "token"), where


@pytest.mark.parametrize("path", GITHUB, ids=ids(GITHUB))
def test_github_checkouts_leave_no_token_in_the_git_config(path: Path) -> None:
    """actions/checkout keeps its token in the clone's .git/config unless told not to, where
    the recipe's build and every later step could read it (the SSH variant's is a token to
    the ops repository). No later step runs git."""
    checkouts = [s for s in steps(path) if s.get("uses", "").startswith("actions/checkout@")]
    assert checkouts
    for step in checkouts:
        assert (step.get("with") or {}).get("persist-credentials") is False, step["name"]


@pytest.mark.parametrize("path", GITHUB, ids=ids(GITHUB))
def test_github_anaconda_upload_is_off_unless_the_variable_says_true(path: Path) -> None:
    [step] = [s for s in steps(path) if s.get("name") == ANACONDA_STEP]
    assert not github_condition(step["if"], contexts(), failed=False)
    assert not github_condition(step["if"], contexts(ANACONDA_UPLOAD="false"), failed=False)
    assert github_condition(step["if"], contexts(ANACONDA_UPLOAD="true"), failed=False)
    # Nor after a failed publish.
    assert not github_condition(step["if"], contexts(ANACONDA_UPLOAD="true"), failed=True)


@pytest.mark.parametrize("path", GITLAB, ids=ids(GITLAB))
def test_gitlab_job_scripts_are_bash(path: Path, tmp_path: Path) -> None:
    pipeline = GitlabPipeline(path, workspace=tmp_path, temp=tmp_path, base_env={}, variables={})
    for name, job in pipeline.jobs().items():
        script = "\n".join([*(job.get("before_script") or []), *job["script"]])
        assert bash_syntax(script) == "", name


@pytest.mark.parametrize("path", GITLAB, ids=ids(GITLAB))
def test_gitlab_publishes_on_tags_only_and_anaconda_only_when_asked(
    path: Path, tmp_path: Path
) -> None:
    def created(**variables: str) -> set[str]:
        pipeline = GitlabPipeline(
            path, workspace=tmp_path, temp=tmp_path, base_env={}, variables=variables
        )
        return {name for name, job in pipeline.jobs().items() if pipeline.created(job)[0]}

    publish = "conda-publish-ssh" if "ssh" in path.name else "conda-publish"
    assert created() == {"conda-build"}
    assert created(ANACONDA_UPLOAD="true") == {"conda-build"}
    assert created(CI_COMMIT_TAG="v1.0") == {"conda-build", publish}
    assert created(CI_COMMIT_TAG="v1.0", ANACONDA_UPLOAD="false") == {"conda-build", publish}
    assert created(CI_COMMIT_TAG="v1.0", ANACONDA_UPLOAD="true") == {
        "conda-build",
        publish,
        ANACONDA_JOB,
    }


@pytest.mark.parametrize("path", GITLAB, ids=ids(GITLAB))
def test_gitlab_build_artifacts_carry_the_output_folder(path: Path) -> None:
    pipeline = load(path)
    assert pipeline["conda-build"]["artifacts"]["paths"] == [
        pipeline["variables"]["OUTPUT_DIR"] + "/"
    ]


def test_every_template_pins_the_same_rattler_build() -> None:
    pins = {
        pin
        for path in [*GITHUB, *GITLAB]
        for pin in re.findall(r"py-rattler-build==[0-9.]+", path.read_text())
    }
    assert len(pins) == 1, pins


# -- the reader itself ------------------------------------------------------------------


def test_github_expressions() -> None:
    ctx = contexts(CHANNEL="", OTHER="x")
    assert substitute("${{ vars.CHANNEL || 'main' }}", ctx) == "main"
    assert substitute("${{ vars.OTHER || 'main' }}", ctx) == "x"
    assert substitute("a ${{ runner.temp }}/b", ctx) == "a /t/b"
    assert GithubExpression(ctx).evaluate("vars.OTHER == 'X'") is True  # GitHub ignores case
    assert GithubExpression(ctx).evaluate("!(vars.OTHER != 'x') && always()") is True
    assert github_condition("always()", ctx, failed=True)
    assert not github_condition(None, ctx, failed=True)
    assert github_condition("${{ vars.OTHER == 'x' }}", ctx, failed=False)


@pytest.mark.parametrize(
    "text", ["contains(github.ref, 'v')", "github.ref == 'x'", "vars.A == 'x", "env.A"]
)
def test_github_expressions_the_reader_does_not_know_raise(text: str) -> None:
    with pytest.raises(ValueError):
        GithubExpression(contexts()).evaluate(text)


def test_gitlab_rules() -> None:
    assert gitlab_rule("$TAG", {"TAG": "v1"})
    assert not gitlab_rule("$TAG", {"TAG": ""})
    assert not gitlab_rule('$TAG && $A == "true"', {"TAG": "v1", "A": "yes"})
    assert gitlab_rule('$TAG && $A == "true" || $B', {"B": "1"})
    assert gitlab_rule("$A != 'x'", {})
    with pytest.raises(ValueError):
        gitlab_rule("($TAG)", {})
    with pytest.raises(ValueError):
        gitlab_rule("$TAG =~ /^v/", {})


def test_the_runner_context_is_refused_where_github_has_none_yet(tmp_path: Path) -> None:
    workflow = tmp_path / "w.yml"
    workflow.write_text(
        "defaults: {run: {shell: bash}}\n"
        "jobs:\n  j:\n    env: {SOCK: '${{ runner.temp }}/s'}\n    steps: [{run: 'true'}]\n"
    )
    job = GithubJob(
        workflow,
        "j",
        workspace=tmp_path,
        temp=tmp_path,
        base_env={"PATH": "/usr/bin:/bin"},
        variables={},
        secrets={},
        actions={},
    )
    with pytest.raises(ValueError, match="runner.temp"):
        job.run()


# -- publishing with the ecosystem's own tools, on a platform matrix ---------------------

HTTPS_GITHUB = TEMPLATES / "github-actions" / "conda-publish.yml"
HTTPS_GITLAB = TEMPLATES / "gitlab-ci" / "conda-publish.gitlab-ci.yml"
UPLOAD = re.compile(r"rattler-build upload artifactory\s*\\?\s*--url \"\$\{CONDAPORT_URL%/\}\"")


def test_https_templates_publish_with_rattler_build_not_curl() -> None:
    publish = load(HTTPS_GITHUB)["jobs"]["publish"]["steps"]
    [step] = [s for s in publish if s.get("name", "").startswith("Publish to the condaport")]
    gitlab = "\n".join(load(HTTPS_GITLAB)["conda-publish"]["script"])
    for script in (step["run"], gitlab):
        assert UPLOAD.search(script), script
        assert "curl" not in script
        assert "ARTIFACTORY_TOKEN" in script  # the token from the environment, no argument
        assert "--token" not in script


def test_the_curl_fallback_is_documented_and_is_bash() -> None:
    readme = (TEMPLATES / "README.md").read_text()
    [fallback] = re.findall(r"### Fallback: curl.*?```bash\n(.*?)```", readme, re.S)
    assert "curl" in fallback and "--upload-file" in fallback
    assert "--config -" in fallback  # the token through stdin, not an argument
    assert bash_syntax(fallback) == ""


def test_github_builds_on_linux_macos_and_windows_and_publishes_once() -> None:
    jobs = load(HTTPS_GITHUB)["jobs"]
    runners = jobs["build"]["strategy"]["matrix"]["runner"]
    assert jobs["build"]["runs-on"] == "${{ matrix.runner }}"
    assert {r.split("-")[0] for r in runners} == {"ubuntu", "macos", "windows"}
    assert jobs["publish"]["needs"] == "build"
    uses = [s.get("uses", "").split("@")[0] for s in jobs["publish"]["steps"]]
    assert uses[0] == "actions/download-artifact"
    # pixi fetches rattler-build with the system store, before the private CA is set up;
    # the CA never becomes a job-wide SSL_CERT_FILE.
    names = [s.get("name") for s in jobs["publish"]["steps"]]
    assert names.index("Install rattler-build (conda-forge)") < names.index(
        "Trust the channel's CA"
    )
    assert not re.search(r"SSL_CERT_FILE=[^\n]*GITHUB_ENV", HTTPS_GITHUB.read_text())


def test_gitlab_builds_on_linux_and_macos_runners() -> None:
    build = load(HTTPS_GITLAB)["conda-build"]
    tags = [entry["RUNNER_TAG"] for entry in build["parallel"]["matrix"]]
    assert build["tags"] == ["$RUNNER_TAG"]
    assert any("linux" in t for t in tags) and any("macos" in t for t in tags)
