"""Issue 11, finding 5c: a second process with the same runner id refuses to start while the
first heartbeats, and never takes over (or gets cancelled) the first one's running job."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.faults.helpers import wait_for, wait_job
from tests.support.controlplane import ControlPlaneProcess
from tests.support.handlers import HANDLER_TARGET, SCRIPT_TYPE
from tests.support.runner_proc import RunnerProcess

pytestmark = pytest.mark.faults


def test_a_second_runner_process_with_the_same_id_refuses_to_start(
    control_plane_factory: Callable[..., ControlPlaneProcess], tmp_path: Path
) -> None:
    cp = control_plane_factory(heart_beat_timeout=1.0)
    operator = cp.operator()
    first = RunnerProcess(cp, tmp_path / "first", {"RUNNER_HANDLERS": HANDLER_TARGET})
    second = RunnerProcess(cp, tmp_path / "second", {"RUNNER_HANDLERS": HANDLER_TARGET})
    try:
        first.start()
        first.wait_ready()
        job = operator.submit(SCRIPT_TYPE, plan={"line_count": 30, "line_interval": 0.5})
        wait_for(lambda: operator.get_job(job["id"])["status"] == "in-progress", 20, "the job to start")

        started = time.monotonic()
        second.start()
        code = second.wait_exit(timeout=60)
        refused_after = time.monotonic() - started
        assert code == 2, second.output()[-2000:]
        assert "another process is running as this runner id" in second.output()
        assert "already running in another process" in second.output()

        assert operator.get_job(job["id"])["status"] == "in-progress"
        done = wait_job(operator, job["id"], 60)
        assert done["status"] == "finished", done
        assert "restarted" not in str(done.get("status_description"))
        assert first.proc is not None
        assert first.proc.poll() is None, "the first runner keeps running"
        print(f"figures: second runner refused after {refused_after:.1f}s (exit {code})")
        print(f"figures: first runner's job {done['status']}")
    finally:
        for proc in (second, first):
            if proc.proc is not None and proc.proc.poll() is None:
                proc.stop()
