"""Issue 11, finding 2: ``kill -9`` of the runner during an apply must not leave the terraform
state lock held for ever. The lock is journaled with the execution when terraform takes it;
the restarted runner unlocks it (with its ID, through the backend) before it reports the
orphan, and the next plan of the same workspace runs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from controlplane.operator import TERMINAL_JOB_STATUSES, OperatorClient
from runner.journal import JournalEntry
from tests.faults.helpers import processes_with, wait_for
from tests.support.controlplane import ControlPlaneProcess
from tests.support.runner_proc import RunnerProcess
from tests.support.terraform import write_module

pytestmark = [pytest.mark.faults, pytest.mark.terraform, pytest.mark.usefixtures("terraform_bin")]

SLOW = {
    "main.tf": """
resource "terraform_data" "slow" {
  provisioner "local-exec" {
    command = "touch started; for i in $(seq 1 120); do echo \\"tick $i\\"; sleep 0.5; done"
  }
}
"""
}


RELEASED = "released the state lock an orphaned execution held"


def _journal(state_dir: Path) -> list[dict[str, object]]:
    return [json.loads(p.read_text()) for p in (state_dir / "journal").glob("*.json")]


def _held_locks(state_dir: Path) -> list[dict[str, str]]:
    """The state locks the journal records as held, parsed (and type-checked) as the runner reads
    them back at orphan recovery."""
    return [
        lock
        for p in (state_dir / "journal").glob("*.json")
        for lock in JournalEntry.from_json(p.read_bytes()).held_locks
    ]


def _lock_state(operator: OperatorClient, workspace_id: str) -> tuple[int, str]:
    """Try to take the lock: (status, body). 200 means it was free (released again at once)."""
    probe = {"ID": "fault-suite-probe", "Operation": "OperationTypePlan", "Who": "tests/faults"}
    answer = operator.http.request("POST", f"/v1/terraform-workspaces/{workspace_id}/lock", json=probe)
    if answer.status_code == 200:
        operator.request("POST", f"/v1/terraform-workspaces/{workspace_id}/unlock", json=probe)
    return answer.status_code, answer.text


def test_kill9_during_apply_releases_the_lock_and_the_next_plan_runs(
    control_plane: ControlPlaneProcess, operator: OperatorClient, tmp_path: Path, tf_tools_dir: Path
) -> None:
    module = write_module(tmp_path / "slow", SLOW)
    workspace_id = operator.create_workspace()["id"]
    plan = {
        "local_archive": {"local_archive": str(module)},
        "terraform_backend": {"WorkspaceID": workspace_id},
    }
    state_dir = tmp_path / "runner"
    env = {"RUNNER_TOOLS_DIR": str(tf_tools_dir), "RUNNER_CHILD_GRACE": "5"}
    runner = RunnerProcess(control_plane, state_dir, env)
    runner.start()
    try:
        runner.wait_ready()
        plan_job = operator.submit("sandbox-terraform", plan=plan, operation="create-apply-plan")
        assert operator.wait_job(plan_job["id"], TERMINAL_JOB_STATUSES, timeout=120)["status"] == "finished"
        contents = operator.result(plan_job["id"])["contents_gzip"]
        apply_job = operator.submit(
            "sandbox-terraform", plan={**plan, "apply_plan_contents": contents}, operation="apply-plan"
        )
        wait_for(lambda: list(state_dir.rglob("started")), 90, "the provisioner to start")
        held = _held_locks(state_dir)
        assert len(held) == 1, _journal(state_dir)
        lock_id = held[0]["lock_id"]
        status, body = _lock_state(operator, workspace_id)
        assert status == 423, body
        assert lock_id in body

        runner.kill()  # kill -9
        killed_at = time.monotonic()
        time.sleep(1.0)
        locked_after_kill = _lock_state(operator, workspace_id)[0]

        runner = RunnerProcess(control_plane, state_dir, env)
        runner.start()
        runner.wait_ready(timeout=60)
        orphan = operator.wait_job(apply_job["id"], TERMINAL_JOB_STATUSES, timeout=90)
        reported_after = time.monotonic() - killed_at
        assert orphan["status"] == "failed", orphan
        status_after, body_after = _lock_state(operator, workspace_id)
        assert status_after == 200, f"the workspace is still locked: {body_after}"
        events = runner.events()
        released = [e for e in events if e.get("event") == RELEASED]
        assert released, "no unlock logged"
        assert released[0]["lock_id"] == lock_id
        assert _journal(state_dir) == []

        next_plan = operator.submit("sandbox-terraform", plan=plan, operation="create-apply-plan")
        done = operator.wait_job(next_plan["id"], TERMINAL_JOB_STATUSES, timeout=120)
        assert done["status"] == "finished", operator.result(next_plan["id"])
        leftovers = processes_with(str(state_dir))
        print(
            f"figures: lock {lock_id} held -> {locked_after_kill} after kill -9; orphan reported"
            f" {orphan['status']} {reported_after:.1f}s after the kill; lock after recovery {status_after};"
            f" next plan {done['status']}; leftover processes {len(leftovers)}"
        )
    finally:
        runner.stop()
