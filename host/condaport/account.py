"""The one account that writes inside the channel trees, and how root's commands become it.

Root creates only the top-level folders (channels, staging, state) and hands them to this
account. Everything inside them is written by it alone: the upload service runs as it, and
the commands root runs (the index handler, the SSH publish, an operator typing
`condaport-index run`) switch to it before they touch anything there. A link or folder
planted inside a tree can then only ever lead this account to what it may write anyway:
no root process follows it.
"""

from __future__ import annotations

import os
import pwd


class AccountError(RuntimeError):
    """The writer account is missing or unfit; the message says what to do."""


def become_writer(user: str | None) -> None:
    """Drop every privilege to `user` when running as root; no-op otherwise.

    Without a configured writer (a developer's checkout, unit tests with --channels-root)
    root stays root: only a converged host names one.
    """
    if os.geteuid() != 0 or not user:
        return
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise AccountError(
            f"the writer account {user!r} does not exist: converge the host (site.yml)"
        ) from None
    if entry.pw_uid == 0 or entry.pw_gid == 0:
        raise AccountError(f"the writer account {user!r} must not be root or in root's group")
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    if os.getuid() == 0 or os.geteuid() == 0:  # setuid cannot half-fail, but never assume
        raise AccountError(f"could not switch to the writer account {user!r}")
    os.umask(0o022)
    os.environ["HOME"] = entry.pw_dir
    os.environ["USER"] = os.environ["LOGNAME"] = user
