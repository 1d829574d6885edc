"""The full terraform cycle through the real control plane and a real ``runner run`` process.

build job -> module in the registry; plan job -> stored result; an apply job whose plan carries
that result's ``contents_gzip`` -> resources, state and state-json in the control plane, outputs
stored; teardown plan -> apply -> empty state. Then a run on a locked workspace, and a cancel
during a long ``local-exec`` provisioner.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.controlplane import ControlPlaneProcess
from tests.support.registry import RegistryServer
from tests.support.terraform import GitServer, data_module, proc_cmdlines, write_module

pytestmark = [pytest.mark.terraform, pytest.mark.oci, pytest.mark.usefixtures("terraform_bin")]

TERMINAL = ("finished", "failed", "timed-out", "cancelled", "not-attempted")


def finished(operator: Any, job: dict[str, Any], timeout: float = 90.0) -> dict[str, Any]:
    done: dict[str, Any] = operator.wait_job(job["id"], TERMINAL, timeout=timeout)
    if done["status"] != "finished":
        result = operator.result(job["id"])
        raise AssertionError(f"job {job['type']} {done['status']}: {json.dumps(result)[:2000]}")
    return done


def outputs_of(operator: Any, job_id: str) -> dict[str, Any]:
    job = operator.get_job(job_id)
    if isinstance(job.get("outputs"), dict):
        return dict(job["outputs"])
    execution = operator.executions(job_id)[0]
    stored = execution.get("outputs") or {}
    return dict(stored.get("outputs") or json.loads(stored.get("outputs_json") or "{}"))


def state_of(operator: Any, workspace_id: str) -> dict[str, Any] | None:
    response = operator.request("GET", "/v1/terraform-backend", params={"workspace_id": workspace_id})
    return response.json() if response.status_code == 200 and response.content else None


def test_build_plan_apply_teardown_through_the_control_plane(
    tf_control_plane: ControlPlaneProcess,
    tf_runner: Any,
    git_server: GitServer,
    oci_registry: RegistryServer,
) -> None:
    files = data_module(2)
    files["modules/app/main.tf"] = files.pop("main.tf")
    url = git_server.create("cycle", files)
    registry = {"RegistryType": "private_oci", "Repository": f"{oci_registry.host}/org/cycle"}
    token = tf_control_plane.credentials.runner_token

    with tf_control_plane.operator() as operator:
        build = operator.submit(
            "terraform-module-build",
            plan={"git_source": {"url": url, "ref": "main", "path": "modules/app"}, "dst_registry": registry},
            owner_id="bld-cycle-1",
        )
        finished(operator, build)
        image = outputs_of(operator, build["id"])["image"]
        assert image["tag"] == "bld-cycle-1"
        assert image["digest"].startswith("sha256:")

        workspace_id = operator.create_workspace()["id"]
        deploy = {
            "src_registry": registry,
            "src_tag": "bld-cycle-1",
            "terraform": {"vars": {"name": "cp"}, "terraform_backend": {"WorkspaceID": workspace_id}},
        }
        plan_job = operator.submit("terraform-deploy", plan=deploy, operation="create-apply-plan")
        finished(operator, plan_job)
        result = operator.result(plan_job["id"])
        assert result["success"] is True
        assert result["contents_gzip"]
        before = state_of(operator, workspace_id)
        assert before is None or not before.get("resources"), "a plan applies nothing"

        apply_job = operator.submit(
            "terraform-deploy",
            plan={**deploy, "apply_plan_contents": result["contents_gzip"]},
            operation="apply-plan",
        )
        done = finished(operator, apply_job)
        state = state_of(operator, workspace_id)
        assert state is not None
        assert len(state["resources"][0]["instances"]) == 2
        state_json = operator.request("GET", f"/v1/terraform-workspaces/{workspace_id}/state-json").json()
        assert len(state_json["values"]["root_module"]["resources"]) == 2
        assert outputs_of(operator, apply_job["id"])["names"] == ["cp-0", "cp-1"]
        records = operator.logs(done["log_stream_id"])
        bodies = "\n".join(str(r.get("body", "")) for r in records)
        assert "Apply complete! Resources: 2 added" in bodies
        assert token not in json.dumps(records)

        teardown = operator.submit("terraform-deploy", plan=deploy, operation="create-teardown-plan")
        finished(operator, teardown)
        teardown_result = operator.result(teardown["id"])
        destroy = operator.submit(
            "terraform-deploy",
            plan={**deploy, "apply_plan_contents": teardown_result["contents_gzip"]},
            operation="apply-plan",
        )
        finished(operator, destroy)
        emptied = state_of(operator, workspace_id)
        assert emptied is not None
        assert emptied["resources"] == []


SLOW = {
    "main.tf": """
