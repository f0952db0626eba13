"""Where an upload's time goes in a large subdir: each step of intake.accept timed apart.

Builds one noarch subdir of N packages (N/50 names, as bench_shards) and indexes it, or
reuses the one an earlier run kept (--keep DIR: built there the first time, reused after;
100,000 packages take some 4 minutes to build and index). Then sends U uploads through
condaport.intake, as the upload service does, and prints the median upload and each
step's mean share (the first upload, which reads the subdir's repodata, is left out).
With --cprofile, the functions that took the most time, over all timed uploads.

Usage: python -m bench.profile_upload [--packages 100000] [--uploads 10] [--keep DIR]
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import pstats
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from condaport import channel_files, index, intake, repodata, shards, subdir_index
from condaport.config import ChannelConfig, HostConfig
from condaport.index_backends import RattlerBackend
from tests.support.pkgbuild import build_tar_bz2

# (owner, attribute, label): what an upload does, in order.
STEPS = (
    (channel_files.ChannelFiles, "sweep_partials", "sweep half-written files"),
    (channel_files.ChannelFiles, "rows", "look at the files (a stat each)"),
    (subdir_index.SubdirIndex, "is_fresh", "fingerprint check"),
    (intake, "inspect_package", "validate the package"),
    (channel_files.ChannelFiles, "place", "place it"),
    (repodata.Document, "render", "render repodata.json"),
    (repodata, "write_bytes", "write repodata.json and .zst"),
    (shards, "sync", "shard, shard index"),
    (subdir_index.SubdirIndex, "_record_fingerprint", "record the fingerprint"),
)


def timing(spent: dict[str, float]) -> None:
    """Wrap each step so its time adds up in `spent`."""

    def timed(function: Callable, label: str) -> Callable:
        @functools.wraps(function)
        def wrapper(*args: object, **kwargs: object) -> object:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[label] = spent.get(label, 0.0) + time.perf_counter() - started

        return wrapper

    for owner, attribute, label in STEPS:
        setattr(owner, attribute, timed(getattr(owner, attribute), label))


def channel_of(root: Path, packages: int, per_name: int) -> Path:
    """`root/channels` with one indexed noarch subdir of `packages` packages."""
    channels, noarch = root / "channels", root / "channels" / "main" / "noarch"
    if (noarch / repodata.REPODATA).is_file():
        print(f"reusing {noarch} ({len(channel_files.package_rows(noarch))} packages)")
        return channels
    noarch.mkdir(parents=True)
    started = time.perf_counter()
    for n in range(packages):
        build_tar_bz2(noarch, f"pkg{n // per_name:05d}", version=f"1.{n % per_name}")
    print(f"built {packages} packages in {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    index.run(channels, root / "state", None)
    print(f"cold full index: {time.perf_counter() - started:.1f} s")
    return channels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--packages", type=int, default=100_000)
    parser.add_argument("--uploads", type=int, default=10)
    parser.add_argument("--builds-per-name", type=int, default=50)
    parser.add_argument("--keep", type=Path, help="build the channel here once, reuse it after")
    parser.add_argument("--cprofile", action="store_true", help="also print the top functions")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        root = args.keep or Path(scratch)
        channels = channel_of(root, args.packages, args.builds_per_name)
        host = HostConfig(channels, root / "state")
        channel = ChannelConfig("main", ("noarch",))
        guard = intake.ChannelGuard()
        indexes = subdir_index.Indexes(root / "state", RattlerBackend())
        spent: dict[str, float] = {}
        timing(spent)
        profile = cProfile.Profile() if args.cprofile else None

        def upload() -> float:
            tag = uuid.uuid4().hex[:8]  # a kept channel gains a new name each upload
            staged = build_tar_bz2(Path(scratch) / tag, f"fresh{tag}")
            started = time.perf_counter()
            result = intake.accept(
                host,
                channel,
                staged,
                md5="0" * 32,
                url_subdir="noarch",
                overwrite=False,
                guard=guard,
                lock_timeout=60.0,
                indexes=indexes,
            )
            assert result.status == "added", result
            return time.perf_counter() - started

        print(f"first upload (reads the subdir): {upload():.3f} s")
        spent.clear()
        timings = []
        for _ in range(args.uploads):
            if profile:
                profile.enable()
            timings.append(upload())
            if profile:
                profile.disable()
        mean = statistics.fmean(timings)
        print(
            f"upload until installable: p50 {statistics.median(timings):.3f} s,"
            f" mean {mean:.3f} s over {args.uploads} (min {min(timings):.3f}, max"
            f" {max(timings):.3f})"
        )
        for _, _, label in STEPS:
            share = spent.get(label, 0.0) / args.uploads
            print(f"  {label:<34} {share:6.3f} s  {100 * share / mean:5.1f} %")
        rest = mean - sum(spent.values()) / args.uploads
        print(f"  {'everything else':<34} {rest:6.3f} s  {100 * rest / mean:5.1f} %")
        if profile:
            pstats.Stats(profile).sort_stats("tottime").print_stats(20)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
