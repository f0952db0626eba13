"""Process exit for the command-line tools."""

from __future__ import annotations

import os
import sys
from typing import NoReturn


def exit_now(code: int) -> NoReturn:
    """Flush the output and leave without interpreter finalization.

    py-rattler's Rust runtime can crash (SIGSEGV) while Python tears down its threads,
    after the work is done and the answer printed; the caller would then see a failure
    for a run that succeeded. By the time this is called every lock is released and every
    file closed, so skipping finalization loses nothing.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
