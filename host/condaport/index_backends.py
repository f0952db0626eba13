"""The indexers that can write a subdir's repodata.json (and .zst) from its package files:
a small interface, chosen once by name from the host configuration.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path


class IndexFailed(RuntimeError):
    """An index run failed; the previous repodata is still in place."""


class Backend:
    """An indexer that writes a subdir's repodata.json (and .zst) from its package files."""

    name = ""
    # Whether it writes the records condaport's in-place editor writes (rattler's), so a
    # change may be applied by editing them instead of a full run.
    edits_in_place = False
    conda_python: str | None = None

    def index(self, channel_dir: Path, subdir: str, force: bool) -> None:
        raise NotImplementedError


class RattlerBackend(Backend):
    name = "rattler"
    edits_in_place = True

    def index(self, channel_dir: Path, subdir: str, force: bool) -> None:
        from rattler import Subdir
        from rattler.index import index_fs

        try:
            asyncio.run(
                index_fs(
                    channel_dir,
                    target_platform=Subdir(subdir),
                    write_zst=True,
                    # The shards are condaport's own (condaport.subdir_index).
                    write_shards=False,
                    # rattler keeps the record of a file name its repodata already lists,
                    # even when the file was replaced: then every record must be read again.
                    force=force,
                )
            )
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # rattler panics surface as BaseException
            raise IndexFailed(
                f"rattler index of {channel_dir.name}/{subdir} failed: {exc}"
            ) from None


class CondaIndexBackend(Backend):
    name = "conda-index"

    def __init__(self, conda_python: str | None) -> None:
        if not conda_python:
            raise IndexFailed("the conda-index backend needs --conda-python")
        self.conda_python = conda_python

    def index(self, channel_dir: Path, subdir: str, force: bool) -> None:
        if force:
            # conda-index caches records by file name, size and mtime in the subdir's
            # .cache folder: without it, every package is read again.
            shutil.rmtree(channel_dir / subdir / ".cache", ignore_errors=True)
        argv = [
            str(self.conda_python),
            "-m",
            "conda_index",
            "--subdir",
            subdir,
            "--zst",
            str(channel_dir),
        ]
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
            raise IndexFailed(
                f"conda-index of {channel_dir.name}/{subdir} exited {result.returncode}: "
                + " | ".join(tail)
            )


BACKENDS = ("rattler", "conda-index")


def backend_named(name: str, conda_python: str | None = None) -> Backend:
    """The backend the host configuration (or an option) names."""
    if name == RattlerBackend.name:
        return RattlerBackend()
    if name == CondaIndexBackend.name:
        return CondaIndexBackend(conda_python)
    raise IndexFailed(f"unknown backend {name!r} (one of {', '.join(BACKENDS)})")
