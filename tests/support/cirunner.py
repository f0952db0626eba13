"""Run a CI template's shell lines on this machine, the way its CI platform would.

GitHub Actions (`GithubJob`): a job's steps in order. A `run:` is written to a file and run
with `bash --noprofile --norc -eo pipefail FILE` (what `shell: bash` means there) in the
workspace or the step's `working-directory`; the workflow's, the job's and the step's
`env:` are merged, `${{ ... }}` replaced from the given `vars` and `secrets` and the runner
context, and what a step appends to `$GITHUB_ENV` / `$GITHUB_PATH` reaches later steps.
`if:` is evaluated. A `uses:` step cannot run here: the caller names a stand-in for each
action it expects (`STAND_INS` lists them), and any other action fails the run.

GitLab CI (`GitlabPipeline`): the jobs whose `rules:` match, in stage order; each job's
`before_script` and `script` in one `bash -eo pipefail` process (the runner's bash shell),
with the project's variables over the job's over the file's `variables:`. File-type
variables are written to files and passed as their paths, as the runner does.

Only the expressions and keys the templates use are understood; anything else raises, so
a template cannot grow a condition or a key that the tests would silently misread.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

# The GitHub actions the templates may use, and what stands in for each in the tests.
STAND_INS = {
    "actions/checkout": "the test lays out the workspace (the recipe; condaport at `path`)",
    "actions/setup-python": "a fresh venv (pip only) first on PATH",
    "actions/upload-artifact": "nothing: the jobs share one workspace",
    "actions/download-artifact": "nothing: the build job's output is in the shared workspace",
    "prefix-dev/setup-pixi": (
        "a pixi that only answers `global install rattler-build`, beside a rattler-build whose"
        " `upload` runs the same upload code through py-rattler-build (no binary here)"
    ),
}
# The keys a GitLab job of the templates may have; `image`, `tags`, `parallel` and
# `artifacts` are the runner's business (stand-ins: this machine, one entry of a matrix,
# one workspace for all jobs).
GITLAB_JOB_KEYS = {
    "stage",
    "image",
    "tags",
    "parallel",
    "needs",
    "rules",
    "script",
    "before_script",
    "artifacts",
    "variables",
}
GITLAB_TOP_KEYS = {"variables", "stages"}
STEP_TIMEOUT = 900


@dataclass
class StepResult:
    name: str
    ran: bool
    reason: str
    returncode: int | None = None
    output: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.ran or self.returncode == 0


@dataclass
class Outcome:
    steps: list[StepResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.steps)

    @property
    def output(self) -> str:
        return "\n".join(s.output for s in self.steps)

    def step(self, name: str) -> StepResult:
        found = [s for s in self.steps if s.name == name]
        assert len(found) == 1, f"no single step named {name!r}: {[s.name for s in self.steps]}"
        return found[0]

    def summary(self) -> str:
        lines = []
        for s in self.steps:
            state = f"exit {s.returncode}, {s.seconds:.1f} s" if s.ran else f"skipped: {s.reason}"
            lines.append(f"  {s.name}: {state}")
        return "\n".join(lines)

    def failure(self) -> str:
        """The first failed step's name and the end of its output, for assertion messages."""
        for s in self.steps:
            if not s.ok:
                return f"{s.name} failed (exit {s.returncode}):\n{s.output[-4000:]}"
        return "no step failed"


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def run_script(
    script: str, *, shell: list[str], cwd: Path, env: Mapping[str, str], scratch: Path
) -> tuple[int, str, float]:
    """Run `script` from a file as the platform does; returns exit code, output, seconds."""
    scratch.mkdir(parents=True, exist_ok=True)
    path = scratch / f"step-{time.monotonic_ns()}.sh"
    path.write_text(script)
    started = time.monotonic()
    done = subprocess.run(
        [*shell, str(path)],
        cwd=cwd,
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=STEP_TIMEOUT,
        check=False,
    )
    return done.returncode, done.stdout, time.monotonic() - started


# -- GitHub Actions expressions ---------------------------------------------------------

_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<op>==|!=|&&|\|\||!|\(|\))|(?P<id>[A-Za-z_][A-Za-z0-9_.-]*))"
)


