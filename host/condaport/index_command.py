"""condaport-index: the command line of condaport.index (stale subdirs, index runs).

`status` lists stale subdirs and channels without a page; `run` indexes them under the
channel lock (`--force`: every subdir); `subdir` indexes one subdir of a channel folder
(services run it in a child process); `forget` drops a removed channel's index state.
Started as root on a converged host, it works as the writer account.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from condaport import index
from condaport.account import AccountError, become_writer
from condaport.cli import exit_now
from condaport.config import ConfigError, host_options, resolve
from condaport.index_backends import BACKENDS, IndexFailed, backend_named
from condaport.locking import LockTimeout
from condaport.subdir_index import render_with_backend


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="condaport-index", description=index.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    common = host_options()
    for name in ("status", "run"):
        cmd = sub.add_parser(name, parents=[common])
        cmd.add_argument("--channel", action="append", help="limit to this channel (repeatable)")
    run_cmd = sub.choices["run"]
    run_cmd.add_argument("--force", action="store_true", help="index every subdir")
    run_cmd.add_argument("--backend", choices=BACKENDS)
    run_cmd.add_argument("--conda-python", help="python of a conda install with conda-index")
    one = sub.add_parser(
        "subdir", help="index one subdir of a channel folder (services run this in a child)"
    )
    one.add_argument("channel_dir", type=Path)
    one.add_argument("subdir")
    one.add_argument("--backend", choices=BACKENDS, default="rattler")
    one.add_argument("--conda-python")
    one.add_argument("--force", action="store_true", help="read every package again")
    gone = sub.add_parser(
        "forget", parents=[common], help="drop the index state of a channel removed from the host"
    )
    gone.add_argument("channel")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "subdir":
        try:
            backend = backend_named(args.backend, args.conda_python)
            render_with_backend(args.channel_dir, args.subdir, backend, args.force)
        except (IndexFailed, OSError) as exc:
            print(f"condaport-index: {exc}", file=sys.stderr)
            return 1
        return 0
    try:
        host = resolve(args.config, args.channels_root, args.state_dir)
        become_writer(host.writer)
        if args.command == "status":
            stale = {}
            for channel in index.channel_names(host.channels_root, args.channel):
                subdirs = index.stale_subdirs(host.channels_root, host.state_dir, channel)
                if subdirs:
                    stale[channel] = subdirs
            missing = index.channels_without_page(host.channels_root, args.channel)
            print(json.dumps({"stale": stale, "pages_missing": missing}))
        elif args.command == "forget":
            print(json.dumps({"forgotten": index.forget(host.state_dir, args.channel)}))
        else:
            quarantined: list[dict[str, str]] = []
            indexed = index.run(
                host.channels_root,
                host.state_dir,
                args.channel,
                force=args.force,
                backend=args.backend or host.index_backend,
                conda_python=args.conda_python or host.conda_python,
                quarantined=quarantined,
            )
            print(json.dumps({"indexed": indexed, "quarantined": quarantined}))
    except (IndexFailed, LockTimeout, ConfigError, AccountError, OSError) as exc:
        print(f"condaport-index: {exc}", file=sys.stderr)
        return 1
    return 0


def run_cli() -> None:
    exit_now(main())


if __name__ == "__main__":
    run_cli()
