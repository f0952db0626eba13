"""Sharded repodata at scale: upload until installable, bytes a solve fetches, index runs.

Builds one noarch subdir of N packages (default 100,000 under N/50 names), indexes it cold
(timed), then:
- sends U uploads (default 20) through condaport.intake, as the upload service does once a
  body is staged, timing each until it returns (repodata.json, .zst, the name's shard and
  the shard index list the package): p50 and p95;
- compares the bytes a client fetches to solve for one package (the shard index and that
  name's shard) with the monolithic repodata.json.zst;
- times the index handler (`condaport-index run`) after one package is copied in by hand.
Prints numbers; asserts nothing. Compare ratios within one run (this VM drifts).

Usage: python -m bench.bench_shards [--packages 100000] [--uploads 20]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from condaport import index, intake
from condaport.config import ChannelConfig, HostConfig
from condaport.index_backends import RattlerBackend
from condaport.subdir_index import Indexes
from tests.support.pkgbuild import build_tar_bz2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--packages", type=int, default=100_000)
    parser.add_argument("--uploads", type=int, default=20)
    # conda-forge: about 1.3 million files under 25,000 names (some 50 per name). The shard
    # index costs ~40 bytes per name, so fewer files per name make it a larger share.
    parser.add_argument("--builds-per-name", type=int, default=50)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        channels, state = root / "channels", root / "state"
        noarch = channels / "main" / "noarch"
        noarch.mkdir(parents=True)
        started = time.perf_counter()
        for n in range(args.packages):
            per = args.builds_per_name
            build_tar_bz2(noarch, f"pkg{n // per:05d}", version=f"1.{n % per}")
        print(f"built {args.packages} packages in {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        index.run(channels, state, None)
        print(f"cold full index (rattler + shards): {time.perf_counter() - started:.2f} s")

        host = HostConfig(channels, state)
        channel = ChannelConfig("main", ("noarch",))
        guard, indexes = intake.ChannelGuard(), Indexes(state, RattlerBackend())
        timings = []
        for n in range(args.uploads):
            staged = build_tar_bz2(root / f"staged{n}", f"fresh{n:03d}")
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
            timings.append(time.perf_counter() - started)
            assert result.status == "added", result
        timings.sort()
        p95 = timings[max(0, int(len(timings) * 0.95) - 1)]
        print(
            f"upload until installable at {args.packages} packages, shards on:"
            f" p50 {statistics.median(timings):.3f} s, p95 {p95:.3f} s"
            f" (min {timings[0]:.3f}, max {timings[-1]:.3f}; the first upload reads the subdir)"
        )

        monolithic = (noarch / "repodata.json.zst").stat().st_size
        try:
            from condaport import shards
        except ImportError:  # a condaport without shards, run for comparison
            named = {}
        else:
            named = shards.read_index(noarch) or {}
        if named:
            one = shards.shard_path(noarch, named["pkg00007"]).stat().st_size
            index_size = (noarch / shards.SHARD_INDEX).stat().st_size
            fetched = index_size + one
            print(
                f"a solve for one package: shard index {index_size} B + its shard {one} B ="
                f" {fetched} B against repodata.json.zst {monolithic} B"
                f" ({100 * fetched / monolithic:.2f} %, {args.builds_per_name} files per name)"
            )
            # What no compression removes: the index's sha256 per name, and the shard's
            # sha256 and md5 per file (CEP-16 keeps them as raw bytes).
            digests = 32 * len(named) + 48 * args.builds_per_name
            print(
                f"  of which digests: {32 * len(named)} B in the index ({len(named)} names)"
                f" + {48 * args.builds_per_name} B in the shard ="
                f" {100 * digests / monolithic:.2f} % of repodata.json.zst at least"
            )

        build_tar_bz2(noarch, "by-hand")
        started = time.perf_counter()
        index.run(channels, state, None)
        print(f"index handler after one package copied in: {time.perf_counter() - started:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
