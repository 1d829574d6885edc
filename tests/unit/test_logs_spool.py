"""The on-disk spool: append, take, commit, reopen after a crash, torn tails, ordering of files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runner.logs.otlp import INFO, decode_request, encode_record, export_request
from runner.logs.spool import (
    SpoolError,
    SpoolFile,
    SpoolHeader,
    all_files,
    count_pending,
    files_for_key,
    read_header,
    spool_path,
)

pytestmark = pytest.mark.unit


def frames(start: int, count: int, size: int = 10) -> list[bytes]:
    return [encode_record(1_000 + i, INFO, f"r{i}:" + "z" * size, b"") for i in range(start, start + count)]


def bodies(frame_list: list[bytes]) -> list[str]:
    return [r.body.split(":")[0] for r in decode_request(export_request(b"", frame_list))]


def new_spool(tmp_path: Path, key: str = "exe1", created: int = 1) -> SpoolFile:
    header = SpoolHeader(spool_key=key, log_stream_id="log1", created_ns=created, resource={"runner.id": "r"})
    return SpoolFile.create(spool_path(tmp_path, key, created), header)


def test_append_take_commit_in_order(tmp_path: Path) -> None:
    spool = new_spool(tmp_path)
    spool.append(frames(0, 5))
    spool.append(frames(5, 5))
    assert spool.pending == 10
    first, _, end = spool.take(4, 1_000_000)
    assert bodies(first) == ["r0", "r1", "r2", "r3"]
    second, _, end2 = spool.take(100, 1_000_000)
    assert bodies(second) == [f"r{i}" for i in range(4, 10)]
    assert not spool.has_untaken
    spool.commit(end, len(first))
    assert spool.pending == 6
    spool.rewind()  # a failed POST of the second batch: take it again
    again, _, _ = spool.take(100, 1_000_000)
    assert again == second
    spool.commit(end2, len(second))
    assert spool.drained()
    spool.close()
    assert not spool.path.exists()  # fully delivered: removed


def test_take_respects_the_byte_limit_but_returns_at_least_one_frame(tmp_path: Path) -> None:
    spool = new_spool(tmp_path)
    spool.append(frames(0, 3, size=5000))
    taken, _, _ = spool.take(100, 6000)
    assert len(taken) == 1
    taken, _, _ = spool.take(100, 10)
    assert len(taken) == 1


def test_reopen_resumes_after_the_committed_offset(tmp_path: Path) -> None:
    spool = new_spool(tmp_path)
    spool.append(frames(0, 6))
    _, _, end = spool.take(2, 1_000_000)
    spool.commit(end, 2)
    spool.close()  # not drained: kept and fsynced
    assert spool.path.exists()
    assert count_pending(spool.path) == 4

    reopened = SpoolFile.open_existing(spool.path)
    assert reopened.header == SpoolHeader("exe1", "log1", 1, {"runner.id": "r"})
    assert reopened.pending == 4
    rest, _, _ = reopened.take(100, 1_000_000)
    assert bodies(rest) == ["r2", "r3", "r4", "r5"]
    reopened.close()


def test_a_torn_last_frame_is_cut_off(tmp_path: Path) -> None:
    spool = new_spool(tmp_path)
    spool.append(frames(0, 3))
    spool.close()
    with spool.path.open("ab") as f:
        f.write(frames(3, 1)[0][:-4])  # a crash in the middle of a write
    reopened = SpoolFile.open_existing(spool.path)
    assert reopened.pending == 3
    taken, _, _ = reopened.take(100, 1_000_000)
    assert bodies(taken) == ["r0", "r1", "r2"]
    reopened.append(frames(3, 1))  # appending after the cut keeps the file well formed
    more, _, _ = reopened.take(100, 1_000_000)
    assert bodies(more) == ["r3"]
    reopened.close()


def test_garbage_in_the_middle_is_cut_when_taken(tmp_path: Path) -> None:
    spool = new_spool(tmp_path)
    spool.append(frames(0, 2))
    spool.flush()
    spool.append([b"\x00\x01garbage"])
    taken, _, _ = spool.take(100, 1_000_000)
    assert bodies(taken) == ["r0", "r1"]
    taken, _, _ = spool.take(100, 1_000_000)
    assert taken == []
    assert not spool.has_untaken
    assert spool.pending == 2
    spool.close()


def test_reset_empties_a_drained_file(tmp_path: Path) -> None:
    spool = new_spool(tmp_path)
    spool.append(frames(0, 50, size=100))
    _, _, end = spool.take(100, 1_000_000)
    spool.commit(end, 50)
    size_before = os.path.getsize(spool.path)
    spool.reset()
    assert os.path.getsize(spool.path) < size_before
    spool.append(frames(50, 1))
    taken, _, _ = spool.take(100, 1_000_000)
    assert bodies(taken) == ["r50"]
    spool.close()


def test_not_a_spool_file(tmp_path: Path) -> None:
    path = tmp_path / "x.1.spool"
    path.write_bytes(b"hello world, this is not a spool file at all")
    with pytest.raises(SpoolError):
        SpoolFile.open_existing(path)
    with pytest.raises(SpoolError):
        read_header(path)


def test_files_are_listed_in_creation_order(tmp_path: Path) -> None:
    for created in (30, 10, 20):
        new_spool(tmp_path, "exe/1", created).close()
        (spool_path(tmp_path, "exe/1", created)).write_bytes(b"")  # closed-and-drained files vanish
    new_spool(tmp_path, "other", 5).close()
    names = [p.name for p in files_for_key(tmp_path, "exe/1")]
    assert names == ["exe_1.10.spool", "exe_1.20.spool", "exe_1.30.spool"]
    assert len(all_files(tmp_path)) == 3
    assert files_for_key(tmp_path / "missing", "exe") == []
