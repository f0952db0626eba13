"""The upload service killed mid-upload: nothing half placed is served, and the next upload
starts the service again, which clears what the killed one staged."""

from __future__ import annotations

import http.client
import ssl
import subprocess
import time
from pathlib import Path

from tests.support.pkgbuild import build_large_conda, build_tar_bz2
from uploading.site import (
    RUN,
    STAGING,
    TREE,
    Reply,
    Site,
    credentials,
    installs,
    listed,
    on_host,
    put,
    send,
)


def test_the_service_killed_mid_upload_serves_nothing_half_placed(
    site: Site, tmp_path: Path
) -> None:
    """NGINX hands the service a body only once it holds all of it, so the service is
    killed while it stages or validates one: by a watcher on the host that fires the
    moment the staged file appears (polling from here would miss it)."""
    before = listed(site, "main")
    package = build_large_conda(tmp_path / "dist", 3 * 1024 * 1024, name=f"interrupted-{RUN}")
    name = package.name
    # The service's pid is looked up before, and killed directly: `systemctl kill` takes
    # tens of milliseconds over D-Bus, long enough for a small upload to be placed and
    # indexed (the faster uploads of 0.11.0 were, once, in CI). The watcher polls in one
    # process: a shell loop forking `ls` and `sleep` every few milliseconds missed the
    # staged file once in CI (0.12.1) and then ran into the timeout.
    staged = f"{STAGING}/*/{name}"
    watch = f"""
import glob, os, signal, subprocess, sys, time
shown = subprocess.run(
    ["systemctl", "show", "--property=MainPID", "--value", "condaport-upload.service"],
    capture_output=True, text=True,
)
pid = int(shown.stdout.strip() or 0)
if pid <= 0:
    sys.exit(2)
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    if glob.glob({staged!r}):
        os.kill(pid, signal.SIGKILL)
        print("killed")
        sys.exit(0)
    time.sleep(0.0002)
sys.exit(1)
"""
    watcher = subprocess.Popen(
        ["podman", "exec", site.container, "python3", "-c", watch],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(1)  # the watcher is looking
    outcome: Reply | Exception
    try:
        outcome = send(
            site, "PUT", f"/main/noarch/{name}", package.read_bytes(), credentials(site, "uploader")
        )
    except (ConnectionError, http.client.HTTPException, ssl.SSLError) as exc:
        outcome = exc
    try:
        watched, _ = watcher.communicate(timeout=30)
    except subprocess.TimeoutExpired:  # the upload went through unseen: fail now, not at 120 s
        watcher.kill()
        watched, _ = watcher.communicate()
    assert "killed" in watched, "the body was not being staged when the service was killed"
    assert not isinstance(outcome, Reply) or outcome.status >= 500, outcome
    assert name not in listed(site, "main")
    assert set(before) <= set(listed(site, "main"))
    served = on_host(site, "find", f"{TREE}/main", "-name", f"*{name}*").stdout.strip()
    assert served == ""
    # The next upload starts the service again, which clears what the killed one staged.
    package = build_tar_bz2(tmp_path, f"after-kill-{RUN}")
    assert put(site, "uploader", "main", package).status == 201
    assert on_host(site, "find", STAGING, "-name", name).stdout == ""
    assert package.name in listed(site, "main")
    installs(site, tmp_path, "main", f"after-kill-{RUN}")