class GithubExpression:
    """GitHub's expression language, as far as the templates use it: context lookups
    (`vars.X`, `secrets.X`, `runner.temp`, `github.workspace`), 'strings', `==` and `!=`
    (case-insensitive on strings, as GitHub compares), `!`, `&&`, `||` (the first truthy
    operand), parentheses, and the status functions `always()`, `success()`, `failure()`.
    """

    def __init__(self, contexts: Mapping[str, Mapping[str, str]], failed: bool = False) -> None:
        self.contexts = contexts
        self.failed = failed

    def evaluate(self, text: str) -> str | bool:
        self.tokens = self._tokenize(text)
        self.pos = 0
        value = self._or()
        if self.pos != len(self.tokens):
            raise ValueError(f"cannot read the expression {text!r}")
        return value

    @staticmethod
    def _tokenize(text: str) -> list[tuple[str, str]]:
        tokens, pos, text = [], 0, text.strip()
        while pos < len(text):
            match = _TOKEN.match(text, pos)
            if not match or match.end() == pos:
                raise ValueError(f"cannot read the expression {text!r} at {text[pos:]!r}")
            kind = match.lastgroup or ""
            tokens.append((kind, match.group(kind)))
            pos = match.end()
        return tokens

    def _peek(self) -> str | None:
        return self.tokens[self.pos][1] if self.pos < len(self.tokens) else None

    def _take(self) -> tuple[str, str]:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def _or(self) -> str | bool:
        value = self._and()
        while self._peek() == "||":
            self._take()
            other = self._and()
            value = value if truthy(value) else other
        return value

    def _and(self) -> str | bool:
        value = self._compare()
        while self._peek() == "&&":
            self._take()
            other = self._compare()
            value = other if truthy(value) else value
        return value

    def _compare(self) -> str | bool:
        value = self._unary()
        while self._peek() in ("==", "!="):
            op = self._take()[1]
            other = self._unary()
            same = str(value).lower() == str(other).lower()
            value = same if op == "==" else not same
        return value

    def _unary(self) -> str | bool:
        if self._peek() == "!":
            self._take()
            return not truthy(self._unary())
        return self._primary()

    def _primary(self) -> str | bool:
        kind, text = self._take()
        if kind == "str":
            return text[1:-1].replace("''", "'")
        if text == "(":
            value = self._or()
            if self._take()[1] != ")":
                raise ValueError("unbalanced parentheses")
            return value
        if kind == "id" and self._peek() == "(":
            self._take()
            if self._take()[1] != ")":
                raise ValueError(f"{text}() takes no arguments here")
            status = {"always": True, "success": not self.failed, "failure": self.failed}
            if text not in status:
                raise ValueError(f"unknown function {text}()")
            return status[text]
        if kind == "id" and text in ("true", "false"):
            return text == "true"
        if kind == "id" and "." in text:
            context, name = text.split(".", 1)
            if context in ("vars", "secrets"):
                return self.contexts[context].get(name, "")
            if context in self.contexts and name in self.contexts[context]:
                return self.contexts[context][name]
        raise ValueError(f"unknown name {text!r} in an expression")


def truthy(value: str | bool) -> bool:
    return bool(value)


_SUBSTITUTION = re.compile(r"\$\{\{(.*?)\}\}")


def substitute(text: str, contexts: Mapping[str, Mapping[str, str]]) -> str:
    def one(match: re.Match[str]) -> str:
        value = GithubExpression(contexts).evaluate(match.group(1))
        if isinstance(value, bool):
            return "true" if value else "false"
        return value

    return _SUBSTITUTION.sub(one, str(text))


def github_condition(
    text: str | bool | None, contexts: Mapping[str, Mapping[str, str]], failed: bool
) -> bool:
    """A step's `if:`; without a status function GitHub adds `success() &&`."""
    if text is None:
        return not failed
    text = str(text).strip()
    if text.startswith("${{") and text.endswith("}}"):
        text = text[3:-2]
    if not re.search(r"\b(always|success|failure|cancelled)\(", text):
        text = f"success() && ({text})"
    return truthy(GithubExpression(contexts, failed).evaluate(text))


# -- GitHub Actions jobs ----------------------------------------------------------------

StandIn = Callable[[dict], None]


