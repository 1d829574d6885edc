"""A full disk under the log spool (issue 11, finding 4): every dropped record is counted, in
the report, the metrics and a log line naming the range of sequence numbers lost; the spool's
offsets stay equal to what is on disk; the stream recovers once space is back.

The disk is simulated by a ``pwrite`` that stops at a byte budget (short write, then ENOSPC);
the real-filesystem version is in tests/faults/test_disk_full.py.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import anyio
import pytest
from structlog.testing import capture_logs

from runner.logs.spool import SpoolFile, SpoolHeader, SpoolWriteError, count_pending
from tests.unit.test_logs_pipeline import FakeLogEndpoint, deadline, open_stream, running

pytestmark = [pytest.mark.unit]


class FullDisk:
    """``os.pwrite`` with a budget of bytes, shared by every file (like a small filesystem)."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._real = os.pwrite

    def pwrite(self, fd: int, data: bytes, offset: int) -> int:
        if self.budget <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        part = bytes(data[: self.budget])
        written = self._real(fd, part, offset)
        self.budget -= written
        return written


@pytest.fixture
def full_disk(monkeypatch: pytest.MonkeyPatch) -> FullDisk:
    disk = FullDisk(budget=150_000)
    monkeypatch.setattr(os, "pwrite", disk.pwrite)
    return disk


def test_a_failed_flush_cuts_the_file_back_and_keeps_end_equal_to_its_size(
    tmp_path: Path, full_disk: FullDisk
) -> None:
    spool = SpoolFile.create(tmp_path / "a.spool", SpoolHeader("k", "log1"))
    frame = b"\x12\x05hello"
    full_disk.budget = 700  # the header is already written (os.write); room for 100 frames
    spool.append([frame] * 100)
    spool.flush()
    assert spool.end == os.path.getsize(spool.path)
    spool.append([frame] * 50)
    with pytest.raises(SpoolWriteError) as failed:
        spool.flush()
    assert failed.value.frames == 50
    assert spool.end == os.path.getsize(spool.path)
    assert spool.pending == 100
    full_disk.budget = 10**9
    spool.append([frame] * 3)
    spool.flush()
    frames, _, _ = spool.take(1000, 10**6)
    assert len(frames) == 103
    spool.close()
    assert count_pending(spool.path) == 103


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_every_record_dropped_on_a_full_disk_is_counted_with_its_range(
    tmp_path: Path, full_disk: FullDisk
) -> None:
    fake = FakeLogEndpoint()
    fake.down = True
    total = 20_000
    with capture_logs() as logs:
        async with running(fake, tmp_path, memory_max_records=500, batch_max_records=200) as pipeline:
            stream = open_stream(pipeline)
            for i in range(total):
                stream.logger.info(f"line {i}")
                if i % 1000 == 0:
                    await anyio.sleep(0.001)
            full_disk.budget = 10**9  # space is back, and so is the server
            fake.down = False
            report = await stream.close(deadline=deadline(30))
    bodies = fake.bodies()
    received = [int(b.split()[1]) for b in bodies]
    assert received == sorted(set(received)), "in order, no duplicates"
    assert report.spooled == 0
    assert report.lost > 0
    assert report.delivered == len(received)
    assert report.lost == total - len(received)
    assert pipeline.metrics.lost == report.lost
    # The log lines name exactly the lines that never arrived (sequence number = line + 1).
    lost_lines: set[int] = set()
    for event in logs:
        if event["event"] == "job log records lost":
            lost_lines.update(range(event["first_seq"] - 1, event["last_seq"]))
    assert lost_lines == set(range(total)) - set(received)
