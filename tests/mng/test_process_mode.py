"""``runner mng`` in process mode against a real control plane, supervising a real ``runner run``
from versioned virtualenvs of locally built versions (see conftest)."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.mng.conftest import BROKEN, GOOD, NEXT
from tests.mng.harness import MngHarness, wait_until

pytestmark = [pytest.mark.mng, pytest.mark.integration]


def test_mng_starts_the_workload_then_restart_and_shut_down_jobs(
    mng_factory: Callable[..., MngHarness],
) -> None:
    mng = mng_factory().start()
    mng.wait_mng_ready()
    mng.wait_workload_ready()
    first = mng.workload_pid()
    assert first > 0
    assert mng.state()["version"] == GOOD
    wait_until(lambda: mng.workload_version() == GOOD, 15, "the workload's heartbeat version", mng.tail)
    assert os.readlink(Path(mng.extra["RUNNER_MNG_VENVS_DIR"]) / "current") == f"versions/{GOOD}"

    job = mng.submit("mng-runner-restart")
    done = mng.wait_job(job)
    assert done["status"] == "finished", mng.tail()
    second = mng.workload_pid()
    assert second not in (0, first)
    assert mng.workload_ready()  # the job finished only once the new process was ready
    with pytest.raises(ProcessLookupError):
        os.kill(first, 0)

    job = mng.submit("mng-shut-down")
    assert mng.wait_job(job)["status"] == "finished"  # the job itself PATCHed finished
    executions = mng.operator.executions(job)
    assert [e["status"] for e in executions] == ["finished"]
    assert mng.wait_exit(30) == 0
    with pytest.raises(ProcessLookupError):
        os.kill(second, 0)
    state = mng.state()
    assert state["held"] is True
    assert "mng-shut-down" in state["held_reason"]
    # The drain was the runner's own: SIGTERM, then a clean exit 0.
    assert any(e.get("event") == "workload stopped" and e.get("exit") == "exit code 0" for e in mng.events())


def test_update_to_a_second_version_then_roll_back_from_one_that_never_gets_ready(
    mng_factory: Callable[..., MngHarness], mng_versions: object
) -> None:
    mng = mng_factory(installed=(GOOD, BROKEN), RUNNER_MNG_HEALTH_DEADLINE="8").start()
    mng.wait_mng_ready()
    mng.wait_workload_ready()
    venvs = Path(mng.extra["RUNNER_MNG_VENVS_DIR"])

    # NEXT from the job's metadata; not installed yet: mng pip-installs it into a new venv.
    job = mng.submit("mng-runner-update-version", metadata={"version": NEXT})
    done = mng.wait_job(job, timeout=120)
    assert done["status"] == "finished", mng.tail()
    assert os.readlink(venvs / "current") == f"versions/{NEXT}"
    assert (venvs / "versions" / NEXT / "bin" / "runner").exists()
    wait_until(lambda: mng.workload_version() == NEXT, 15, "heartbeats from the new version", mng.tail)
    assert mng.state()["version"] == NEXT
    assert mng.state()["previous_version"] == GOOD

    # BROKEN from settings container_image_tag (as the reference): never ready -> rolled back.
    mng.operator.patch_settings(mng.mng_id, container_image_tag=BROKEN)
    job = mng.submit("mng-runner-update-version")
    done = mng.wait_job(job, timeout=120)
    assert done["status"] == "failed", mng.tail()
    result = mng.result(job)
    message = str(result.get("error_metadata", {}).get("message", ""))
    assert f"version {BROKEN} failed its health check (/readyz)" in message, result
    assert f"rolled back to {NEXT} and is ready again" in message, result
    assert os.readlink(venvs / "current") == f"versions/{NEXT}"
    assert mng.state()["version"] == NEXT
    assert mng.workload_ready()
    assert 'byoc_runner_mng_updates_total{outcome="rolled-back"} 1' in mng.metrics()


def test_kill_9_of_the_workload_is_a_crash_mng_restarts_and_reports(
    mng_factory: Callable[..., MngHarness],
) -> None:
    mng = mng_factory().start()
    mng.wait_mng_ready()
    mng.wait_workload_ready()
    first = mng.workload_pid()
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: mng.workload_pid() not in (0, first), 20, "a new workload pid", mng.tail)
    mng.wait_workload_ready()
    crashes = mng.events("runner workload crashed; restarting it")
    assert crashes, mng.tail()
    assert crashes[0]["exit"] == "killed by SIGKILL"
    assert crashes[0]["level"] == "error"
    assert mng.metric("byoc_runner_mng_workload_crashes_total") == 1
    assert 'byoc_runner_mng_workload_starts_total{reason="restart after crash"} 1' in mng.metrics()


def test_kill_9_of_mng_leaves_the_workload_running_and_a_new_mng_adopts_it(
    mng_factory: Callable[..., MngHarness],
) -> None:
    mng = mng_factory().start()
    mng.wait_mng_ready()
    mng.wait_workload_ready()
    pid = mng.workload_pid()
    mng.kill()
    # The workload is in its own session: mng's death reaches it neither by signal nor by pipe.
    assert mng.workload_ready()
    os.kill(pid, 0)

    mng.start()
    mng.wait_mng_ready()
    adopted = wait_until(lambda: mng.events("adopted the running workload"), 10, "adoption", mng.tail)
    assert adopted[0]["workload"] == f"pid {pid}"
    assert mng.workload_pid() == pid
    assert mng.workload_ready()
    assert not mng.events("workload started")[1:]  # started once, by the first mng only

    # The adopted workload is not mng's child, and its death is still seen and repaired.
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: mng.workload_pid() not in (0, pid), 20, "a restart of the adopted workload", mng.tail)
    mng.wait_workload_ready()
    crash = mng.events("runner workload crashed; restarting it")[-1]
    assert crash["exit"].startswith("exit code unknown")


def test_runner_update_version_exit_75_comes_back_on_the_new_version_in_one_restart(
    mng_factory: Callable[..., MngHarness], mng_versions: object
) -> None:
    mng = mng_factory(installed=(GOOD, NEXT)).start()
    mng.wait_mng_ready()
    mng.wait_workload_ready()
    first = mng.workload_pid()
    mng.operator.patch_settings(mng.mng_id, container_image_tag=NEXT)
    mng.operator.patch_settings(mng.workload_id, container_image_tag=NEXT)
    # update-version is the workload runner's own job (operations group): it drains, exits 75.
    job = mng.operator.submit("update-version", runner_id=mng.workload_id)["id"]
    assert mng.wait_job(job)["status"] == "finished"
    wait_until(lambda: mng.state().get("version") == NEXT, 60, "the switch to the new version", mng.tail)
    mng.wait_workload_ready()
    assert mng.workload_pid() not in (0, first)
    wait_until(lambda: mng.workload_version() == NEXT, 15, "heartbeats from the new version", mng.tail)
    # One restart: one start for the update, no crash, no second restart.
    metrics = mng.metrics()
    assert 'byoc_runner_mng_workload_starts_total{reason="update"} 1' in metrics
    assert mng.metric("byoc_runner_mng_workload_crashes_total") == 0


def test_vm_shut_down_reports_finished_before_the_power_off_command(
    mng_factory: Callable[..., MngHarness], tmp_path: Path
) -> None:
    probe = tmp_path / "power-off.txt"
    # The power-off command stands in for `shutdown -h now`: it records the job's status on the
    # control plane at the moment it runs (read with the admin credentials file, by path).
    command = f"{sys.executable} {Path(__file__).parent / 'probe_job.py'} {{creds}} {probe}"
    mng = mng_factory()
    creds = mng.cp.state_dir / "credentials.json"
    mng.extra["RUNNER_MNG_POWER_OFF_COMMAND"] = command.replace("{creds}", str(creds))
    mng.start()
    mng.wait_mng_ready()
    mng.wait_workload_ready()
    pid = mng.workload_pid()
    job = mng.submit("mng-vm-shut-down", metadata={"shutdown_type": "vm"})
    assert mng.wait_job(job)["status"] == "finished"
    assert mng.wait_exit(30) == 0
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert probe.read_text().split() == [job, "finished", "finished"], mng.tail()


def test_a_workload_that_keeps_crashing_is_a_reported_crash_loop(
    mng_factory: Callable[..., MngHarness],
) -> None:
    mng = mng_factory(RUNNER_MNG_CRASH_LOOP_LIMIT="3")
    mng.write_workload_env(RUNNER_DRAIN_GRACE="not-a-duration")  # runner run exits 2 at once
    mng.start()
    mng.wait_mng_ready()
    loop = wait_until(lambda: mng.events(_CRASH_LOOP), 30, "the crash-loop report", mng.tail)
    assert loop[0]["level"] == "error"
    assert len(mng.events("runner workload crashed; restarting it")) == 2
    assert all(e["exit"] == "exit code 2" for e in mng.events("runner workload crashed; restarting it"))
    assert mng.metric("byoc_runner_mng_crash_loops_total") == 1
    assert mng.state()["held"] is True

    # A restart job after the cause is fixed starts it again.
    mng.write_workload_env()
    job = mng.submit("mng-runner-restart")
    assert mng.wait_job(job)["status"] == "finished", mng.tail()
    assert mng.workload_ready()


_CRASH_LOOP = (
    "runner workload is crash-looping: 3 crashes within 300s (last: exit code 2); not restarting it "
    "until a mng-runner-restart or mng-runner-update-version job"
)
