"""Eight uploaders at once while a client polls repodata: every upload lands, every fetch
parses, every file a fetch lists downloads at that moment, and the shards match."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from tests.support.live import fetch
from tests.support.pkgbuild import build_tar_bz2
from uploading.site import RUN, Connection, Site, credentials, listed, shard_mismatches


class RepodataPoller(threading.Thread):
    """Fetches repodata.json in a loop over one keep-alive connection: every fetch must
    parse, and every file it lists for the first time must download at that moment."""

    def __init__(self, site: Site, minimum: int) -> None:
        super().__init__(daemon=True)
        self.site, self.minimum = site, minimum
        self.fetches, self.errors, self.stop = 0, [], threading.Event()
        self.seen: set[str] = set()

    def run(self) -> None:
        connection = Connection(self.site)
        headers = credentials(self.site, "reader")
        while not (self.stop.is_set() and self.fetches >= self.minimum):
            connection.conn.request("GET", "/main/noarch/repodata.json", headers=headers)
            response = connection.conn.getresponse()
            body = response.read()
            self.fetches += 1
            try:
                data = json.loads(body)
            except ValueError as exc:
                self.errors.append(f"fetch {self.fetches}: unparsable repodata ({exc})")
                continue
            names = {**data["packages"], **data["packages.conda"]}
            for filename in sorted(set(names) - self.seen):
                connection.conn.request("HEAD", f"/main/noarch/{filename}", headers=headers)
                head = connection.conn.getresponse()
                head.read()
                if head.status != 200:
                    self.errors.append(f"{filename} listed but answered {head.status}")
                self.seen.add(filename)
        connection.close()


def test_eight_uploaders_in_parallel_all_land_while_a_client_polls(
    site: Site, tmp_path: Path
) -> None:
    jobs = []
    for job in range(8):
        folder = tmp_path / f"job{job}"
        jobs.append([build_tar_bz2(folder, f"job{RUN}-{job}-{n:02d}") for n in range(50)])
    poller = RepodataPoller(site, minimum=5000)
    poller.start()
    failures: list[str] = []

    def uploader(packages: list[Path], who: str) -> None:
        connection = Connection(site)
        for package in packages:
            reply = connection.send(
                "PUT", f"/main/noarch/{package.name}", package.read_bytes(), credentials(site, who)
            )
            if reply.status != 201:
                failures.append(f"{package.name}: {reply.status} {reply.body}")
        connection.close()

    callers = ["uploader", "maintainer", "bearer:ci-main", "apikey:ci-main"] * 2
    started = time.monotonic()
    threads = [
        threading.Thread(target=uploader, args=(packages, who))
        for packages, who in zip(jobs, callers, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=900)
    elapsed = time.monotonic() - started
    poller.stop.set()
    poller.join(timeout=600)
    assert failures == []
    assert poller.errors == []
    assert poller.fetches >= 5000
    names = listed(site, "main")
    missing = [p.name for packages in jobs for p in packages if p.name not in names]
    assert missing == []
    for package in (jobs[0][0], jobs[7][49]):
        downloaded = fetch(
            f"{site.base_url}/main/noarch/{package.name}",
            ca_file=site.ca_file,
            auth=("reader", site.passwords["reader"]),
        )
        assert downloaded.body == package.read_bytes()
    print(f"8 x 50 uploads in {elapsed:.1f} s; {poller.fetches} repodata fetches, 0 errors")
    assert shard_mismatches(site, "main") == []
