"""Throwaway NGINX instances on loopback for tests that render the roles' configuration.

One prefix folder holds every instance's configuration, logs and temp folders; the tests
pick free ports themselves.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


@contextmanager
def running(prefix: Path, checked: Path, *others: Path) -> Iterator[None]:
    """Start NGINX with each configuration (the others first: they are what `checked`
    talks to), after `nginx -t` accepted `checked`; stop them all afterwards."""
    test = subprocess.run(
        [NGINX, "-t", "-p", str(prefix), "-c", str(checked)], capture_output=True, text=True
    )
    assert test.returncode == 0, test.stderr
    configs = [*others, checked]
    for config in configs:
        subprocess.run([NGINX, "-p", str(prefix), "-c", str(config)], check=True)
    time.sleep(0.3)
    try:
        yield
    finally:
        for config in configs:
            stop = [NGINX, "-p", str(prefix), "-c", str(config), "-s", "stop"]
            subprocess.run(stop, check=False, capture_output=True)
