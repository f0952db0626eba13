"""Fixtures of the upload suites: the host as molecule/uploading's verify.yml describes it
(CONDAPORT_UPLOAD and the variables tests/integration/conftest.py reads); run outside it,
the suites are skipped."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.support.live import require
from uploading.site import Site


@pytest.fixture(scope="session")
def site() -> Site:
    inventory = json.loads(require("CONDAPORT_UPLOAD"))
    return Site(
        base_url=require("CONDAPORT_BASE_URL").rstrip("/"),
        ca_file=Path(require("CONDAPORT_CA")),
        container=require("CONDAPORT_CONTAINER"),
        passwords={u["name"]: u["password"] for u in inventory["users"] if u.get("password")},
        tokens={t["name"]: t["token"] for t in inventory["tokens"]},
        mode=os.environ.get("CONDAPORT_AUTH_MODE", "verifier"),
    )
