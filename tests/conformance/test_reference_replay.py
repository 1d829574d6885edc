"""The reference runner's call sequence replayed against the embedded control plane, and every
field its Go client decodes checked against the type the client decodes it into (issue 10;
docs/runner-api.md §10).

The requests are the ones ``bins/runner`` makes through ``nuon-runner-go`` (same paths, bodies,
headers and tokens; ``?token=`` for terraform's backend, the Go JSON producer's quoted base64 for
state-json). ``MODELS`` lists, per generated model in ``nuon-runner-go/models``, the JSON field
names and the Go types they decode into; a field our control plane sends with another JSON type
would make the Go client fail the whole call. Fields the models do not name are ignored by the
Go decoder and are not checked; null is accepted for every field (Go leaves the zero value).
"""

from __future__ import annotations

import base64
import gzip
import json
import re
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.logs.v1 import logs_pb2

from runner.api.statejson import encode_state_json
from tests.support.controlplane import EmbeddedControlPlane

pytestmark = pytest.mark.integration


# Go type -> kind: "str", "int", "bool", "map:str", "map:any", "list:str", "list:<Model>",
# "<Model>" (an object), "any". Enumerations are strings.
def of(kind: str, names: str) -> dict[str, str]:
    """``kind`` for each of the space-separated field ``names``."""
    return dict.fromkeys(names.split(), kind)


MODELS: dict[str, dict[str, str]] = {
    "AppRunnerGroupSettings": {
        **of(
            "str",
            "aws_cloudformation_stack_type aws_instance_type container_image_tag container_image_url "
            "created_at created_by_id id local_aws_iam_role_arn logging_level org_aws_iam_role_arn "
            "org_id org_k8s_service_account_name otel_collector_config platform runner_api_url "
            "runner_group_id updated_at",
        ),
        "aws_max_instance_lifetime": "int",
        "heart_beat_timeout": "int",
        "aws_tags": "map:str",
        "metadata": "map:str",
        **of("bool", "enable_logging enable_metrics enable_sentry sandbox_mode"),
        "groups": "list:str",
    },
    "AppRunnerJob": {
        **of(
            "str",
            "created_at created_by_id final_runner_job_execution_id finished_at group id log_stream_id "
            "operation org_id outputs_json owner_id owner_type runner_id started_at status "
            "status_description type updated_at",
        ),
        **of(
            "int",
            "available_timeout execution_count execution_time execution_timeout max_executions "
            "overall_timeout queue_timeout",
        ),
        "executions": "list:AppRunnerJobExecution",
        "metadata": "map:str",
        "outputs": "any",
    },
    "AppRunnerJobExecution": {
        **of("str", "created_at created_by_id id org_id runner_job_id status updated_at"),
        "outputs": "AppRunnerJobExecutionOutputs",
        "result": "AppRunnerJobExecutionResult",
    },
    "AppRunnerJobExecutionOutputs": {
        **of("str", "created_at created_by_id id org_id outputs_json runner_job_execution_id updated_at"),
        "outputs": "map:any",
    },
    "AppRunnerJobExecutionResult": {
        **of(
            "str",
            "contents contents_display contents_display_gzip contents_gzip created_at created_by_id id "
            "org_id runner_job_execution_id updated_at",
        ),
        "error_code": "int",
        "error_metadata": "map:str",
        "success": "bool",
    },
    "AppRunnerHeartBeat": {
        **of("str", "created_at created_by_id id process runner_id started_at updated_at version"),
        "alive_time": "int",
    },
    "AppAppConfig": {
        **of(
            "str",
            "app_branch_id app_id checksum cli_version created_at created_by_id id org_id readme state "
            "status status_description updated_at",
        ),
        "version": "int",
        "component_ids": "list:str",
        "component_config_connections": "list:AppComponentConfigConnection",
        "action_workflow_configs": "list:AppActionWorkflowConfig",
        "sandbox": "AppAppSandboxConfig",
    },
    "AppComponentConfigConnection": {
        **of(
            "str",
            "app_config_id checksum component_id component_name created_at created_by_id drift_schedule "
            "id type updated_at",
        ),
        "app_config_version": "int",
        "version": "int",
        "terraform_module": "AppTerraformModuleComponentConfig",
    },
    "AppTerraformModuleComponentConfig": {
        **of("str", "component_config_connection_id created_at created_by_id id updated_at version"),
        "env_vars": "map:str",
        "variables": "map:str",
        "variables_files": "list:str",
    },
    "AppAppSandboxConfig": {
        **of(
            "str",
            "app_config_id app_id aws_region_type cloud_platform created_at created_by_id "
            "drift_schedule id org_id terraform_version updated_at",
        ),
        "env_vars": "map:str",
        "variables": "map:str",
        "variables_files": "list:str",
    },
    "AppInstallActionWorkflowRun": {
        **of(
            "str",
            "action_workflow_config_id created_at created_by_id id install_action_workflow_id "
            "install_id install_workflow_id status status_description trigger_type triggered_by_id "
            "triggered_by_type updated_at workflow_id",
        ),
        "execution_time": "int",
        "config": "AppActionWorkflowConfig",
        "outputs": "any",
        "run_env_vars": "map:str",
        "steps": "list:AppInstallActionWorkflowRunStep",
    },
    "AppInstallActionWorkflowRunStep": {
        **of("str", "created_at created_by_id id install_action_workflow_run_id status step_id updated_at"),
        "execution_duration": "int",
    },
    "AppActionWorkflowConfig": {
        **of("str", "action_workflow_id app_config_id app_id created_at created_by_id id updated_at"),
        "component_dependency_ids": "list:str",
        "references": "list:str",
        "steps": "list:AppActionWorkflowStepConfig",
        "timeout": "int",
    },
    "AppActionWorkflowStepConfig": {
        **of(
            "str",
            "action_workflow_config_id app_config_id app_id command created_at created_by_id id "
            "inline_contents name previous_step_id updated_at",
        ),
        "env_vars": "map:str",
        "idx": "int",
        "references": "list:str",
    },
}