resource "terraform_data" "slow" {
  provisioner "local-exec" {
    command = "touch started && sleep 120"
  }
}
"""
}


def _running_under(directory: Path) -> list[int]:
    found = []
    for pid, cmdline in proc_cmdlines().items():
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
            state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        except OSError:
            continue
        if state != "Z" and (cwd.startswith(str(directory)) or str(directory) in cmdline):
            found.append(pid)
    return found


def test_locked_workspace_and_cancel_during_a_provisioner(
    tf_control_plane: ControlPlaneProcess, tf_runner: Any, tmp_path: Path
) -> None:
    module = write_module(tmp_path / "slow", SLOW)
    with tf_control_plane.operator() as operator:
        workspace_id = operator.create_workspace()["id"]
        plan = {
            "local_archive": {"local_archive": str(module)},
            "terraform_backend": {"WorkspaceID": workspace_id},
        }

        holder = {"ID": "held-by-someone-else", "Operation": "OperationTypeApply", "Who": "ops@elsewhere"}
        operator.request("POST", f"/v1/terraform-workspaces/{workspace_id}/lock", json=holder)
        blocked = operator.submit("sandbox-terraform", plan=plan, operation="create-apply-plan")
        done = operator.wait_job(blocked["id"], TERMINAL, timeout=90)
        assert done["status"] == "failed"
        failure = operator.result(blocked["id"])["error_metadata"]
        assert failure["message"].startswith(
            f"workspace {workspace_id} is locked by lock ID held-by-someone-else"
        )
        assert "ops@elsewhere" in failure["message"]
        assert failure["lock_holder"] == "held-by-someone-else"
        assert failure["step"] == "execute"
        operator.request("POST", f"/v1/terraform-workspaces/{workspace_id}/unlock", json=holder)

        plan_job = operator.submit("sandbox-terraform", plan=plan, operation="create-apply-plan")
        finished(operator, plan_job)
        contents = operator.result(plan_job["id"])["contents_gzip"]
        apply_job = operator.submit(
            "sandbox-terraform", plan={**plan, "apply_plan_contents": contents}, operation="apply-plan"
        )
        deadline = time.monotonic() + 60
        while not list(tf_runner.state_dir.rglob("started")):
            assert time.monotonic() < deadline, "the provisioner never started"
            time.sleep(0.1)
        operator.cancel(apply_job["id"])
        cancelled = operator.wait_job(apply_job["id"], TERMINAL, timeout=60)
        assert cancelled["status"] == "cancelled"
        deadline = time.monotonic() + 30
        while _running_under(tf_runner.state_dir) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _running_under(tf_runner.state_dir) == [], "no terraform or provisioner process left"
        probe = {"ID": "probe-after-cancel", "Operation": "OperationTypePlan"}
        answer = operator.request("POST", f"/v1/terraform-workspaces/{workspace_id}/lock", json=probe)
        assert answer.status_code == 200, f"the workspace is still locked: {answer.text}"
        operator.request("POST", f"/v1/terraform-workspaces/{workspace_id}/unlock", json=probe)
