"""Issue 11, finding 4: a full disk under the log spool. On a 20 MB tmpfs state dir, with the
control plane down during a 300,000-line burst, records are lost; every one must be counted
(result ``logs_lost``, ``/metrics``, a log line naming the sequence numbers lost), the spool's
arithmetic must stay within the filesystem, and the runner must stay up and recover."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from controlplane.operator import TERMINAL_JOB_STATUSES, OperatorClient
from tests.faults.helpers import numbered_lines, wait_for
from tests.support.controlplane import ControlPlaneProcess
from tests.support.handlers import HANDLER_TARGET, SCRIPT_TYPE
from tests.support.runner_proc import RunnerProcess
from tests.support.tools import in_ci

pytestmark = pytest.mark.faults

LINES = 300_000
FS_BYTES = 20 * 1024 * 1024


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 20 MB tmpfs (needs root: mount)."""
    if os.geteuid() != 0:
        message = "mounting a 20 MB tmpfs needs root"
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _metric(runner: RunnerProcess, fate: str) -> int:
    text = runner.get("/metrics").text
    match = re.search(r'byoc_runner_log_records_total\{fate="' + fate + r'"\} (\d+)', text)
    return int(match.group(1)) if match else 0


def test_a_full_disk_counts_every_lost_record_and_the_runner_recovers(
    control_plane: ControlPlaneProcess, operator: OperatorClient, small_fs: Path, tmp_path: Path
) -> None:
    env = {"RUNNER_HANDLERS": HANDLER_TARGET, "RUNNER_MIN_FREE_MB": "1"}
    runner = RunnerProcess(control_plane, small_fs / "state", env)
    runner.log_path = tmp_path / "runner.log"  # the runner's own log is not on the small disk
    runner.start()
    try:
        runner.wait_ready()
        burst = f"sleep 3; seq -f 'line %07.0f' 0 {LINES - 1}"
        job = operator.submit(SCRIPT_TYPE, plan={"argv": ["sh", "-c", burst]})
        wait_for(lambda: operator.get_job(job["id"])["status"] == "in-progress", 30, "the job to start")
        control_plane.kill()  # down for the whole burst
        time.sleep(25)
        control_plane.start()
        operator = control_plane.operator()
        done = operator.wait_job(job["id"], TERMINAL_JOB_STATUSES, timeout=240)
        lines = numbered_lines(operator, job["log_stream_id"])
        assert done["status"] == "finished", (done.get("status_description"), runner.output()[-1500:])
        result = operator.result(job["id"])
        logs_lost = int((result.get("error_metadata") or {}).get("logs_lost", "0"))
        events = runner.events()
        ranges = [e for e in events if e.get("event") == "job log records lost"]
        in_ranges = sum(int(e["count"]) for e in ranges)
        cut = [e for e in events if e.get("event") == "cutting unreadable bytes off a log spool file"]
        metric_lost = _metric(runner, "lost")
        missing = LINES - len(set(lines))
        first = f"{ranges[0]['first_seq']}-{ranges[0]['last_seq']}" if ranges else "-"
        print(
            f"figures [disk full 20 MB]: status {done['status']}; lines delivered {len(set(lines))}/{LINES},"
            f" duplicates {len(lines) - len(set(lines))}; logs_lost {logs_lost}; /metrics lost {metric_lost};"
            f" lost-range log lines {len(ranges)} covering {in_ranges}"
            f" (first range {first});"
            f" cut-unreadable events {len(cut)}"
        )
        assert done["status"] == "finished", done
        assert lines == sorted(set(lines)), "in order, no duplicates"
        assert missing > 0, "the burst should not have fitted in 20 MB"
        # Every lost record is counted: the job's own lines, and at most a few runner lines.
        assert missing <= logs_lost <= missing + 50
        assert metric_lost == logs_lost
        assert in_ranges == logs_lost
        assert all(int(e["bytes"]) <= FS_BYTES for e in cut)
        # The runner is still up, and with the spool delivered the disk has room again.
        assert runner.proc is not None
        assert runner.proc.poll() is None
        after = operator.submit(SCRIPT_TYPE, plan={"line_count": 2000})
        again = operator.wait_job(after["id"], TERMINAL_JOB_STATUSES, timeout=60)
        assert again["status"] == "finished"
        assert numbered_lines(operator, after["log_stream_id"]) == list(range(2000))
    finally:
        runner.stop()
