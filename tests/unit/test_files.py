"""Replacing served files: whole, and dated after what they replace when NGINX's ETag
(the mtime in whole seconds, and the size) would otherwise not change."""

from __future__ import annotations

import os
import time
from pathlib import Path

from condaport.files import dated_after_their_predecessors, replace_atomically


def _date(path: Path, second: int) -> None:
    os.utime(path, (second, second))


def test_a_replacement_in_the_same_second_is_dated_one_second_later(tmp_path: Path) -> None:
    target = tmp_path / "repodata.json"
    target.write_bytes(b'{"generation": 1}')
    ahead = int(time.time()) + 100  # as if written earlier in the clock's current second
    _date(target, ahead)
    replace_atomically(target, b'{"generation": 2}')
    assert target.read_bytes() == b'{"generation": 2}'
    assert int(target.stat().st_mtime) == ahead + 1
    assert target.stat().st_mode & 0o777 == 0o644


def test_a_replacement_of_another_size_keeps_the_clocks_time(tmp_path: Path) -> None:
    target = tmp_path / "repodata.json"
    target.write_bytes(b'{"generation": 1}')
    ahead = int(time.time()) + 100
    _date(target, ahead)
    replace_atomically(target, b'{"generation": 10}')  # its ETag differs by the size
    assert target.stat().st_mtime <= time.time() + 1


def test_a_replacement_of_an_older_file_keeps_the_clocks_time(tmp_path: Path) -> None:
    target = tmp_path / "repodata.json"
    target.write_bytes(b"old")
    _date(target, int(time.time()) - 3600)
    before = time.time()
    replace_atomically(target, b"new")
    assert before - 1 <= target.stat().st_mtime <= time.time() + 1
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_files_others_rewrite_in_the_block_are_dated_after_their_predecessors(
    tmp_path: Path,
) -> None:
    rewritten, replaced, untouched, new = (tmp_path / n for n in ("a", "b", "c", "d"))
    ahead = int(time.time()) + 100
    for path in (rewritten, replaced, untouched):
        path.write_bytes(b"1")
        _date(path, ahead)
    with dated_after_their_predecessors([rewritten, replaced, untouched, new]):
        rewritten.write_bytes(b"2")  # in place, as some writers do
        (tmp_path / "b.tmp").write_bytes(b"2")
        os.replace(tmp_path / "b.tmp", replaced)
        new.write_bytes(b"2")
    assert int(rewritten.stat().st_mtime) == ahead + 1
    assert int(replaced.stat().st_mtime) == ahead + 1
    assert int(untouched.stat().st_mtime) == ahead
    assert int(new.stat().st_mtime) <= time.time() + 1


def test_a_link_in_place_of_an_index_file_leads_the_dating_nowhere(tmp_path: Path) -> None:
    # Root indexes folders other accounts may write to: a link there, re-pointed while the
    # backend runs, must not get root to change another file's date.
    first, second, link = tmp_path / "first", tmp_path / "second", tmp_path / "repodata.json"
    ahead = int(time.time()) + 100
    for target in (first, second):
        target.write_bytes(b"same size")
        _date(target, ahead)
    link.symlink_to(first)
    with dated_after_their_predecessors([link]):
        link.unlink()
        link.symlink_to(second)
    assert int(second.stat().st_mtime) == ahead