class GithubJob:
    """One job of a workflow file, run step by step in `workspace`."""

    def __init__(
        self,
        path: Path,
        job: str,
        *,
        workspace: Path,
        temp: Path,
        base_env: Mapping[str, str],
        variables: Mapping[str, str],
        secrets: Mapping[str, str],
        actions: Mapping[str, StandIn],
        matrix: Mapping[str, str] | None = None,
    ) -> None:
        self.workflow = load(path)
        self.job = self.workflow["jobs"][job]
        self.workspace = workspace
        self.temp = temp
        self.base_env = dict(base_env)
        self.variables = dict(variables)
        self.secrets = dict(secrets)
        self.actions = actions
        self.matrix = dict(matrix or {})  # the one combination of the job's matrix run here
        self.added_env: dict[str, str] = {}
        self.added_path: list[str] = []
        shell = (self.workflow.get("defaults") or {}).get("run", {}).get("shell")
        assert shell == "bash", "the templates run their steps with bash; say so in defaults"

    @property
    def contexts(self) -> dict[str, dict[str, str]]:
        return {
            "vars": self.variables,
            "secrets": self.secrets,
            "runner": {"temp": str(self.temp)},
            "github": {"workspace": str(self.workspace)},
            "matrix": self.matrix,
        }

    def steps(self) -> list[dict]:
        return list(self.job["steps"])

    def run(self, only: Collection[str] | None = None) -> Outcome:
        """Run every step (or only the named ones), stopping as GitHub does on failure."""
        outcome = Outcome()
        failed = False
        for step in self.steps():
            name = step.get("name") or step.get("uses") or step.get("run", "").splitlines()[0]
            if only is not None and name not in only:
                continue
            if not github_condition(step.get("if"), self.contexts, failed):
                outcome.steps.append(StepResult(name, False, f"if: {step.get('if', 'success()')}"))
                continue
            if "uses" in step:
                outcome.steps.append(self._stand_in(name, step))
                continue
            result = self._run_step(name, step)
            outcome.steps.append(result)
            failed = failed or not result.ok
        return outcome

    def _stand_in(self, name: str, step: dict) -> StepResult:
        action = step["uses"].split("@", 1)[0]
        if action not in self.actions:
            raise AssertionError(f"step {name!r} uses {action}, which has no stand-in here")
        self.actions[action](
            {k: substitute(v, self.contexts) for k, v in (step.get("with") or {}).items()}
        )
        return StepResult(name, False, f"{action}: {STAND_INS[action]}")

    def _env(self, step: dict, env_file: Path, path_file: Path) -> dict[str, str]:
        env = dict(self.base_env)
        env.update(
            CI="true",
            GITHUB_ACTIONS="true",
            GITHUB_WORKSPACE=str(self.workspace),
            RUNNER_TEMP=str(self.temp),
            GITHUB_ENV=str(env_file),
            GITHUB_PATH=str(path_file),
        )
        # Precedence as on GitHub: step env > $GITHUB_ENV > job env > workflow env. The
        # runner context does not exist yet at the workflow and job levels.
        early = {k: v for k, v in self.contexts.items() if k != "runner"}
        for layer in (self.workflow.get("env"), self.job.get("env")):
            env.update({k: substitute(v, early) for k, v in (layer or {}).items()})
        env.update(self.added_env)
        env.update({k: substitute(v, self.contexts) for k, v in (step.get("env") or {}).items()})
        if self.added_path:
            env["PATH"] = ":".join([*reversed(self.added_path), env["PATH"]])
        return env

    def _run_step(self, name: str, step: dict) -> StepResult:
        scratch = self.temp / "_steps"
        scratch.mkdir(parents=True, exist_ok=True)
        env_file = scratch / f"env-{time.monotonic_ns()}"
        path_file = scratch / f"path-{time.monotonic_ns()}"
        env_file.touch()
        path_file.touch()
        cwd = self.workspace / step.get("working-directory", ".")
        code, output, seconds = run_script(
            substitute(step["run"], self.contexts),
            shell=["bash", "--noprofile", "--norc", "-eo", "pipefail"],
            cwd=cwd,
            env=self._env(step, env_file, path_file),
            scratch=scratch,
        )
        self.added_env.update(_read_github_env(env_file.read_text()))
        self.added_path.extend(line for line in path_file.read_text().splitlines() if line)
        return StepResult(name, True, "ran", code, output, seconds)


def _read_github_env(text: str) -> dict[str, str]:
    """`NAME=value` lines and `NAME<<DELIMITER` blocks, as GitHub reads $GITHUB_ENV."""
    values: dict[str, str] = {}
    lines = iter(text.splitlines())
    for line in lines:
        if not line:
            continue
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            key, delimiter = line.split("<<", 1)
            block = []
            for inner in lines:
                if inner == delimiter:
                    break
                block.append(inner)
            values[key] = "\n".join(block)
        else:
            key, _, value = line.partition("=")
            values[key] = value
    return values


# -- GitLab CI ---------------------------------------------------------------------------

