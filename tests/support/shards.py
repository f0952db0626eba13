"""Check what a client sees of a subdir: its sharded repodata against repodata.json.

After any kind of change (upload, overwrite, delete, quarantine, retention, a killed run
healed), every shard must hold exactly the records repodata.json lists for its package
name, and the shard index must name no shard that is missing.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from condaport import shards


def _hex(record: dict) -> dict:
    return {k: v.hex() if isinstance(v, bytes) else v for k, v in record.items()}


def mismatches(get: Callable[[str], bytes | None]) -> list[str]:
    """What differs, as sentences; `get(path)` fetches a path relative to the subdir
    (None when the server answers 404)."""
    monolithic = get("repodata.json")
    index = get(shards.SHARD_INDEX)
    if monolithic is None or index is None:
        return ["no repodata.json or no shard index"]
    expected = shards.by_name(json.loads(monolithic))
    named = shards.decode(index)["shards"]
    problems = []
    if set(named) != set(expected):
        problems.append(f"names differ: {sorted(set(named) ^ set(expected))[:10]}")
    for name, digest in sorted(named.items()):
        body = get(f"{shards.SHARDS_FOLDER}/{digest.hex()}{shards.SHARD_SUFFIX}")
        if body is None:
            problems.append(f"{name}: the index names a missing shard")
            continue
        shard = shards.decode(body)
        for section in shards.SECTIONS:
            got = {f: _hex(r) for f, r in shard.get(section, {}).items()}
            if got != expected.get(name, {}).get(section, {}):
                problems.append(f"{name}: {section} differs from repodata.json")
    return problems