def decode_problems(value: Any, kind: str, path: str = "$") -> list[str]:
    """Where the Go client would fail to decode ``value`` as ``kind`` (empty: it decodes)."""
    if value is None or kind == "any":
        return []
    if kind == "str":
        return [] if isinstance(value, str) else [f"{path}: {type(value).__name__}, Go wants a string"]
    if kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63
        return [] if ok else [f"{path}: {value!r}, Go wants an int64"]
    if kind == "bool":
        return [] if isinstance(value, bool) else [f"{path}: {value!r}, Go wants a bool"]
    if kind.startswith("map:"):
        if not isinstance(value, dict):
            return [f"{path}: {type(value).__name__}, Go wants an object"]
        inner = kind[4:]
        return [p for k, v in value.items() for p in decode_problems(v, inner, f"{path}.{k}")]
    if kind.startswith("list:"):
        if not isinstance(value, list):
            return [f"{path}: {type(value).__name__}, Go wants an array"]
        inner = kind[5:]
        return [p for i, v in enumerate(value) for p in decode_problems(v, inner, f"{path}[{i}]")]
    model = MODELS[kind]
    if not isinstance(value, dict):
        return [f"{path}: {type(value).__name__}, Go wants a {kind} object"]
    return [
        p
        for name, field in model.items()
        if name in value
        for p in decode_problems(value[name], field, f"{path}.{name}")
    ]


def decodes(response: httpx.Response, kind: str, status: int) -> Any:
    assert response.status_code == status, (
        f"{response.request.method} {response.request.url.path}: {response.status_code} {response.text[:500]}"
    )
    body = response.json()
    problems = decode_problems(body, kind)
    assert not problems, f"{response.request.method} {response.request.url.path} as {kind}:\n" + "\n".join(
        problems
    )
    return body


#: What the reference's settings parsing accepts (``bins/runner/internal/pkg/settings/fetch.go``).
GO_SLOG_LEVEL = re.compile(r"(?i:debug|info|warn|error)([+-]\d+)?")


