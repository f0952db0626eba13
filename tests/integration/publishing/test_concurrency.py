"""Eight CI jobs publish at once while a client keeps fetching repodata: every job lands
completely, every fetch parses, and every file a fetch lists downloads at that moment."""

from __future__ import annotations

import http.client
import json
import ssl
import threading
from base64 import b64encode
from pathlib import Path

from publishing.channel import RUN, listed
from tests.support.live import Channel
from tests.support.pkgbuild import build_tar_bz2
from tests.support.playbook import start_playbook


class RepodataPoller(threading.Thread):
    """Fetches repodata.json in a loop over one keep-alive connection; every fetch must parse,
    and every file it lists for the first time must download at that moment."""

    def __init__(self, channel: Channel, minimum: int) -> None:
        super().__init__(daemon=True)
        self.channel, self.minimum = channel, minimum
        self.fetches, self.errors, self.stop = 0, [], threading.Event()
        self.seen: set[str] = set()

    def run(self) -> None:
        base = self.channel.url.split("://", 1)[1]
        host_port, path = base.split("/", 1)
        host, port = host_port.split(":")
        context = ssl.create_default_context(cafile=str(self.channel.ca_file))
        token = b64encode(f"{self.channel.user}:{self.channel.password}".encode()).decode()
        headers = {"Authorization": f"Basic {token}"}
        conn = http.client.HTTPSConnection(host, int(port), context=context, timeout=30)
        while not (self.stop.is_set() and self.fetches >= self.minimum):
            conn.request("GET", f"/{path}/noarch/repodata.json", headers=headers)
            response = conn.getresponse()
            body = response.read()
            self.fetches += 1
            try:
                repodata = json.loads(body)
            except ValueError as exc:
                self.errors.append(f"fetch {self.fetches}: unparsable repodata ({exc})")
                continue
            names = {**repodata["packages"], **repodata["packages.conda"]}
            for filename in sorted(set(names) - self.seen):
                conn.request("HEAD", f"/{path}/noarch/{filename}", headers=headers)
                head = conn.getresponse()
                head.read()
                if head.status != 200:
                    self.errors.append(f"{filename} listed but answered {head.status}")
                self.seen.add(filename)


def test_eight_concurrent_publishers_all_land_while_a_client_polls(
    channel: Channel, baseline: set[str], tmp_path: Path
) -> None:
    folders = []
    for job in range(8):
        folder = tmp_path / f"job{job}"
        for n in range(50):
            build_tar_bz2(folder, f"job{RUN}-{job}-{n:02d}")
        folders.append(folder)
    poller = RepodataPoller(channel, minimum=5000)
    poller.start()
    jobs = [
        start_playbook("publish.yml", {"condaport_publish_source_dir": str(folder)})
        for folder in folders
    ]
    outputs = [job.communicate(timeout=900)[0] for job in jobs]
    poller.stop.set()
    poller.join(timeout=600)
    assert [job.returncode for job in jobs] == [0] * 8, [o[-1500:] for o in outputs]
    assert poller.errors == []
    assert poller.fetches >= 5000
    names = listed(channel)
    missing = [f"job{RUN}-{j}-{n:02d}-1.0-0.tar.bz2" for j in range(8) for n in range(50)]
    assert [m for m in missing if m not in names] == []
    print(f"concurrency: 8 x 50 packages, {poller.fetches} repodata fetches, 0 errors")
