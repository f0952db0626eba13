"""Backup and restore of a 10,000-package channel: times, and how long writers wait.

Builds one noarch subdir of N packages (default 10,000) and indexes it, as
bench/bench_shards.py does, then:
- backs it up (condaport.backup, as `condaport-channels backup` does) while a writer takes
  the channel's lock again and again, as uploads would: the backup's time, the archive's
  size, the longest the backup held the lock and the longest the writer waited for it;
- restores the archive into fresh folders (as onto a fresh host): its time;
- installs one package from the restored tree with py-rattler (file://): the time from the
  start of the restore to the first successful install.
Prints numbers; asserts nothing. Locally, no containers: the playbooks' round trips and the
fetch to the controller come on top.

Usage: python -m bench.bench_backup [--packages 10000]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

from condaport import index
from condaport.backup import Places, backup, restore
from condaport.locking import channel_lock
from tests.support.client import run_install
from tests.support.pkgbuild import build_tar_bz2


class Writer(threading.Thread):
    """Takes the channel's lock every 10 ms until stopped, as uploads would, recording how
    long each take waited."""

    def __init__(self, state: Path) -> None:
        super().__init__()
        self.state, self.stop, self.waits = state, threading.Event(), [0.0]

    def run(self) -> None:
        while not self.stop.is_set():
            started = time.perf_counter()
            with channel_lock(self.state, "main", timeout=30.0):
                self.waits.append(time.perf_counter() - started)
            time.sleep(0.01)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--packages", type=int, default=10_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        host = Places(root / "channels", root / "state", root / "etc", root / "auth", root)
        noarch = host.channels_root / "main" / "noarch"
        noarch.mkdir(parents=True)
        (host.etc_dir / "tls").mkdir(parents=True)
        (host.etc_dir / "tls" / "ca.key").write_text("key\n")
        host.auth_dir.mkdir()
        (host.auth_dir / "main.htpasswd").write_text("reader:hash\n")
        started = time.perf_counter()
        for n in range(args.packages):
            build_tar_bz2(noarch, f"pkg{n // 50:05d}", version=f"1.{n % 50}")
        print(f"built {args.packages} packages in {time.perf_counter() - started:.1f} s")
        index.run(host.channels_root, host.state_dir, None)
        size = sum(p.stat().st_size for p in host.channels_root.rglob("*") if p.is_file())
        print(f"channel tree: {size / 1e6:.1f} MB")

        writer = Writer(host.state_dir)
        writer.start()
        archive = root / "host.tar.zst"
        report = backup(host, ["main"], archive, writer=None)
        writer.stop.set()
        writer.join()
        print(
            f"backup: {report.seconds:.2f} s, {report.files} files,"
            f" archive {report.bytes / 1e6:.1f} MB;"
            f" channel lock held {report.longest_lock_seconds:.3f} s,"
            f" longest writer wait {max(writer.waits):.3f} s over {len(writer.waits) - 1} takes"
        )

        fresh = Places(root / "r/channels", root / "r/state", root / "r/etc", root / "r/auth")
        (root / "work").mkdir()
        started = time.perf_counter()
        result = restore(archive, fresh, writer=None, work_dir=root / "work")
        restored = time.perf_counter() - started
        print(f"restore: {restored:.2f} s (manifest checked: {len(result['repodata'])} repodata)")
        installed = run_install(
            (fresh.channels_root / "main").as_uri(),
            ["pkg00000"],
            root / "env",
            auth_file=None,
            ca_file=None,
            cache_dir=root / "cache",
        )
        ready = time.perf_counter() - started
        state = "ok" if installed.returncode == 0 else f"FAILED: {installed.stderr[-300:]}"
        print(f"restore to first install (py-rattler, file://): {ready:.2f} s ({state})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
