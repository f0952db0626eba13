"""Unit tests import the host-side tools straight from the role that installs them."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / "roles" / "condaport_channel" / "files"
for path in (TOOLS, REPO / "tests"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
