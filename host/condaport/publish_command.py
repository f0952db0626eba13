"""condaport-publish: the command line of the publish path.

`inventory` lists a channel's package files with their sha256 (for --check); `place`
validates staged files and moves the good ones in; `prune` removes named files and old
versions; `publish` is one playbook run (condaport.batch): take the bundle from root's
inbox, then, as the writer account, unpack, place, prune, index and report. Started as
root on a converged host, every subcommand works as the writer account.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from condaport import batch, publish, release
from condaport.account import AccountError, become_writer
from condaport.cli import exit_now
from condaport.config import CHANNEL_NAME, ConfigError, HostConfig, host_options, resolve
from condaport.counters import Counters
from condaport.locking import LockTimeout
from condaport.packages import Limits, Rejected, split_name

EXIT_REJECTED = 3
EXIT_VERSION = 4


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="condaport-publish", description=publish.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    common = host_options()
    inv = sub.add_parser(
        "inventory", parents=[common], help="list the channel's package files with sha256"
    )
    inv.add_argument("--channel", required=True)
    put = sub.add_parser(
        "place", parents=[common], help="validate staged files and move them into the channel"
    )
    put.add_argument("--channel", required=True)
    put.add_argument("--staging", type=Path, required=True)
    put.add_argument(
        "--subdir",
        action="append",
        help="a subdir the channel serves (repeatable; default: the configuration's)",
    )
    put.add_argument("--overwrite", action="store_true")
    put.add_argument("--all-or-nothing", action="store_true")
    cut = sub.add_parser("prune", parents=[common], help="remove named packages and old versions")
    cut.add_argument("--channel", required=True)
    cut.add_argument("--remove", action="append", default=[], help="a package file name")
    cut.add_argument(
        "--keep-versions",
        type=int,
        default=0,
        help="newest versions to keep per package name and subdir, each with all its builds"
        " (default 0: keep everything)",
    )
    run = sub.add_parser(
        "publish",
        parents=[common],
        help="one playbook run: unpack a bundle, place, remove, prune, index and report",
    )
    run.add_argument("--channel", required=True)
    run.add_argument("--bundle", type=Path, help="tar of package files (deleted once read)")
    run.add_argument("--subdir", action="append", help="as for place")
    run.add_argument("--overwrite", action="store_true")
    run.add_argument("--all-or-nothing", action="store_true")
    run.add_argument("--remove", action="append", default=[], help="a package file name")
    run.add_argument("--keep-versions", type=int, default=0)
    run.add_argument("--staging-max-age", default="1d", help="find syntax: 90, 30m, 12h, 1d")
    run.add_argument(
        "--expect-build",
        metavar="SHA256",
        help="fail unless the installed condaport came from this wheel (the controller's)",
    )
    return parser


def _publish_run(host: HostConfig, args: argparse.Namespace) -> int:
    """`publish`: everything in one process; one JSON report on stdout, always."""
    installed = release.installed_build()
    if args.expect_build and args.expect_build != installed:
        print(
            f"condaport-publish: this host runs condaport {release.installed_version()} from"
            f" the wheel with sha256 {installed}, but the controller would install the wheel"
            f" with sha256 {args.expect_build}: converge the host first (site.yml)",
            file=sys.stderr,
        )
        return EXIT_VERSION
    bundle, swept = None, []
    if args.bundle is not None:
        # As root, in root's own inbox: the only step that does not run as the writer.
        bundle, swept = batch.take_bundle(
            args.bundle, args.channel, batch.age_seconds(args.staging_max_age)
        )
    become_writer(host.writer)
    report = batch.publish(
        host,
        args.channel,
        bundle=bundle,
        run_name=args.bundle.name.removesuffix(".tar") if args.bundle else "run",
        allowed_subdirs=_served_subdirs(host, args.channel, args.subdir),
        overwrite=args.overwrite,
        all_or_nothing=args.all_or_nothing,
        remove=args.remove,
        keep_versions=args.keep_versions,
        staging_max_age=batch.age_seconds(args.staging_max_age),
    )
    report.swept[:0] = swept
    result = "failed" if report.errors else "rejected" if report.outcome.rejected else "published"
    Counters(host.state_dir, "publish").count("condaport_publishes_total", result=result)
    print(json.dumps(report.as_dict()))
    for entry in report.outcome.rejected:
        print(f"refused {entry['file']}: {entry['reason']}", file=sys.stderr)
    for error in report.errors:
        print(f"condaport-publish: {error}", file=sys.stderr)
    if report.errors:
        return 1
    return EXIT_REJECTED if report.outcome.rejected else 0


def _served_subdirs(host: HostConfig, channel: str, given: list[str] | None) -> list[str] | None:
    if given:
        return given
    configured = host.channel(channel)
    return list(configured.subdirs) if configured and configured.subdirs else None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        host = resolve(args.config, args.channels_root, args.state_dir)
        if not CHANNEL_NAME.match(args.channel):
            raise Rejected(f"{args.channel!r} is not a channel name")
        if args.command != "publish":
            become_writer(host.writer)
        if args.command == "inventory":
            print(json.dumps({"packages": publish.inventory(host.channels_root, args.channel)}))
            return 0
        if args.command == "publish":
            if args.keep_versions < 0:
                raise Rejected("the number of versions to keep must be 0 (all) or more")
            for name in args.remove:
                try:
                    split_name(name)  # a path trick in a removal request is refused outright
                except Rejected as exc:
                    raise Rejected(f"cannot remove {name!r}: {exc}") from None
            return _publish_run(host, args)
        if args.command == "prune":
            result = publish.prune(
                host.channels_root, host.state_dir, args.channel, args.remove, args.keep_versions
            )
            print(json.dumps(result))
            return 0
        outcome = publish.place(
            host.channels_root,
            host.state_dir,
            args.channel,
            args.staging,
            _served_subdirs(host, args.channel, args.subdir),
            overwrite=args.overwrite,
            all_or_nothing=args.all_or_nothing,
            limits=Limits(unpacked_size=host.package_max_unpacked_size),
        )
    except (LockTimeout, OSError, Rejected, ConfigError, AccountError) as exc:
        print(f"condaport-publish: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(outcome.as_dict()))
    for entry in outcome.rejected:
        print(f"refused {entry['file']}: {entry['reason']}", file=sys.stderr)
    return EXIT_REJECTED if outcome.rejected else 0


def run_cli() -> None:
    exit_now(main())


if __name__ == "__main__":
    run_cli()
