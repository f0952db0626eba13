"""Keep each channel subdir's repodata in step with its package files.

`status` lists stale subdirs; `run` indexes them under the channel lock. A subdir is stale
when its package files (names, sizes, mtimes) differ from those its repodata was last built
from, or when it has no repodata. The fingerprint is recorded only after a successful
index, so a run that dies midway is simply repeated by the next one.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from condaport.browse import PAGE, write_channel_page
from condaport.cli import exit_now
from condaport.config import CHANNEL_NAME, ConfigError, host_options, resolve
from condaport.locking import LockTimeout, channel_lock
from condaport.packages import SUFFIXES


class IndexFailed(RuntimeError):
    """An index run failed; the previous repodata is still in place."""


def channel_names(channels_root: Path, only: list[str] | None = None) -> list[str]:
    names = sorted(
        p.name for p in channels_root.iterdir() if p.is_dir() and not p.name.startswith(".")
    )
    if only:
        unknown = sorted(set(only) - set(names))
        if unknown:
            raise IndexFailed(f"no such channel under {channels_root}: {', '.join(unknown)}")
        names = [n for n in names if n in only]
    return names


def subdir_names(channel_dir: Path) -> list[str]:
    return sorted(
        p.name for p in channel_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
    )


def fingerprint(subdir_dir: Path) -> str:
    """Hash of the package files' names, sizes and mtimes: cheap, and changes on any write."""
    digest = hashlib.sha256()
    with os.scandir(subdir_dir) as entries:
        rows = sorted(
            (e.name, e.stat().st_size, e.stat().st_mtime_ns)
            for e in entries
            if e.is_file() and not e.name.startswith(".") and e.name.endswith(SUFFIXES)
        )
    for name, size, mtime in rows:
        digest.update(f"{name}\t{size}\t{mtime}\n".encode())
    return digest.hexdigest()


def _fingerprint_file(state_dir: Path, channel: str, subdir: str) -> Path:
    return state_dir / "fingerprints" / channel / f"{subdir}.sha256"


def stale_subdirs(channels_root: Path, state_dir: Path, channel: str) -> list[str]:
    channel_dir = channels_root / channel
    stale = []
    for subdir in subdir_names(channel_dir):
        recorded = _fingerprint_file(state_dir, channel, subdir)
        if not (channel_dir / subdir / "repodata.json").exists():
            stale.append(subdir)
        elif not recorded.exists() or recorded.read_text().strip() != fingerprint(
            channel_dir / subdir
        ):
            stale.append(subdir)
    return stale


def _record(state_dir: Path, channel: str, subdir: str, value: str) -> None:
    target = _fingerprint_file(state_dir, channel, subdir)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    partial.write_text(value + "\n")
    os.replace(partial, target)


def _index_with_rattler(channel_dir: Path, subdir: str) -> None:
    from rattler import Subdir
    from rattler.index import index_fs

    try:
        asyncio.run(
            index_fs(
                channel_dir, target_platform=Subdir(subdir), write_zst=True, write_shards=False
            )
        )
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # rattler panics surface as BaseException
        raise IndexFailed(f"rattler index of {channel_dir.name}/{subdir} failed: {exc}") from None


def _index_with_conda_index(channel_dir: Path, subdir: str, conda_python: str) -> None:
    argv = [conda_python, "-m", "conda_index", "--subdir", subdir, "--zst", str(channel_dir)]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise IndexFailed(
            f"conda-index of {channel_dir.name}/{subdir} exited {result.returncode}: "
            + " | ".join(tail)
        )


def index_subdir(channel_dir: Path, subdir: str, backend: str, conda_python: str | None) -> None:
    if backend == "rattler":
        _index_with_rattler(channel_dir, subdir)
    elif backend == "conda-index":
        if not conda_python:
            raise IndexFailed("the conda-index backend needs --conda-python")
        _index_with_conda_index(channel_dir, subdir, conda_python)
    else:
        raise IndexFailed(f"unknown backend {backend!r}")
    if not (channel_dir / subdir / "repodata.json").exists():
        raise IndexFailed(f"{backend} wrote no repodata.json for {channel_dir.name}/{subdir}")


def run(
    channels_root: Path,
    state_dir: Path,
    channels: list[str] | None,
    *,
    force: bool = False,
    backend: str = "rattler",
    conda_python: str | None = None,
) -> dict[str, list[str]]:
    """Index the stale (or, with force, all) subdirs of each channel; returns what ran."""
    indexed: dict[str, list[str]] = {}
    for channel in channel_names(channels_root, channels):
        channel_dir = channels_root / channel
        with channel_lock(state_dir, channel):
            (channel_dir / "noarch").mkdir(exist_ok=True)  # clients always ask for noarch
            todo = (
                subdir_names(channel_dir)
                if force
                else stale_subdirs(channels_root, state_dir, channel)
            )
            for subdir in todo:
                # Fingerprint before indexing: a file landing meanwhile makes it stale again.
                before = fingerprint(channel_dir / subdir)
                index_subdir(channel_dir, subdir, backend, conda_python)
                _record(state_dir, channel, subdir, before)
                indexed.setdefault(channel, []).append(subdir)
            if todo or not (channel_dir / PAGE).exists():
                write_channel_page(channel_dir, channel)
                indexed.setdefault(channel, [])
    return indexed


def channels_without_page(channels_root: Path, channels: list[str] | None) -> list[str]:
    return [
        c for c in channel_names(channels_root, channels) if not (channels_root / c / PAGE).exists()
    ]


def forget(state_dir: Path, channel: str) -> bool:
    """Drop a removed channel's fingerprints, so a channel of that name starts afresh."""
    if not CHANNEL_NAME.match(channel):
        raise IndexFailed(f"{channel!r} is not a channel name")
    directory = _fingerprint_file(state_dir, channel, "x").parent
    if not directory.is_dir():
        return False
    shutil.rmtree(directory)
    return True


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="condaport-index", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    common = host_options()
    for name in ("status", "run"):
        cmd = sub.add_parser(name, parents=[common])
        cmd.add_argument("--channel", action="append", help="limit to this channel (repeatable)")
    run_cmd = sub.choices["run"]
    run_cmd.add_argument("--force", action="store_true", help="index every subdir")
    run_cmd.add_argument("--backend", choices=["rattler", "conda-index"])
    run_cmd.add_argument("--conda-python", help="python of a conda install with conda-index")
    gone = sub.add_parser(
        "forget", parents=[common], help="drop the index state of a channel removed from the host"
    )
    gone.add_argument("channel")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        host = resolve(args.config, args.channels_root, args.state_dir)
        if args.command == "status":
            stale = {}
            for channel in channel_names(host.channels_root, args.channel):
                subdirs = stale_subdirs(host.channels_root, host.state_dir, channel)
                if subdirs:
                    stale[channel] = subdirs
            missing = channels_without_page(host.channels_root, args.channel)
            print(json.dumps({"stale": stale, "pages_missing": missing}))
        elif args.command == "forget":
            print(json.dumps({"forgotten": forget(host.state_dir, args.channel)}))
        else:
            indexed = run(
                host.channels_root,
                host.state_dir,
                args.channel,
                force=args.force,
                backend=args.backend or host.index_backend,
                conda_python=args.conda_python or host.conda_python,
            )
            print(json.dumps({"indexed": indexed}))
    except (IndexFailed, LockTimeout, ConfigError, OSError) as exc:
        print(f"condaport-index: {exc}", file=sys.stderr)
        return 1
    return 0


def run_cli() -> None:
    exit_now(main())


if __name__ == "__main__":
    run_cli()
