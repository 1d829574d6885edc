"""The fault scenarios of issue 11 that already held, kept as figures: SIGTERM drain with a long
and a short grace, cancel, two runners on one queue, a control-plane restart mid-job. Real
``runner run`` and ``python -m controlplane`` processes over loopback."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from controlplane.operator import TERMINAL_JOB_STATUSES, OperatorClient
from tests.faults.helpers import numbered_lines, processes_with, wait_for
from tests.support.controlplane import ControlPlaneProcess
from tests.support.handlers import HANDLER_TARGET, SCRIPT_TYPE
from tests.support.runner_proc import RunnerProcess

pytestmark = pytest.mark.faults


def _runner(cp: ControlPlaneProcess, state_dir: Path, **env: str) -> RunnerProcess:
    runner = RunnerProcess(cp, state_dir, {"RUNNER_HANDLERS": HANDLER_TARGET, **env})
    runner.start()
    runner.wait_ready()
    return runner


@pytest.mark.parametrize(("grace", "expected"), [(30, "finished"), (2, "failed")])
def test_sigterm_drain(
    control_plane: ControlPlaneProcess, operator: OperatorClient, tmp_path: Path, grace: int, expected: str
) -> None:
    """Long grace: the running job finishes, every line delivered. Short grace: it is stopped
    cleanly and reported failed ("runner shut down before the job finished"), its child gone.
    Either way the runner exits 0 and claims nothing new."""
    marker = f"{tmp_path}/drain-child"
    runner = _runner(control_plane, tmp_path / "runner", RUNNER_DRAIN_GRACE=str(grace))
    try:
        job = operator.submit(
            SCRIPT_TYPE,
            plan={"line_count": 60, "line_interval": 0.1, "argv": ["sh", "-c", f"sleep 4 # {marker}"]},
        )
        wait_for(lambda: operator.get_job(job["id"])["status"] == "in-progress", 30, "the job to start")
        time.sleep(1.0)
        started = time.monotonic()
        runner.send_signal(signal.SIGTERM)
        time.sleep(0.5)  # the signal is handled: no new claims from here on
        late = operator.submit("noop")
        code = runner.wait_exit(timeout=90)
        took = time.monotonic() - started
        done = operator.wait_job(job["id"], TERMINAL_JOB_STATUSES, timeout=30)
        lines = numbered_lines(operator, job["log_stream_id"])
        leftovers = processes_with(marker)
        print(
            f"figures [drain grace {grace}s]: exit {code} after {took:.1f}s; job {done['status']};"
            f" lines {len(lines)}/60; late job {operator.get_job(late['id'])['status']};"
            f" leftover processes {len(leftovers)}"
        )
        assert code == 0
        assert done["status"] == expected
        assert operator.get_job(late["id"])["status"] == "available"
        assert leftovers == []
        if expected == "finished":
            assert lines == list(range(60))
        else:
            message = operator.result(job["id"])["error_metadata"]["message"]
            assert message == "runner shut down before the job finished"
            assert lines == sorted(set(lines))
    finally:
        runner.stop()


def test_cancel_stops_the_child_and_reports_cancelled(
    control_plane: ControlPlaneProcess, operator: OperatorClient, tmp_path: Path
) -> None:
    marker = f"{tmp_path}/cancel-child"
    runner = _runner(control_plane, tmp_path / "runner")
    try:
        job = operator.submit(SCRIPT_TYPE, plan={"argv": ["sh", "-c", f"sleep 600 # {marker}"]})
        wait_for(lambda: processes_with(marker), 30, "the child to start")
        started = time.monotonic()
        operator.cancel(job["id"])
        done = operator.wait_job(job["id"], TERMINAL_JOB_STATUSES, timeout=30)
        wait_for(lambda: not processes_with(marker), 20, "the child to go")
        print(f"figures [cancel]: job {done['status']} after {time.monotonic() - started:.1f}s; leftover 0")
        assert done["status"] == "cancelled"
        assert operator.executions(job["id"])[0]["status"] == "cancelled"
    finally:
        runner.stop()


def test_two_runners_on_one_queue_run_each_job_once(
    control_plane: ControlPlaneProcess, operator: OperatorClient, tmp_path: Path
) -> None:
    runners = [
        _runner(control_plane, tmp_path / f"runner-{i}", RUNNER_CONCURRENCY="operations=4") for i in (1, 2)
    ]
    try:
        jobs = [operator.submit("noop") for _ in range(30)]
        statuses = [operator.wait_job(j["id"], TERMINAL_JOB_STATUSES, timeout=90)["status"] for j in jobs]
        executions = [len(operator.executions(j["id"])) for j in jobs]
        finished = statuses.count("finished")
        print(f"figures [two runners]: {finished}/30 finished; executions {sum(executions)}")
        assert statuses == ["finished"] * 30
        assert executions == [1] * 30
    finally:
        for runner in runners:
            runner.stop()


def test_a_control_plane_restart_mid_job_loses_nothing(
    control_plane_factory: Callable[..., ControlPlaneProcess], tmp_path: Path
) -> None:
    cp = control_plane_factory()
    operator = cp.operator()
    runner = _runner(cp, tmp_path / "runner")
    try:
        job = operator.submit(SCRIPT_TYPE, plan={"line_count": 300, "line_interval": 0.03})
        wait_for(lambda: len(numbered_lines(operator, job["log_stream_id"])) >= 50, 30, "50 lines")
        cp.stop()
        time.sleep(3)
        cp.start()
        operator = cp.operator()
        done = operator.wait_job(job["id"], TERMINAL_JOB_STATUSES, timeout=60)
        lines = numbered_lines(operator, job["log_stream_id"])
        print(f"figures [control-plane restart]: job {done['status']}; lines {len(lines)}/300, in order")
        assert done["status"] == "finished"
        assert lines == list(range(300))
    finally:
        runner.stop()
