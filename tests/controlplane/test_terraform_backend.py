"""The terraform HTTP backend (docs/runner-api.md §6): the API itself, then a real terraform
``init/plan/apply`` against it, and a second terraform that finds the state locked and is told
the holder's ID (our 423 fix)."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.controlplane import EmbeddedControlPlane
from tests.support.tools import require_tool

STATE = {
    "version": 4,
    "terraform_version": "1.11.4",
    "serial": 1,
    "lineage": "l1",
    "outputs": {},
    "resources": [],
}
LOCK = {
    "ID": "11111111-2222-3333-4444-555555555555",
    "Operation": "OperationTypeApply",
    "Info": "",
    "Who": "test@host",
    "Version": "1.11.4",
    "Created": "2026-01-01T00:00:00Z",
    "Path": "",
}


@pytest.fixture
def cp(embedded_control_plane: EmbeddedControlPlane) -> EmbeddedControlPlane:
    return embedded_control_plane


@pytest.fixture
def workspace(cp: EmbeddedControlPlane) -> str:
    with cp.operator() as operator:
        created = operator.create_workspace(owner_id="cmp1", owner_type="install_components")
    assert created["id"].startswith("tfw")
    assert created["lock_history"] is None
    return str(created["id"])


# ------------------------------------------------------------------ the API


@pytest.mark.integration
def test_state_history_get_latest_or_204(cp: EmbeddedControlPlane, workspace: str) -> None:
    with httpx.Client(base_url=cp.url, params={"token": cp.runner_token}) as tf:
        assert tf.get("/v1/terraform-backend", params={"workspace_id": workspace}).status_code == 204
        for serial in (1, 2, 3):
            response = tf.post(
                "/v1/terraform-backend",
                params={"workspace_id": workspace, "job_id": "job1"},
                json={**STATE, "serial": serial},
            )
            assert response.status_code == 200
            assert response.content == b""
        latest = tf.get("/v1/terraform-backend", params={"workspace_id": workspace})
        assert latest.status_code == 200
        assert latest.json()["serial"] == 3
        revisions = tf.get(f"/v1/terraform-workspaces/{workspace}/states").json()
        assert [r["revision"] for r in revisions] == [3, 2, 1]
        assert tf.get("/v1/terraform-backend").status_code == 400  # workspace_id required
        assert tf.get("/v1/terraform-backend", params={"workspace_id": "tfwnope"}).status_code == 404
        assert (
            tf.post(
                "/v1/terraform-backend", params={"workspace_id": workspace}, content=b"not json"
            ).status_code
            == 400
        )
        assert (
            tf.post("/v1/terraform-backend", params={"workspace_id": workspace}, json=[1]).status_code == 400
        )
        assert (
            tf.post(
                "/v1/terraform-backend", params={"workspace_id": workspace}, json={"serial": "x"}
            ).status_code
            == 400
        )
        assert tf.delete("/v1/terraform-backend", params={"workspace_id": workspace}).status_code == 200


@pytest.mark.integration
def test_lock_conflict_is_423_with_the_holder_and_writes_need_its_id(
    cp: EmbeddedControlPlane, workspace: str
) -> None:
    lock_url = f"/v1/terraform-workspaces/{workspace}/lock"
    unlock_url = f"/v1/terraform-workspaces/{workspace}/unlock"
    with httpx.Client(base_url=cp.url, params={"token": cp.runner_token}) as tf:
        taken = tf.post(lock_url, params={"job_id": "job1"}, json={k.lower(): v for k, v in LOCK.items()})
        assert taken.status_code == 200  # keys matched case-insensitively
        assert tf.post(lock_url, json=LOCK).status_code == 200  # the holder again: idempotent
        conflict = tf.post(lock_url, json={**LOCK, "ID": "someone-else"})
        assert conflict.status_code == 423
        assert conflict.json()["ID"] == LOCK["ID"]
        assert conflict.json()["Who"] == "test@host"
        state = {"workspace_id": workspace}
        assert tf.post("/v1/terraform-backend", params=state, json=STATE).status_code == 409
        wrong = tf.post("/v1/terraform-backend", params={**state, "ID": "someone-else"}, json=STATE)
        assert wrong.status_code == 409
        assert wrong.json()["ID"] == LOCK["ID"]
        assert (
            tf.post("/v1/terraform-backend", params={**state, "ID": LOCK["ID"]}, json=STATE).status_code
            == 200
        )
        bad_unlock = tf.post(unlock_url, json={**LOCK, "ID": "someone-else"})
        assert bad_unlock.status_code == 409
        assert bad_unlock.json()["ID"] == LOCK["ID"]
        assert tf.post(unlock_url, json=LOCK).status_code == 200
        assert tf.post(unlock_url, json=LOCK).status_code == 200  # nothing held: fine
        assert tf.post(lock_url, json={**LOCK, "ID": "second"}).status_code == 200
        assert tf.post(unlock_url, content=b"").status_code == 200  # force-unlock: empty body
        assert tf.post(lock_url, json={"Operation": "x"}).status_code == 400  # no ID
        assert tf.post(lock_url, content=b"{").status_code == 400
        assert tf.post("/v1/terraform-workspaces/tfwnope/lock", json=LOCK).status_code == 404
        history = tf.get(f"/v1/terraform-workspaces/{workspace}").json()["lock_history"]
        assert [h["lock"]["id"] for h in history] == ["second", LOCK["ID"]]
        assert all(h["released_at"] for h in history)


@pytest.mark.integration
def test_state_json_upsert_get_delete_and_workspace_crud(cp: EmbeddedControlPlane, workspace: str) -> None:
    base = f"/v1/terraform-workspaces/{workspace}"
    with cp.runner_http() as runner, cp.runner_http(cp.admin_token) as admin:
        assert runner.get(base + "/state-json").status_code == 204
        for version in ("1", "2"):
            response = runner.post(
                base + "/state-json", params={"job_id": "j"}, content=f'{{"v": {version}}}'
            )
            assert response.status_code == 200
            assert response.json() == {"message": "terraform state json updated"}
        assert runner.get(base + "/state-json").json() == {"v": 2}
        assert runner.delete(base + "/states").json() == {"message": "terraform state json deleted"}
        assert runner.get(base + "/state-json").status_code == 204
        assert runner.post("/v1/terraform-workspaces/tfwnope/state-json", content=b"{}").status_code == 404
        assert [w["id"] for w in runner.get("/v1/terraform-workspaces").json()] == [workspace]
        assert runner.post("/v1/terraform-workspaces", json={"id": "tfwmine"}).status_code == 403
        chosen = admin.post(
            "/v1/terraform-workspaces", json={"id": "tfwchosen", "owner_id": "o", "owner_type": "t"}
        )
        assert chosen.status_code == 201
        assert chosen.json()["id"] == "tfwchosen"
        assert admin.post("/v1/terraform-workspaces", json={"id": "tfwchosen"}).status_code == 409
        assert runner.delete("/v1/terraform-workspaces/tfwchosen").json()["id"] == "tfwchosen"
        assert runner.get("/v1/terraform-workspaces/tfwchosen").status_code == 404
        assert runner.post("/v1/terraform-workspaces", json={}).status_code == 201


# ------------------------------------------------------------------ real terraform

MODULE = """
terraform {
  backend "http" {}
}
variable "name" {
  type    = string
  default = "first"
}
variable "sleep" {
  type    = number
  default = 0
}
resource "terraform_data" "thing" {
  input = var.name
  provisioner "local-exec" {
    command = "sleep ${var.sleep}"
  }
}
output "name" {
  value = terraform_data.thing.output
}
"""


class Terraform:
    def __init__(
        self, binary: str, directory: Path, cp: EmbeddedControlPlane, workspace: str, job_id: str
    ) -> None:
        self.binary = binary
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "main.tf").write_text(MODULE)
        query = f"token={cp.runner_token}&job_id={job_id}"
        (directory / "backend.hcl").write_text(
            f'address = "{cp.url}/v1/terraform-backend?{query}&workspace_id={workspace}"\n'
            f'lock_address = "{cp.url}/v1/terraform-workspaces/{workspace}/lock?{query}"\n'
            f'unlock_address = "{cp.url}/v1/terraform-workspaces/{workspace}/unlock?{query}"\n'
            'lock_method = "POST"\nunlock_method = "POST"\n'
        )
        (directory / "empty.tfrc").write_text("")
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(directory),
            "TF_CLI_CONFIG_FILE": str(directory / "empty.tfrc"),
            "TF_IN_AUTOMATION": "1",
            "CHECKPOINT_DISABLE": "1",
            "TF_DATA_DIR": str(directory / ".terraform"),
        }

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.binary, *args],
            cwd=self.directory,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"terraform {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result


@pytest.fixture
def terraform_binary() -> str:
    return require_tool("terraform", hint="reference/test-tools.md §5")


@pytest.mark.terraform
@pytest.mark.integration
def test_real_terraform_init_plan_apply_against_the_backend(
    terraform_binary: str, cp: EmbeddedControlPlane, workspace: str, tmp_path: Path
) -> None:
    tf = Terraform(terraform_binary, tmp_path / "tf", cp, workspace, job_id="jobterraform1")
    tf.run("init", "-input=false", "-backend-config=backend.hcl")
    tf.run("plan", "-input=false", "-lock-timeout=0s", "-out=tfplan")
    tf.run("apply", "-input=false", "-auto-approve", "tfplan")
    with httpx.Client(base_url=cp.url, params={"token": cp.runner_token}) as client:
        state = client.get("/v1/terraform-backend", params={"workspace_id": workspace}).json()
        assert state["outputs"]["name"]["value"] == "first"
        assert [r["type"] for r in state["resources"]] == ["terraform_data"]
        first_revisions = client.get(f"/v1/terraform-workspaces/{workspace}/states").json()
        assert first_revisions[0]["runner_job_id"] == "jobterraform1"
        history = client.get(f"/v1/terraform-workspaces/{workspace}").json()["lock_history"]
        assert len(history) >= 2  # plan and apply each locked
        assert all(h["released_at"] for h in history)
        assert {h["runner_job_id"] for h in history} == {"jobterraform1"}
    tf.run("apply", "-input=false", "-auto-approve", "-lock-timeout=0s", "-var", "name=second")
    output = json.loads(tf.run("output", "-json").stdout)
    assert output["name"]["value"] == "second"
    with httpx.Client(base_url=cp.url, params={"token": cp.runner_token}) as client:
        revisions = client.get(f"/v1/terraform-workspaces/{workspace}/states").json()
        assert len(revisions) > len(first_revisions)


@pytest.mark.terraform
@pytest.mark.integration
def test_second_terraform_is_told_the_state_is_locked_by_the_holder(
    terraform_binary: str, cp: EmbeddedControlPlane, workspace: str, tmp_path: Path
) -> None:
    first = Terraform(terraform_binary, tmp_path / "first", cp, workspace, job_id="jobfirst")
    second = Terraform(terraform_binary, tmp_path / "second", cp, workspace, job_id="jobsecond")
    first.run("init", "-input=false", "-backend-config=backend.hcl")
    second.run("init", "-input=false", "-backend-config=backend.hcl")

    # 1. a lock we hold ourselves
    with httpx.Client(base_url=cp.url, params={"token": cp.runner_token}) as client:
        assert client.post(f"/v1/terraform-workspaces/{workspace}/lock", json=LOCK).status_code == 200
        blocked = second.run("plan", "-input=false", "-lock-timeout=0s", check=False)
        assert blocked.returncode != 0
        message = blocked.stdout + blocked.stderr
        assert "lock" in message.lower()
        assert LOCK["ID"] in message
        assert client.post(f"/v1/terraform-workspaces/{workspace}/unlock", json=LOCK).status_code == 200
    second.run("plan", "-input=false", "-lock-timeout=0s")

    # 2. a slow apply holds it while the second terraform tries
    result: dict[str, Any] = {}

    def slow_apply() -> None:
        result["first"] = first.run("apply", "-input=false", "-auto-approve", "-var", "sleep=3", check=False)

    thread = threading.Thread(target=slow_apply)
    thread.start()
    holder = None
    with httpx.Client(base_url=cp.url, params={"token": cp.runner_token}) as client:
        deadline = time.monotonic() + 30
        while holder is None and time.monotonic() < deadline:
            history = client.get(f"/v1/terraform-workspaces/{workspace}").json()["lock_history"] or []
            held = [h for h in history if not h.get("released_at") and h["runner_job_id"] == "jobfirst"]
            holder = held[0]["lock"]["id"] if held else None
            time.sleep(0.05)
    assert holder, "the first terraform never took the lock"
    blocked = second.run("apply", "-input=false", "-auto-approve", "-lock-timeout=0s", check=False)
    thread.join(120)
    assert blocked.returncode != 0
    assert holder in blocked.stdout + blocked.stderr
    assert result["first"].returncode == 0, result["first"].stderr
    second.run("apply", "-input=false", "-auto-approve", "-lock-timeout=0s", "-var", "name=after")
