"""Event counters that outlive the process that counts them.

The upload service and the playbook's publisher are short-lived or socket-activated: an
in-memory counter would vanish between Prometheus scrapes. Each component keeps its own
small JSON file of totals in the state directory (`<state_dir>/metrics/<component>.json`)
and rewrites it atomically after each event; the metrics service only reads the files.
One file per component means one writing account per file, so no two accounts ever need
write access to the same file. Counting is best effort: a counter that cannot be written
never fails the upload or the publish it counts.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import threading
from pathlib import Path

FOLDER = "metrics"

# Counter keys are "<family>|<label>=<value>,...": a flat JSON object, cheap to rewrite.
Key = tuple[str, tuple[tuple[str, str], ...]]


def counters_dir(state_dir: Path) -> Path:
    return state_dir / FOLDER


def encode(family: str, labels: dict[str, str]) -> str:
    return family + "|" + ",".join(f"{name}={value}" for name, value in sorted(labels.items()))


def decode(key: str) -> Key:
    family, _, rest = key.partition("|")
    pairs = tuple(tuple(pair.split("=", 1)) for pair in rest.split(",") if "=" in pair)
    return family, pairs  # type: ignore[return-value]


class Counters:
    """The totals of one component, rewritten after each count."""

    def __init__(self, state_dir: Path, component: str) -> None:
        self.path = counters_dir(state_dir) / f"{component}.json"
        self._lock = threading.Lock()

    def _load(self) -> dict[str, int]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, int)}

    def count(self, family: str, **labels: str) -> None:
        """Add one to `family{labels}` and persist; failures are swallowed (see module).
        Read, added to and written under an flock: two publish runs at once both count."""
        key = encode(family, labels)
        with self._lock:
            try:
                self.path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
                with open(self.path.with_suffix(".lock"), "a") as lock:
                    fcntl.flock(lock, fcntl.LOCK_EX)
                    totals = self._load()
                    totals[key] = totals.get(key, 0) + 1
                    self._write(totals)
            except OSError:
                pass

    def _write(self, totals: dict[str, int]) -> None:
        handle, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".counters-")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                json.dump(totals, out, separators=(",", ":"))
            os.chmod(temporary, 0o644)
            os.replace(temporary, self.path)
        except BaseException:
            os.unlink(temporary)
            raise


def read_all(state_dir: Path) -> dict[Key, int]:
    """Every component's totals, summed by family and labels (what the exporter serves)."""
    totals: dict[Key, int] = {}
    folder = counters_dir(state_dir)
    try:
        files = sorted(p for p in folder.iterdir() if p.suffix == ".json" and p.name[0] != ".")
    except OSError:
        return totals
    for path in files:
        for key, value in Counters(state_dir, path.stem)._load().items():
            decoded = decode(key)
            totals[decoded] = totals.get(decoded, 0) + value
    return totals
