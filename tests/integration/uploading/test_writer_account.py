"""The one writer account: index runs started by root write as it, everything in the trees
is its own, and the service replaces what root's run wrote. Last by name: it checks the
files test_indexing uploaded."""

from __future__ import annotations

import tempfile
from pathlib import Path

from tests.support.pkgbuild import build_tar_bz2
from uploading.site import RUN, TREE, Site, listed, on_host, put


def test_index_runs_started_by_root_write_as_the_writer_account(site: Site) -> None:
    """Uploads (the service) and index runs (started by root, run as the writer) share the
    tree and the lock; everything in it belongs to the one writer account, 0644 for NGINX."""
    result = on_host(site, "condaport-index", "run", "--force", "--channel", "main")
    assert result.returncode == 0, result.stderr
    stat = on_host(site, "stat", "-c", "%U %G %a %n", f"{TREE}/main/noarch/repodata.json").stdout
    owner, group, mode, _ = stat.split()
    assert (owner, group, mode) == ("condaport", "condaport", "644"), stat
    uploaded = on_host(
        site, "sh", "-c", f"stat -c '%U %a' {TREE}/main/noarch/quick-*-1.0-0.tar.bz2 | sort -u"
    ).stdout.split("\n")
    assert {line for line in uploaded if line} == {"condaport 644"}
    # Package files an operator copied in by hand (the big channel's) keep their owner.
    trees = (TREE, "/srv/condaport/staging", "/var/lib/condaport")
    by_hand = ("!", "-name", "*.conda", "!", "-name", "*.tar.bz2")
    foreign = on_host(site, "find", *trees, "!", "-user", "condaport", *by_hand).stdout.split()
    assert foreign == [], foreign
    # And the service replaces what root's index run wrote, under the same lock.
    package = build_tar_bz2(Path(tempfile.mkdtemp()), f"after-root-{RUN}")
    assert put(site, "uploader", "main", package).status == 201
    assert package.name in listed(site, "main")
