"""The three tiers of molecule/edges: a primary, two caching edges, HAProxy in front.

verify.yml describes them in CONDAPORT_EDGES (JSON); run outside it, the suite is skipped
rather than pointed at nothing. `Tiers` is in tests/support/live.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.support.live import Tiers


@pytest.fixture(scope="session")
def tiers() -> Tiers:
    raw = os.environ.get("CONDAPORT_EDGES")
    if not raw:
        pytest.skip("CONDAPORT_EDGES is not set: these tests run from molecule/edges verify")
    spec = json.loads(raw)
    users = spec["users"]
    return Tiers(
        primary_url=spec["primary_url"],
        edge_url=spec["edge_url"],
        balancer_url=spec["balancer_url"],
        ca_file=Path(spec["ca_file"]),
        primary=spec["primary"],
        edges=spec["edges"],
        balancer=spec["balancer"],
        cache_dir=spec["cache_dir"],
        index_validity=int(spec["index_validity"]),
        passwords={u["name"]: u["password"] for u in users if u.get("password")},
        tokens={u["name"]: u.get("tokens", []) for u in users},
        upload_token=spec["upload_token"],
        channels=spec["channels"],
        proxy_index_validity=int(spec["proxy_index_validity"]),
        edge_auth_modes=spec["edge_auth_modes"],
        proxy_cache_dir=spec["proxy_cache_dir"],
        edge_proxy_protocol_port=int(spec["edge_proxy_protocol_port"]),
        balancer_port=int(spec["balancer_port"]),
    )