def test_the_reference_runners_calls_against_our_control_plane(
    embedded_control_plane: EmbeddedControlPlane,
) -> None:
    cp = embedded_control_plane
    headers = {"X-Nuon-Client-Version": "runner:0.19.720"}
    with cp.operator() as operator:
        workspace = operator.create_workspace("tfwreplay")["id"]
        job = operator.submit(
            "sandbox-terraform",
            {"app_id": "app1", "app_config_id": "apc1", "terraform_backend": {"WorkspaceID": workspace}},
            operation="create-apply-plan",
        )
    with cp.runner_http() as runner, cp.runner_http(cp.admin_token) as admin:
        runner.headers.update(headers)
        admin.post(
            f"/v1/runner-jobs/{job['id']}/app-config",
            json={
                "sandbox": {"terraform_version": "1.11.4"},
                "component_config_connections": [
                    {"component_id": "cmp1", "terraform_module": {"version": "1.11.4"}}
                ],
            },
        ).raise_for_status()

        # Start-up: settings (required fields as the reference parses them), then a heartbeat.
        settings = decodes(runner.get(f"/v1/runners/{cp.runner_id}/settings"), "AppRunnerGroupSettings", 200)
        assert GO_SLOG_LEVEL.fullmatch(settings["logging_level"])
        assert settings["heart_beat_timeout"] > 0
        assert isinstance(settings["metadata"], dict)
        beat = runner.post(
            f"/v1/runners/{cp.runner_id}/heart-beats",
            json={"alive_time": 5_000_000_000, "version": "0.19.720", "process": ""},
        )
        decodes(beat, "AppRunnerHeartBeat", 201)

        # The job loop of the sandbox group: no limit, no wait; newest first on the reference.
        jobs = runner.get(
            f"/v1/runners/{cp.runner_id}/jobs", params={"group": "sandbox", "status": "available"}
        )
        listed = decodes(jobs, "list:AppRunnerJob", 200)
        assert [j["id"] for j in listed] == [job["id"]]
        execution = decodes(
            runner.post(f"/v1/runner-jobs/{job['id']}/executions", json={}), "AppRunnerJobExecution", 201
        )
        exec_path = f"/v1/runner-jobs/{job['id']}/executions/{execution['id']}"
        for _ in range(4):  # resetting, fetching, validate, initialize
            decodes(runner.patch(exec_path, json={"status": "initializing"}), "AppRunnerJobExecution", 200)
        plan = runner.get(f"/v1/runner-jobs/{job['id']}/plan")
        assert plan.status_code == 200
        assert json.loads(plan.text)["terraform_backend"]["WorkspaceID"] == workspace
        config = decodes(runner.get("/v1/apps/app1/config/apc1"), "AppAppConfig", 200)
        assert config["sandbox"]["terraform_version"] == "1.11.4"
        decodes(runner.patch(exec_path, json={"status": "in-progress"}), "AppRunnerJobExecution", 200)
        watched = decodes(runner.get(f"/v1/runner-jobs/{job['id']}"), "AppRunnerJob", 200)
        assert watched["status"] == "in-progress"

        # Terraform's own backend: ?token=, no Authorization header.
        with httpx.Client(base_url=cp.url, timeout=10) as terraform:
            token = {"token": cp.runner_token, "job_id": job["id"]}
            assert (
                terraform.get(
                    "/v1/terraform-backend", params={**token, "workspace_id": workspace}
                ).status_code
                == 204
            )
            lock = {
                "ID": "lock-1",
                "Operation": "OperationTypePlan",
                "Who": "r@h",
                "Version": "1.11.4",
                "Created": "2026-01-01T00:00:00Z",
            }
            assert (
                terraform.post(
                    f"/v1/terraform-workspaces/{workspace}/lock", params=token, json=lock
                ).status_code
                == 200
            )
            state = {
                "version": 4,
                "terraform_version": "1.11.4",
                "serial": 1,
                "lineage": "l",
                "outputs": {},
                "resources": [],
            }
            stored = terraform.post(
                "/v1/terraform-backend",
                params={**token, "workspace_id": workspace, "ID": "lock-1"},
                json=state,
            )
            assert stored.status_code == 200
            assert (
                terraform.post(
                    f"/v1/terraform-workspaces/{workspace}/unlock", params=token, json=lock
                ).status_code
                == 200
            )

        # The plan result (base64url of the tfplan; base64url of gzip of the display JSON).
        tfplan, display = b"PK\x03\x04 a plan file", json.dumps({"format_version": "1.2"}).encode()
        result = runner.post(
            f"{exec_path}/result",
            json={
                "success": True,
                "contents_compressed": base64.urlsafe_b64encode(tfplan).decode(),
                "contents_display_compressed": base64.urlsafe_b64encode(gzip.compress(display)).decode(),
            },
        )
        assert result.status_code == 201
        assert not decode_problems(result.json(), "AppRunnerJobExecutionResult")
        decodes(runner.patch(exec_path, json={"status": "in-progress"}), "AppRunnerJobExecution", 200)
        outputs = decodes(
            runner.post(f"{exec_path}/outputs", json={"outputs": {"a": 1, "b": ["x"]}}),
            "AppRunnerJobExecutionOutputs",
            201,
        )
        assert json.loads(base64.b64decode(outputs["outputs_json"])) == {"a": 1, "b": ["x"]}
        decodes(runner.patch(exec_path, json={"status": "cleaning-up"}), "AppRunnerJobExecution", 200)
        decodes(runner.patch(exec_path, json={"status": "finished"}), "AppRunnerJobExecution", 200)
        done = decodes(runner.get(f"/v1/runner-jobs/{job['id']}"), "AppRunnerJob", 200)
        assert done["status"] == "finished"
        with cp.operator() as operator:
            kept = operator.result(job["id"])
        assert base64.b64decode(kept["contents_gzip"]) == tfplan, (
            "apply_plan_contents = base64std(contents_gzip)"
        )

        # state-json as the Go client writes a []byte body, then read back decoded.
        document = json.dumps({"format_version": "1.0"}).encode() + b"\n"
        posted = runner.post(
            f"/v1/terraform-workspaces/{workspace}/state-json",
            params={"job_id": job["id"]},
            content=encode_state_json(document),
            headers={"Content-Type": "application/json"},
        )
        assert posted.status_code == 200
        assert posted.json() == {"message": "terraform state json updated"}
        assert runner.get(f"/v1/terraform-workspaces/{workspace}/state-json").content == document

        # A job log batch: OTLP protobuf, runner token.
        request = logs_service_pb2.ExportLogsServiceRequest()
        request.resource_logs.add().scope_logs.add().log_records.add(
            severity_number=logs_pb2.SEVERITY_NUMBER_INFO, severity_text="info"
        ).body.string_value = "hello"
        written = runner.post(
            f"/v1/log-streams/{job['log_stream_id']}/logs",
            content=request.SerializeToString(),
            headers={"Content-Type": "application/x-protobuf"},
        )
        assert written.status_code == 201


