"""condaport-channels: the channels of a host, as the inventory declares them.

`sync` makes every configured channel's folders (condaport.trees); `adjust` makes each
channel's declared repodata patches and broken marks the ones in force (condaport.manage:
what a maintainer set over HTTPS is kept); `promote` copies or moves a package from one
channel to another on the host. Started as root, it works as the writer account. `backup`
writes one archive of the host (trees, state, configuration, TLS material, htpasswd files)
and `restore` puts one onto a fresh host (condaport.backup): both stay root for the
root-only parts and leave the trees to the writer account. One JSON report on stdout, for
the playbook.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

from condaport.account import AccountError, become_writer
from condaport.adjustments import BadAdjustment, check_file
from condaport.backup import BackupError, Places, backup, restore
from condaport.channel_files import ChannelFiles
from condaport.cli import exit_now
from condaport.config import ConfigError, HostConfig, config_path, host_options, resolve
from condaport.index_backends import IndexFailed, backend_named
from condaport.intake import ChannelGuard, Conflict, Missing, WrongSubdir
from condaport.locking import LockTimeout, channel_lock
from condaport.manage import Hold, converge, promote
from condaport.packages import Rejected, sha256_of
from condaport.subdir_index import Indexes
from condaport.trees import TreeError, sync

LOCK_TIMEOUT = 300.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="condaport-channels", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("sync", parents=[host_options()], help="make the channels' folders")
    run.add_argument(
        "--purge-removed",
        action="store_true",
        help="delete the trees (and index state) of channels that are no longer configured",
    )
    run.add_argument("--dry-run", action="store_true", help="report only (check mode)")
    adjust = sub.add_parser(
        "adjust", parents=[host_options()], help="apply the declared patches and broken marks"
    )
    adjust.add_argument("--channel", action="append", help="limit to this channel (repeatable)")
    adjust.add_argument("--dry-run", action="store_true", help="report only (check mode)")
    move = sub.add_parser(
        "promote", parents=[host_options()], help="copy a package into another channel"
    )
    move.add_argument("--from", dest="source", required=True, help="the source channel")
    move.add_argument("--to", dest="target", required=True, help="the target channel")
    move.add_argument("--file", required=True, help="the package, as <subdir>/<file>")
    move.add_argument("--move", action="store_true", help="remove it from the source after")
    move.add_argument("--force", action="store_true", help="replace a different file there")
    move.add_argument("--dry-run", action="store_true", help="report only (check mode)")
    save = sub.add_parser(
        "backup", parents=[host_options()], help="write one archive of the host (root only)"
    )
    save.add_argument("--archive", type=Path, required=True, help="the archive to write")
    load = sub.add_parser(
        "restore", parents=[host_options()], help="restore an archive onto a fresh host"
    )
    load.add_argument("--archive", type=Path, required=True, help="the archive to restore")
    load.add_argument("--dry-run", action="store_true", help="check the archive only")
    return parser


def _backup_or_restore(args: argparse.Namespace) -> dict[str, object]:
    """Root's part: the configuration's places, the etc folder beside the configuration."""
    host = resolve(args.config, args.channels_root, args.state_dir)
    places = Places.of(host, config_path(args.config).parent)
    if args.command == "backup":
        names = [channel.name for channel in host.channels]
        return backup(places, names, args.archive, writer=host.writer).as_dict()
    return restore(args.archive, places, writer=host.writer, dry_run=args.dry_run)


def _indexes(host: HostConfig) -> Indexes:
    return Indexes(host.state_dir, backend_named(host.index_backend, host.conda_python))


def _hold(host: HostConfig) -> Hold:
    return functools.partial(channel_lock, host.state_dir, timeout=LOCK_TIMEOUT)


def _adjust(host: HostConfig, only: list[str] | None, dry_run: bool) -> dict[str, object]:
    indexes, hold = _indexes(host), _hold(host)
    report: dict[str, list[dict[str, str]]] = {}
    for channel in host.channels:
        if only and channel.name not in only:
            continue
        if not (host.channels_root / channel.name).is_dir():
            continue  # a proxy channel, or one not synced yet (check mode on a fresh host)
        changes = converge(
            host,
            channel.name,
            channel.patches,
            channel.broken,
            hold=hold,
            indexes=indexes,
            dry_run=dry_run,
        )
        if changes:
            report[channel.name] = [change.as_dict() for change in changes]
    done = [c for changes in report.values() for c in changes if c["result"] != "unchanged"]
    return {"adjusted": report, "changed": bool(done)}


def _promote(host: HostConfig, args: argparse.Namespace) -> dict[str, object]:
    source, target = host.channel(args.source), host.channel(args.target)
    for name, channel in ((args.source, source), (args.target, target)):
        if channel is None or not (host.channels_root / name).is_dir():
            raise ConfigError(f"no channel {name!r} with a tree on this host")
    assert source is not None and target is not None
    if args.dry_run:
        return _would_promote(host, source.name, target.name, args.file)
    staging = (host.staging_root or host.channels_root.parent / "staging") / ".promotions"
    staging.mkdir(mode=0o700, exist_ok=True)
    result = promote(
        host,
        source,
        target,
        args.file,
        staging=staging,
        move=args.move,
        overwrite=args.force,
        guard=ChannelGuard(),
        lock_timeout=LOCK_TIMEOUT,
        indexes=_indexes(host),
    )
    return {
        "result": result.status,
        "from": source.name,
        "to": target.name,
        "file": f"{result.subdir}/{result.filename}",
        "moved": args.move,
        "changed": result.status != "unchanged" or args.move,
    }


def _would_promote(host: HostConfig, source: str, target: str, where: str) -> dict[str, object]:
    """What a promotion would do, changing nothing."""
    subdir, filename = check_file(where)
    present = host.channels_root / source / subdir / filename
    if not present.is_file():
        raise Missing(f"{where} is not in channel {source!r}")
    there = ChannelFiles(host.channels_root / target).find(filename)
    if there is None:
        result = "would add"
    elif there.parent.name == subdir and sha256_of(there) == sha256_of(present):
        result = "unchanged"
    else:
        result = "would replace (with force) or conflict"
    answer = {"result": result, "from": source, "to": target, "file": where}
    return {**answer, "changed": result != "unchanged"}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command in ("backup", "restore"):
            print(json.dumps(_backup_or_restore(args)))
            return 0
        host = resolve(args.config, args.channels_root, args.state_dir)
        become_writer(host.writer)
        if args.command == "sync":
            report = sync(host, purge_removed=args.purge_removed, dry_run=args.dry_run).as_dict()
        elif args.command == "adjust":
            report = _adjust(host, args.channel, args.dry_run)
        else:
            report = _promote(host, args)
    except (
        TreeError,
        ConfigError,
        AccountError,
        IndexFailed,
        LockTimeout,
        BadAdjustment,
        Missing,
        Conflict,
        WrongSubdir,
        Rejected,
        BackupError,
        OSError,
    ) as exc:
        print(f"condaport-channels: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report))
    return 0


def run_cli() -> None:
    exit_now(main())


if __name__ == "__main__":
    run_cli()
