"""The commands the browse page and `make demo` print are valid for the tool they name.

No conda, pixi or rattler-build binary can be installed here, so each command is checked
against the tool's documented grammar (subcommand, options, number of arguments), taken
from the tools' CLI references:
  pixi workspace channel add   https://pixi.prefix.dev/v0.51.0/reference/cli/pixi/workspace/channel/add
  pixi add (no --channel)      https://pixi.prefix.dev/latest/reference/cli/pixi
  pixi config set              https://pixi.prefix.dev/latest/reference/cli/pixi/config/set
  pixi auth login              https://pixi.prefix.dev/latest/deployment/authentication
  tls-root-certs values        https://pixi.prefix.dev/latest/reference/pixi_configuration
A command the checker does not know fails the test: a renamed subcommand (`pixi project`)
or an option the tool never had (`pixi add --channel`) cannot slip through.
"""

from __future__ import annotations

import html
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from condaport import browse

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Grammar:
    """One subcommand: options taking a value, flag options, and how many arguments."""

    valued: frozenset[str] = field(default_factory=frozenset)
    flags: frozenset[str] = field(default_factory=frozenset)
    arguments: tuple[int, int | None] = (1, None)  # (min, max); None: no upper bound
    choices: dict[str, frozenset[str]] = field(default_factory=dict)


_PIXI_UPDATE = frozenset({"--no-install", "--frozen", "--no-lockfile-update", "--revalidate"})
GRAMMARS: dict[tuple[str, ...], Grammar] = {
    ("conda", "config", "--add", "channels"): Grammar(arguments=(1, 1)),
    ("pixi", "workspace", "channel", "add"): Grammar(
        valued=frozenset({"--priority", "--feature", "-f", "--manifest-path", "-m"}),
        flags=frozenset({"--prepend"}) | _PIXI_UPDATE,
    ),
    ("pixi", "add"): Grammar(
        valued=frozenset({"--platform", "-p", "--feature", "-f", "--manifest-path", "-m"}),
        flags=frozenset({"--host", "--build", "--pypi", "--editable"}) | _PIXI_UPDATE,
    ),
    ("pixi", "auth", "login"): Grammar(
        valued=frozenset({"--token", "--username", "--password", "--conda-token"}),
        arguments=(1, 1),
    ),
    ("pixi", "config", "set"): Grammar(
        flags=frozenset({"--global", "-g", "--local", "-l", "--system", "-s"}),
        arguments=(1, 2),
        choices={"tls-root-certs": frozenset({"webpki", "native", "all", "system"})},
    ),
    ("rattler-build", "upload", "artifactory"): Grammar(
        valued=frozenset({"--url", "--channel", "--token", "--username", "--password"}),
    ),
}
TOOLS = {command[0] for command in GRAMMARS}


def check_command(line: str) -> None:
    """Raise ValueError unless `line` is a command one of GRAMMARS accepts."""
    words = shlex.split(line)
    known = [c for c in GRAMMARS if tuple(words[: len(c)]) == c]
    if not known:
        raise ValueError(f"not a documented command: {line!r}")
    command = max(known, key=len)
    grammar = GRAMMARS[command]
    arguments: list[str] = []
    rest = iter(words[len(command) :])
    for word in rest:
        if word in grammar.valued:
            if next(rest, None) is None:
                raise ValueError(f"{word} needs a value: {line!r}")
        elif word.startswith("-") and word not in grammar.flags:
            raise ValueError(f"{' '.join(command)} has no option {word}: {line!r}")
        elif not word.startswith("-"):
            arguments.append(word)
    low, high = grammar.arguments
    if len(arguments) < low or (high is not None and len(arguments) > high):
        raise ValueError(f"{' '.join(command)} takes {low}..{high} arguments: {line!r}")
    if arguments and arguments[0] in grammar.choices:
        value = arguments[1] if len(arguments) > 1 else None
        if value not in grammar.choices[arguments[0]]:
            raise ValueError(f"{arguments[0]} takes one of {sorted(grammar.choices[arguments[0]])}")


def tool_lines(text: str, indent: str = "") -> list[str]:
    """The lines of `text` (those starting with `indent`) that run one of the tools, with
    continuations joined and leading VAR=value assignments dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    lines = []
    for raw in joined.splitlines():
        if not raw.startswith(indent):
            continue
        line = re.sub(r"^(?:[A-Z_]+=\S+\s+)+", "", raw.strip())
        if line.split(" ", 1)[0] in TOOLS:
            lines.append(line)
    return lines


def demo_usage() -> str:
    """The demo's closing text as the shell prints it (the heredoc's \\ and \\$ unescaped)."""
    script = (ROOT / "scripts" / "demo.sh").read_text()
    heredoc = script[script.index("cat <<USAGE") : script.index("\nUSAGE\n")]
    return heredoc.replace("\\\\", "\\").replace("\\$", "$")


@pytest.mark.parametrize(
    "line",
    [
        "pixi add --channel https://conda.example.org/main hello-condaport",
        "pixi project channel add https://conda.example.org/main",
        "pixi config set --global tls-root-certs certifi",
        "conda config --add channels",
    ],
)
def test_the_checker_refuses_commands_the_tools_do_not_have(line: str) -> None:
    with pytest.raises(ValueError):
        check_command(line)


def test_browse_page_snippets_are_valid_commands(tmp_path: Path) -> None:
    (tmp_path / "noarch").mkdir()
    page = browse.render_channel_page(tmp_path, "main", "https://conda.example.org/main")
    snippets = [
        html.unescape(re.sub(r"<[^>]+>", "", block))
        for block in re.findall(r"<pre>(.*?)</pre>", page, re.S)
    ]
    lines = [line for snippet in snippets for line in tool_lines(snippet)]
    assert {shlex.split(line)[0] for line in lines} == {"conda", "pixi"}
    for line in lines:
        check_command(line)


def test_demo_snippets_are_valid_commands() -> None:
    lines = tool_lines(demo_usage(), indent="  ")  # commands are indented, headings not
    assert any(line.startswith("pixi workspace channel add") for line in lines)
    assert any(line.startswith("pixi add ") for line in lines)
    assert any(line.startswith("rattler-build upload artifactory") for line in lines)
    for line in lines:
        check_command(line)


def test_demo_does_not_advise_a_global_ssl_cert_file() -> None:
    # A global SSL_CERT_FILE holding only the private CA breaks every other channel
    # (templates/README.md says so); only a single command may carry it.
    usage = demo_usage()
    assert not re.search(r"^\s*export\s+SSL_CERT_FILE", usage, re.M)
    assert "tls-root-certs native" in usage
