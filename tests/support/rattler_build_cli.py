"""Stand-ins for the `rattler-build` and `pixi` commands the CI templates run.

Neither binary can be installed here (they come from conda-forge or GitHub releases, not
PyPI). `rattler-build upload artifactory` and `upload anaconda` are rattler-build's upload
code, which py-rattler-build exposes as functions: this stand-in parses the CLI's
documented options (credentials from ARTIFACTORY_TOKEN / ANACONDA_API_KEY, as the CLI
reads them) and runs that same code. `pixi` only answers `global install rattler-build`,
the templates' way of getting the binary. Anything else is refused, so a template cannot
use a command the tests would not run.

Installed by tests/integration/test_templates.py as two shell wrappers on PATH:
    rattler-build -> python rattler_build_cli.py rattler-build ARGS
    pixi          -> python rattler_build_cli.py pixi ARGS
Each appends its arguments to $CURL_ARGV_LOG, which the tests search for secrets.
"""

from __future__ import annotations

import argparse
import os
import sys


def _log_argv(argv: list[str]) -> None:
    log = os.environ.get("CURL_ARGV_LOG")
    if log:
        with open(log, "a") as handle:
            handle.write(" ".join(argv) + "\n")


def pixi(argv: list[str]) -> int:
    """`pixi global install rattler-build[==version]`: the stand-in rattler-build is on PATH."""
    if argv[:2] != ["global", "install"] or not all(
        spec.split("=", 1)[0].split(">", 1)[0].split("<", 1)[0] == "rattler-build"
        for spec in argv[2:]
    ):
        print(f"pixi stand-in: only `global install rattler-build` is modelled: {argv}")
        return 2
    print("pixi stand-in: rattler-build is the py-rattler-build stand-in already on PATH")
    return 0


def rattler_build(argv: list[str]) -> int:
    """`rattler-build upload artifactory|anaconda ...` through py-rattler-build."""
    parser = argparse.ArgumentParser(prog="rattler-build")
    commands = parser.add_subparsers(dest="command", required=True)
    upload = commands.add_parser("upload").add_subparsers(dest="server", required=True)
    artifactory = upload.add_parser("artifactory")
    artifactory.add_argument("--url", "-u", required=True)
    artifactory.add_argument("--channel", "-c", required=True)
    artifactory.add_argument("--token", "-t", default=os.environ.get("ARTIFACTORY_TOKEN"))
    artifactory.add_argument("packages", nargs="+")
    anaconda = upload.add_parser("anaconda")
    anaconda.add_argument("--owner", "-o", required=True)
    anaconda.add_argument("--api-key", "-a", default=os.environ.get("ANACONDA_API_KEY"))
    anaconda.add_argument("packages", nargs="+")
    args = parser.parse_args(argv)

    import rattler_build as rb

    print(f"rattler-build stand-in: {args.server} upload through py-rattler-build")
    try:
        if args.server == "artifactory":
            rb.upload_package_to_artifactory(
                args.packages,
                args.url,
                args.channel,
                token=args.token,
                auth_file=os.environ.get("RATTLER_AUTH_FILE"),
            )
        else:
            rb.upload_package_to_anaconda(args.packages, args.owner, api_key=args.api_key)
    except Exception as exc:  # the upload code's own message is what CI would show
        print(f"upload failed: {exc}", file=sys.stderr)
        return 1
    for package in args.packages:
        print(f"uploaded {os.path.basename(package)}")
    return 0


def main(argv: list[str]) -> int:
    _log_argv(argv)
    tool, rest = argv[0], argv[1:]
    return {"pixi": pixi, "rattler-build": rattler_build}[tool](rest)


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    # py-rattler-build's runtime can crash in interpreter teardown after the work is done.
    os._exit(code)
