"""Fixtures for tests against a converged channel host (Molecule verify, the demo).

The host is described by environment variables that Molecule's verify.yml sets; run
outside it, the suite is skipped with that reason rather than pointed at nothing. The
helpers (`require`, `fetch`, `Channel`) are in tests/support/live.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.live import Channel, fetch, require


@pytest.fixture(scope="session")
def channel() -> Channel:
    return Channel(
        url=require("CONDAPORT_URL").rstrip("/"),
        ca_file=Path(require("CONDAPORT_CA")),
        user=require("CONDAPORT_USER"),
        password=require("CONDAPORT_PASSWORD"),
        container=require("CONDAPORT_CONTAINER"),
    )


@pytest.fixture(scope="session")
def repodata(channel: Channel) -> dict:
    answer = fetch(
        f"{channel.url}/noarch/repodata.json",
        ca_file=channel.ca_file,
        auth=(channel.user, channel.password),
    )
    assert answer.status == 200, answer.body[:200]
    return json.loads(answer.body)
