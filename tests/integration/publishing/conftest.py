"""Fixtures of the publishing suites. The host and the `channel` fixture come from
tests/integration/conftest.py (the environment molecule's verify.yml sets)."""

from __future__ import annotations

import pytest

from publishing.channel import listed
from tests.support.live import Channel
from tests.support.pkgbuild import build_conda, build_tar_bz2
from tests.support.playbook import playbook


@pytest.fixture(scope="session")
def baseline(channel: Channel, tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Two good packages every suite expects to keep installing, published once."""
    folder = tmp_path_factory.mktemp("baseline")
    build_conda(folder, "base-tool", version="1.0", build="0")
    build_tar_bz2(folder, "native-lib", version="2.0", build="0", subdir="linux-64")
    # Overwrite only so that the suites can be re-run against the same host.
    result = playbook(
        "publish.yml",
        {"condaport_publish_source_dir": str(folder), "condaport_publish_overwrite": True},
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert "base-tool-1.0-0.conda" in listed(channel)
    assert "native-lib-2.0-0.tar.bz2" in listed(channel, "linux-64")
    return {"base-tool-1.0-0.conda", "native-lib-2.0-0.tar.bz2"}
