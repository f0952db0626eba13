"""What the inventory declares (condaport_channels[].patches, .broken) through the host
configuration and `condaport-channels adjust`: a package declared broken before it is
published never shows in the index, not even for the moment after its upload."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from condaport import index, intake
from condaport.config import ChannelConfig, HostConfig
from condaport.index_backends import RattlerBackend
from condaport.subdir_index import Indexes
from tests.support.pkgbuild import build_conda


def _configure(tmp_path: Path, broken: dict[str, str], patches: dict[str, dict]) -> Path:
    config = tmp_path / "condaport.json"
    channel = {"name": "main", "subdirs": ["noarch"], "patches": patches, "broken": broken}
    config.write_text(
        json.dumps(
            {
                "channels_root": str(tmp_path / "channels"),
                "state_dir": str(tmp_path / "state"),
                "channels": [channel],
            }
        )
    )
    return config


def _adjust(config: Path, *extra: str) -> dict:
    argv = [sys.executable, "-m", "condaport.channels_command", "adjust", "--config", str(config)]
    done = subprocess.run([*argv, *extra], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_package_declared_broken_before_its_upload_never_shows(tmp_path: Path) -> None:
    (tmp_path / "channels" / "main" / "noarch").mkdir(parents=True)
    index.run(tmp_path / "channels", tmp_path / "state", None)
    config = _configure(
        tmp_path,
        {"noarch/doomed-1.0-0.conda": "declared broken"},
        {"noarch/fixed-1.0-0.conda": {"license": "MIT"}},
    )
    assert _adjust(config, "--dry-run")["changed"] is True
    assert _adjust(config)["changed"] is True
    assert _adjust(config)["changed"] is False  # a converge that changes nothing
    host = HostConfig(tmp_path / "channels", tmp_path / "state")
    indexes = Indexes(host.state_dir, RattlerBackend(), in_child=False)
    for name in ("doomed", "fixed"):
        staged = build_conda(tmp_path / name, name)
        result = intake.accept(
            host, ChannelConfig("main", ("noarch",)), staged, md5="0" * 32, url_subdir="noarch",
            overwrite=False, guard=intake.ChannelGuard(), lock_timeout=5.0, indexes=indexes,
        )  # fmt: skip
        assert result.status == "added"
    data = json.loads((tmp_path / "channels/main/noarch/repodata.json").read_bytes())
    assert "doomed-1.0-0.conda" not in data["packages.conda"]
    assert data["removed"] == ["doomed-1.0-0.conda"]
    assert data["packages.conda"]["fixed-1.0-0.conda"]["license"] == "MIT"
    # Declared no more: both taken back, the records published as the packages say.
    config = _configure(tmp_path, {}, {})
    assert _adjust(config)["changed"] is True
    data = json.loads((tmp_path / "channels/main/noarch/repodata.json").read_bytes())
    assert "doomed-1.0-0.conda" in data["packages.conda"]
    assert "license" not in data["packages.conda"]["fixed-1.0-0.conda"]