def test_the_reference_actions_and_shutdown_calls(embedded_control_plane: EmbeddedControlPlane) -> None:
    cp = embedded_control_plane
    with cp.runner_http() as runner, cp.runner_http(cp.admin_token) as admin:
        config = admin.post(
            "/v1/action-workflows/configs",
            json={
                "timeout": 60_000_000_000,
                "steps": [{"name": "a", "inline_contents": "echo a"}, {"name": "b", "command": "b.sh"}],
            },
        ).json()
        run = admin.post(
            "/v1/installs/inl1/action-workflows/runs", json={"action_workflow_config_id": config["id"]}
        ).json()

        fetched = decodes(
            runner.get(f"/v1/installs/inl1/action-workflows/runs/{run['id']}"),
            "AppInstallActionWorkflowRun",
            200,
        )
        served = decodes(
            runner.get(f"/v1/action-workflows/configs/{fetched['action_workflow_config_id']}"),
            "AppActionWorkflowConfig",
            200,
        )
        assert served["timeout"] == 60_000_000_000
        # Zipped by index: run steps, config steps.
        assert [s["idx"] for s in served["steps"]] == [0, 1]
        for step in fetched["steps"]:
            for status, duration in (("in-progress", None), ("finished", 2_000_000_000)):
                body: dict[str, Any] = {"status": status}
                if duration:
                    body["execution_duration"] = duration
                workflow = config["action_workflow_id"]
                url = f"/v1/installs/inl1/action-workflow-runs/{workflow}/steps/{step['id']}"
                decodes(runner.put(url, json=body), "AppInstallActionWorkflowRunStep", 200)

        # A forced shut-down: the execution finished, then the job row itself (PATCH -> {}).
        with cp.operator() as operator:
            job = operator.submit("shut-down", metadata={"shutdown_type": "force"})
        execution = runner.post(f"/v1/runner-jobs/{job['id']}/executions", json={}).json()
        exec_path = f"/v1/runner-jobs/{job['id']}/executions/{execution['id']}"
        for status in ("initializing", "in-progress", "cleaning-up", "finished"):
            decodes(runner.patch(exec_path, json={"status": status}), "AppRunnerJobExecution", 200)
        patched = runner.patch(f"/v1/runner-jobs/{job['id']}", json={"status": "finished"})
        assert patched.status_code == 200
        assert patched.json() == {}
        decodes(runner.get(f"/v1/runner-jobs/{job['id']}"), "AppRunnerJob", 200)


def test_the_nuon_helm_driver_sequence(embedded_control_plane: EmbeddedControlPlane) -> None:
    """``pkg/helm/driver/nuon_driver.go``: Create (201, 409 = ErrReleaseExists), Get (404 =
    ErrReleaseNotFound), Query (404 = ErrReleaseNotFound), Update (404), Delete (Get, then DELETE)."""
    cp = embedded_control_plane
    base = "/v1/helm-releases/hchreplay/releases/default"
    release = {"name": "r", "version": 1, "namespace": "default", "info": {"status": "pending-install"}}
    with cp.runner_http() as runner:
        assert runner.get(f"{base}/query", params={"name": "r", "owner": "helm"}).status_code == 404
        assert runner.post(f"{base}/sh.helm.release.v1.r.v1", json=release).status_code == 201
        assert runner.post(f"{base}/sh.helm.release.v1.r.v1", json=release).status_code == 409
        deployed = {**release, "info": {"status": "deployed"}}
        assert runner.put(f"{base}/sh.helm.release.v1.r.v1", json=deployed).status_code == 200
        found = runner.get(f"{base}/query", params={"name": "r", "owner": "helm", "status": "deployed"})
        assert [r["info"]["status"] for r in found.json()] == ["deployed"]
        assert runner.get(f"{base}/sh.helm.release.v1.r.v1").json()["info"]["status"] == "deployed"
        assert runner.delete(f"{base}/sh.helm.release.v1.r.v1").status_code == 200
        assert runner.get(f"{base}/sh.helm.release.v1.r.v1").status_code == 404
