"""The runner end to end: a real ``runner run`` process, the real embedded control plane, loopback HTTP."""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from tests.support.handlers import HANDLER_TARGET, SCRIPT_TYPE

pytestmark = pytest.mark.integration

TERMINAL = ("finished", "failed", "timed-out", "cancelled", "not-attempted")


def _sleep_pids(marker: str) -> list[int]:
    """PIDs of live processes whose command line contains ``marker``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().split(")")[-1].split()[0]
        except OSError:
            continue
        if marker in cmdline and state != "Z":
            pids.append(int(entry.name))
    return pids


def _kill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _wait_for(predicate: Any, timeout: float, message: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(message)


def _latest_execution(operator: Any, job_id: str) -> dict[str, Any]:
    executions = operator.executions(job_id)
    assert executions, f"job {job_id} has no execution"
    return max(executions, key=lambda e: str(e.get("created_at", "")))


@pytest.fixture
def script_runner(runner_process_factory: Any) -> Any:
    return runner_process_factory(RUNNER_HANDLERS=HANDLER_TARGET)


def test_noop_lifecycle_outputs_result_and_logs(runner_process: Any, operator: Any) -> None:
    job = operator.submit("noop")
    done = operator.wait_job(job["id"], TERMINAL, timeout=30)
    assert done["status"] == "finished"
    execution = _latest_execution(operator, job["id"])
    assert execution["status"] == "finished"
    assert execution.get("metadata", {}).get("client.version", "").startswith("runner:")
    history = [h["status"] for h in execution["status_history"]]  # every status the server accepted
    assert history == ["pending", "initializing", "in-progress", "cleaning-up", "finished"]
    result = operator.result(job["id"], execution["id"])
    assert result is not None
    assert result["success"] is True
    records = operator.logs(done["log_stream_id"])
    bodies = [r["body"] for r in records]
    assert any("noop: nothing to do" in b for b in bodies)
    attrs = records[0]["attributes"]
    assert attrs["runner_job.id"] == job["id"]
    assert attrs["runner_job.type"] == "noop"
    assert attrs["runner_job_execution.id"] == execution["id"]
    assert attrs["log_stream.id"] == done["log_stream_id"]
    steps = {r["attributes"].get("runner_job_execution_step.name") for r in records}
    assert "execute" in steps
    resource = records[0]["resource_attributes"]
    assert resource["service.name"] == "runner"
    assert resource["runner.id"] == operator.runner_id


def test_outputs_and_masked_secret(script_runner: Any, operator: Any) -> None:
    secret = "s3cr3t-Value/with+chars"
    plan = {
        "secrets": [secret],
        "lines": [
            f"plain {secret} end",
            f"b64 {base64.b64encode(secret.encode()).decode()} end",
            f"url {urllib.parse.quote(secret, safe='')} end",
            f"token {script_runner.runner_token} end",
        ],
        "outputs": {"answer": 42, "nested": {"ok": True}},
        "result_contents": "plan-text",
    }
    job = operator.submit(SCRIPT_TYPE, plan=plan)
    done = operator.wait_job(job["id"], TERMINAL, timeout=30)
    assert done["status"] == "finished", done
    assert done["outputs"] == {"answer": 42, "nested": {"ok": True}}
    execution = _latest_execution(operator, job["id"])
    assert operator.result(job["id"], execution["id"])["contents"] == "plan-text"
    bodies = [r["body"] for r in operator.logs(done["log_stream_id"])]
    text = "\n".join(bodies)
    assert "plain *** end" in text
    assert "b64 *** end" in text
    assert "url *** end" in text
    assert "token *** end" in text
    assert secret not in text
    assert base64.b64encode(secret.encode()).decode() not in text
    assert script_runner.runner_token not in text
    assert script_runner.runner_token not in script_runner.output()


def test_unknown_type_left_unclaimed_and_malformed_plan_fails(script_runner: Any, operator: Any) -> None:
    unknown = operator.submit("runner-helm")  # in the job-type table, no handler
    bad = operator.submit(SCRIPT_TYPE, plan={"lines": {"not": "a list"}})
    done = operator.wait_job(bad["id"], TERMINAL, timeout=30)
    assert done["status"] == "failed"
    result = operator.result(bad["id"], _latest_execution(operator, bad["id"])["id"])
    meta = result["error_metadata"]
    assert meta["step"] == "fetching"
    assert "invalid plan" in meta["message"]
    assert "lines" in meta["message"]
    assert result["error_code"] == 2
    # still polling: the next job runs
    ok = operator.submit("noop")
    assert operator.wait_job(ok["id"], TERMINAL, timeout=30)["status"] == "finished"
    still = operator.get_job(unknown["id"])
    assert still["status"] == "available"
    assert not operator.executions(unknown["id"])


def test_handler_that_raises(script_runner: Any, operator: Any) -> None:
    job = operator.submit(SCRIPT_TYPE, plan={"crash": "kaboom"})
    done = operator.wait_job(job["id"], TERMINAL, timeout=30)
    assert done["status"] == "failed"
    result = operator.result(job["id"], _latest_execution(operator, job["id"])["id"])
    assert result["success"] is False
    assert "RuntimeError: kaboom" in result["error_metadata"]["message"]
    assert result["error_metadata"]["handler"] == "ScriptHandler"
    bodies = " ".join(r["body"] for r in operator.logs(done["log_stream_id"]))
    assert "kaboom" in bodies
    ok = operator.submit("noop")
    assert operator.wait_job(ok["id"], TERMINAL, timeout=30)["status"] == "finished"


def test_execution_timeout_reports_timed_out(script_runner: Any, operator: Any) -> None:
    marker = "600.0101"
    try:
        job = operator.submit(SCRIPT_TYPE, plan={"argv": ["sleep", marker]}, execution_timeout=2_000_000_000)
        done = operator.wait_job(job["id"], TERMINAL, timeout=40)
        assert done["status"] == "timed-out"
        execution = _latest_execution(operator, job["id"])
        assert execution["status"] == "timed-out"
        result = operator.result(job["id"], execution["id"])
        assert result["error_metadata"]["message"] == "execution timeout reached"
        _wait_for(lambda: not _sleep_pids(marker), 10, "the child outlived its timed-out job")
    finally:
        _kill(_sleep_pids(marker))


def test_cancel_kills_the_child_and_removes_the_workspace(script_runner: Any, operator: Any) -> None:
    marker = "600.0202"
    try:
        job = operator.submit(SCRIPT_TYPE, plan={"argv": ["sh", "-c", f"sleep {marker} & sleep {marker}"]})
        _wait_for(lambda: len(_sleep_pids(marker)) >= 2, 20, "the job's children never started")
        execution = _latest_execution(operator, job["id"])
        workspace = script_runner.state_dir / "workspaces" / execution["id"]
        assert workspace.is_dir()
        operator.cancel(job["id"])
        done = operator.wait_job(job["id"], ("cancelled",), timeout=20)
        assert done["status"] == "cancelled"
        _wait_for(lambda: not _sleep_pids(marker), 15, "a child process survived the cancel")
        _wait_for(lambda: not workspace.exists(), 15, "the workspace survived the cancel")
        _wait_for(
            lambda: _latest_execution(operator, job["id"])["status"] == "cancelled",
            10,
            "execution not cancelled",
        )
    finally:
        _kill(_sleep_pids(marker))


def test_sigterm_drains_running_job_then_exits_0(script_runner: Any, operator: Any) -> None:
    job = operator.submit(SCRIPT_TYPE, plan={"argv": ["sleep", "3"]})
    _wait_for(lambda: operator.get_job(job["id"])["status"] == "in-progress", 20, "job never started")
    time.sleep(0.5)
    script_runner.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    late = operator.submit("noop")
    assert script_runner.wait_exit(timeout=60) == 0
    assert operator.get_job(job["id"])["status"] == "finished"
    assert operator.get_job(late["id"])["status"] == "available"  # not claimed while draining


def test_kill_9_then_restart_reports_failed_and_cleans(runner_process_factory: Any, operator: Any) -> None:
    marker = "600.0303"
    first = runner_process_factory(RUNNER_HANDLERS=HANDLER_TARGET)
    try:
        job = operator.submit(SCRIPT_TYPE, plan={"lines": ["before the crash"], "argv": ["sleep", marker]})
        _wait_for(lambda: _sleep_pids(marker), 20, "child never started")
        execution = _latest_execution(operator, job["id"])
        workspace = first.state_dir / "workspaces" / execution["id"]
        assert workspace.is_dir()
        first.kill()
        _kill(_sleep_pids(marker))
        second = runner_process_factory(RUNNER_HANDLERS=HANDLER_TARGET, state_dir=first.state_dir)
        _wait_for(
            lambda: _latest_execution(operator, job["id"])["status"] in ("failed", "cancelled"),
            30,
            "orphaned execution never reported",
        )
        execution = _latest_execution(operator, job["id"])
        if execution["status"] == "failed":
            result = operator.result(job["id"], execution["id"])
            assert "runner restarted" in result["error_metadata"]["message"]
        _wait_for(lambda: not workspace.exists(), 15, "orphaned workspace not removed")
        assert not list((second.state_dir / "journal").glob("*.json"))
    finally:
        _kill(_sleep_pids(marker))


def test_control_plane_outage_loses_no_log_line(
    script_runner: Any, operator: Any, control_plane: Any
) -> None:
    count = 300
    job = operator.submit(SCRIPT_TYPE, plan={"line_count": count, "line_interval": 0.05})
    _wait_for(lambda: operator.get_job(job["id"])["status"] == "in-progress", 20, "job never started")
    time.sleep(1.0)
    control_plane.stop()
    time.sleep(10)
    control_plane.start()
    done = operator.wait_job(job["id"], TERMINAL, timeout=90)
    assert done["status"] == "finished", done
    lines = [r["body"] for r in operator.logs(done["log_stream_id"]) if r["body"].startswith("line ")]
    assert lines == [f"line {i:07d}" for i in range(count)]


def test_two_runners_one_queue_each_job_once(runner_process_factory: Any, operator: Any) -> None:
    runner_process_factory(RUNNER_CONCURRENCY="operations=4")
    runner_process_factory(RUNNER_CONCURRENCY="operations=4")
    jobs = [operator.submit("noop") for _ in range(40)]
    for job in jobs:
        assert operator.wait_job(job["id"], TERMINAL, timeout=60)["status"] == "finished"
    for job in jobs:
        assert len(operator.executions(job["id"])) == 1


def test_settings_change_is_picked_up_live(runner_process: Any, operator: Any) -> None:
    operator.patch_settings(groups=["build"])
    time.sleep(2.5)  # the runner refreshes settings every second in tests
    job = operator.submit("noop")
    time.sleep(2.0)
    assert operator.get_job(job["id"])["status"] == "available"
    operator.patch_settings(groups=["build", "operations"])
    assert operator.wait_job(job["id"], TERMINAL, timeout=20)["status"] == "finished"
    events = runner_process.events()
    assert any(e.get("event") == "no longer polling group" and e.get("group") == "operations" for e in events)


def test_health_endpoints_and_health_check_job(runner_process: Any, operator: Any) -> None:
    assert runner_process.get("/healthz").status_code == 200
    ready = runner_process.get("/readyz").json()
    assert ready["ok"]
    assert ready["settings_fetched"]
    assert ready["api_reachable"]
    job = operator.submit("health-check")
    done = operator.wait_job(job["id"], TERMINAL, timeout=30)
    assert done["status"] == "finished"
    loops = done["outputs"]["job_loops"]
    assert set(loops) >= {"operations", "build", "sync", "deploy", "sandbox", "actions"}
    assert all(isinstance(v, int) and 0 <= v < 60_000_000_000 for v in loops.values())
    metrics = runner_process.get("/metrics").text
    assert 'byoc_runner_jobs_total{type="health-check",outcome="finished"} 1' in metrics
    assert "byoc_runner_pickup_latency_seconds_count" in metrics
    assert "byoc_runner_heartbeats_total" in metrics
    assert 'byoc_runner_api_requests_total{method="GET"}' in metrics


def test_shut_down_job_finishes_then_exits_0(runner_process: Any, operator: Any) -> None:
    job = operator.submit("shut-down", metadata={"shutdown_type": "graceful"})
    assert runner_process.wait_exit(timeout=60) == 0
    assert operator.get_job(job["id"])["status"] == "finished"


def test_sandbox_mode_fakes_jobs(runner_process_factory: Any, operator: Any) -> None:
    operator.patch_settings(sandbox_mode=True)
    runner = runner_process_factory(RUNNER_SANDBOX_JOB_DURATION="0.3")
    plan = {"sandbox_mode": {"enabled": True, "outputs": {"image": {"tag": "fake"}}}}
    job = operator.submit("oci-sync", plan=plan)
    done = operator.wait_job(job["id"], TERMINAL, timeout=30)
    assert done["status"] == "finished"
    assert done["outputs"] == {"image": {"tag": "fake"}}
    assert any("sandbox mode" in r["body"] for r in operator.logs(done["log_stream_id"]))
    assert runner.get("/healthz").status_code == 200


def test_second_sigterm_exits_at_once(script_runner: Any, operator: Any) -> None:
    marker = "600.0404"
    try:
        job = operator.submit(SCRIPT_TYPE, plan={"argv": ["sleep", marker]})
        _wait_for(lambda: _sleep_pids(marker), 20, "child never started")
        script_runner.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        assert script_runner.proc.poll() is None  # draining: the job may still finish
        script_runner.send_signal(signal.SIGTERM)
        started = time.monotonic()
        assert script_runner.wait_exit(timeout=10) == 143
        assert time.monotonic() - started < 5
        assert operator.get_job(job["id"])["status"] == "in-progress"  # left for the journal replay
    finally:
        _kill(_sleep_pids(marker))


def test_update_version_finishes_then_exits_for_a_restart(runner_process: Any, operator: Any) -> None:
    job = operator.submit("update-version")
    assert runner_process.wait_exit(timeout=60) == 75
    done = operator.get_job(job["id"])
    assert done["status"] == "finished"
    assert done["outputs"]["current_version"]


def test_sandbox_fault_injection_fails_the_job(runner_process_factory: Any, operator: Any) -> None:
    operator.patch_settings(sandbox_mode=True)
    runner_process_factory(RUNNER_SANDBOX_JOB_DURATION="0.1", RUNNER_SANDBOX_FAULTS="1")
    job = operator.submit("noop-deploy")
    done = operator.wait_job(job["id"], TERMINAL, timeout=30)
    assert done["status"] == "failed"
    result = operator.result(job["id"], _latest_execution(operator, job["id"])["id"])
    assert "sandbox mode fault injected" in result["error_metadata"]["message"]


def test_shut_down_is_not_faked_in_sandbox_mode(runner_process: Any, operator: Any) -> None:
    operator.patch_settings(sandbox_mode=True)
    time.sleep(1.5)
    job = operator.submit("shut-down", metadata={"shutdown_type": "force"})
    assert runner_process.wait_exit(timeout=60) == 0
    assert operator.get_job(job["id"])["status"] == "finished"