_GITLAB_TERM = re.compile(
    r"^\$(?P<var>[A-Za-z_][A-Za-z0-9_]*)(?:\s*(?P<op>==|!=)\s*(?P<lit>\"[^\"]*\"|'[^']*'|null))?$"
)


def gitlab_rule(text: str, variables: Mapping[str, str]) -> bool:
    """A `rules: - if:` as GitLab reads it: `$VAR` (defined and not empty), `$VAR == "x"`,
    `$VAR != "x"`, joined by `&&` or `||` (`&&` binds tighter); no parentheses."""

    def term(part: str) -> bool:
        match = _GITLAB_TERM.match(part.strip())
        if not match:
            raise ValueError(f"cannot read the rule {text!r} at {part!r}")
        value = variables.get(match["var"])
        if not match["op"]:
            return bool(value)
        literal = None if match["lit"] == "null" else match["lit"][1:-1]
        same = value == literal
        return same if match["op"] == "==" else not same

    return any(all(term(t) for t in alt.split("&&")) for alt in text.split("||"))


class GitlabPipeline:
    """A pipeline file's jobs, run in stage order in one workspace."""

    def __init__(
        self,
        path: Path,
        *,
        workspace: Path,
        temp: Path,
        base_env: Mapping[str, str],
        variables: Mapping[str, str],
        file_variables: Mapping[str, str] | None = None,
    ) -> None:
        self.pipeline = load(path)
        self.workspace = workspace
        self.temp = temp
        self.base_env = dict(base_env)
        self.project = dict(variables)
        for name, content in (file_variables or {}).items():
            target = temp / "file-variables" / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
            target.chmod(0o600)
            self.project[name] = str(target)
        for key, value in self.pipeline.items():
            if key not in GITLAB_TOP_KEYS and not isinstance(value, dict):
                raise AssertionError(f"top-level key {key!r} has no meaning in this runner")
        for key, value in (self.pipeline.get("variables") or {}).items():
            if "$" in str(value):
                raise AssertionError(f"variable {key} refers to another ($), not expanded here")

    def jobs(self) -> dict[str, dict]:
        jobs = {k: v for k, v in self.pipeline.items() if k not in GITLAB_TOP_KEYS}
        for name, job in jobs.items():
            unknown = set(job) - GITLAB_JOB_KEYS
            if unknown:
                raise AssertionError(f"job {name} has keys this runner does not model: {unknown}")
        stages = self.pipeline.get("stages") or ["build", "test", "deploy"]
        return dict(sorted(jobs.items(), key=lambda item: stages.index(item[1]["stage"])))

    def variables(self, job: dict) -> dict[str, str]:
        """Project variables over the job's over the file's (GitLab's precedence)."""
        values = {k: str(v) for k, v in (self.pipeline.get("variables") or {}).items()}
        values.update({k: str(v) for k, v in (job.get("variables") or {}).items()})
        values.update(self.project)
        return values

    def created(self, job: dict) -> tuple[bool, str]:
        """Whether the pipeline gets this job at all (its rules), and why not."""
        rules = job.get("rules")
        if rules is None:
            return True, "no rules"
        for rule in rules:
            if set(rule) != {"if"}:
                raise AssertionError(f"rule {rule} has keys this runner does not model")
            if gitlab_rule(rule["if"], self.variables(job)):
                return True, f"rules: {rule['if']}"
        return False, "rules: " + " / ".join(r["if"] for r in rules)

    def run(self) -> Outcome:
        outcome = Outcome()
        done: dict[str, bool] = {}
        for name, job in self.jobs().items():
            created, reason = self.created(job)
            if not created:
                outcome.steps.append(StepResult(name, False, reason))
                continue
            needs = job.get("needs") or []
            if not all(done.get(n) for n in needs):
                outcome.steps.append(StepResult(name, False, f"needs {needs} did not succeed"))
                continue
            result = self._run_job(name, job)
            outcome.steps.append(result)
            done[name] = result.ok
        return outcome

    def _run_job(self, name: str, job: dict) -> StepResult:
        env = dict(self.base_env)
        env.update(CI="true", GITLAB_CI="true", CI_PROJECT_DIR=str(self.workspace))
        env.update(self.variables(job))
        lines = [*(job.get("before_script") or []), *job["script"]]
        code, output, seconds = run_script(
            "set -eo pipefail\n" + "\n".join(lines) + "\n",
            shell=["bash", "--noprofile", "--norc"],
            cwd=self.workspace,
            env=env,
            scratch=self.temp / "_jobs",
        )
        return StepResult(name, True, "ran", code, output, seconds)
