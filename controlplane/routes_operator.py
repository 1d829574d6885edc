"""The operator API (ours, admin token): submit and cancel jobs, change settings, add runners.

A submission picks the group from the job type (the job-type table, ``runner.api.jobtypes``)
unless it names one, takes the table's default execution timeout, and gets its own log stream with a write
token. A plan naming a terraform workspace that does not exist creates it (option
``auto_create_workspaces``), so a plan can be written before its workspace.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from controlplane import render
from controlplane.bodies import CreateRunnerBody, SettingsPatchBody, SubmitJobBody
from controlplane.errors import BadRequest
from controlplane.http import (
    authenticate,
    base_url,
    json_response,
    options_of,
    read_json,
    read_model,
    store_of,
    validate,
)
from controlplane.ids import new_id
from controlplane.store import JobSpec
from controlplane.wire import seconds_to_ns
from runner.api.jobtypes import default_execution_timeout, group_for_type
from runner.api.models import (
    DEFAULT_AVAILABLE_TIMEOUT,
    DEFAULT_QUEUE_TIMEOUT,
    JobGroup,
    JobOperation,
    timedelta_to_ns,
)

_TYPE = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_GROUPS = frozenset(g.value for g in JobGroup) - {"", "any"}
_OPERATIONS = frozenset(o.value for o in JobOperation)
#: Owner id prefix and owner type a job of each group gets when the submission names none.
_OWNERS: dict[str, tuple[str, str]] = {
    "build": ("bld", "component_builds"),
    "sync": ("dpl", "install_deploys"),
    "deploy": ("dpl", "install_deploys"),
    "sandbox": ("sbr", "install_sandbox_runs"),
    "actions": ("iar", "install_action_workflow_runs"),
}


def _folded(mapping: dict[str, Any], key: str) -> Any:
    for k, v in mapping.items():
        if isinstance(k, str) and k.lower() == key:
            return v
    return None


def plan_workspace_id(plan: dict[str, Any]) -> str | None:
    """``terraform_backend.WorkspaceID`` at the plan's top level or under ``terraform``."""
    candidates = [plan]
    terraform = _folded(plan, "terraform")
    if isinstance(terraform, dict):
        candidates.append(terraform)
    for holder in candidates:
        backend = _folded(holder, "terraform_backend")
        if isinstance(backend, dict):
            workspace_id = _folded(backend, "workspaceid")
            if isinstance(workspace_id, str) and workspace_id:
                return workspace_id
    return None


def job_spec(body: SubmitJobBody, runner_id: str) -> JobSpec:
    if not _TYPE.match(body.type):
        raise BadRequest(f"invalid job type {body.type!r}", error="invalid job type")
    group = body.group or group_for_type(body.type)
    if group is None:
        raise BadRequest(
            f"unknown job type {body.type!r}: pass a group to submit a job type the contract does not list",
            error="unknown job type",
        )
    if group not in _GROUPS:
        raise BadRequest(f"invalid group {group!r}; one of {sorted(_GROUPS)}", error="invalid group")
    operation = body.operation or ("build" if group == "build" else "exec")
    if operation not in _OPERATIONS:
        raise BadRequest(
            f"invalid operation {operation!r}; one of {sorted(_OPERATIONS)}", error="invalid operation"
        )
    prefix, owner_type = _OWNERS.get(group, ("", "runners"))
    owner_id = body.owner_id or (new_id(prefix) if prefix else runner_id)
    workspace_id = plan_workspace_id(body.plan) if body.plan is not None else None
    if workspace_id is not None and (
        len(workspace_id) > 64 or not re.match(r"^[A-Za-z0-9_.-]+$", workspace_id)
    ):
        raise BadRequest(f"invalid terraform workspace id {workspace_id!r} in the plan", error="invalid plan")
    return JobSpec(
        type=body.type,
        group=group,
        operation=operation,
        plan_json=None if body.plan is None else json.dumps(body.plan),
        execution_timeout=body.execution_timeout or timedelta_to_ns(default_execution_timeout(body.type)),
        available_timeout=body.available_timeout or timedelta_to_ns(DEFAULT_AVAILABLE_TIMEOUT),
        queue_timeout=body.queue_timeout or timedelta_to_ns(DEFAULT_QUEUE_TIMEOUT),
        overall_timeout=body.overall_timeout,
        max_executions=body.max_executions or 1,
        metadata=body.metadata,
        owner_id=owner_id,
        owner_type=body.owner_type or owner_type,
        workspace_id=workspace_id,
    )


async def submit_job(request: Request) -> Response:
    principal = await authenticate(request)
    principal.require_admin()
    runner_id = request.path_params["runner_id"]
    data = await read_json(request)
    if (
        isinstance(data, dict)
        and "plan" in data
        and data["plan"] is not None
        and not isinstance(data["plan"], dict)
    ):
        raise BadRequest("plan must be a JSON object", error="invalid plan")
    body = validate(SubmitJobBody, data)
    spec = job_spec(body, runner_id)
    row = await store_of(request).submit_job(
        runner_id, spec, auto_create_workspaces=options_of(request).auto_create_workspaces
    )
    return json_response(render.job(row, base_url(request), detail=True), 201)


async def cancel_job(request: Request) -> Response:
    principal = await authenticate(request)
    principal.require_admin()
    await read_json(request, empty={})
    row = await store_of(request).cancel_job(request.path_params["job_id"])
    return json_response(render.job(row, base_url(request), detail=True))


_GO_SLOG_LEVEL = re.compile(r"(?i:debug|info|warn|error)([+-]\d+)?")


def reference_logging_level(level: str) -> str:
    """``level`` as stored, if the reference runner can start with it, else a 400.

    The reference parses ``logging_level`` with Go's ``slog.Level.UnmarshalText`` at start-up and
    exits when it fails (``bins/runner/internal/pkg/settings/fetch.go``): only DEBUG, INFO, WARN or
    ERROR in any case, with an optional ``+n``/``-n`` offset. ``warning``, ``trace`` or an empty
    value would stop every reference runner of the group (docs/runner-api.md §2.3).
    """
    if not _GO_SLOG_LEVEL.fullmatch(level):
        raise BadRequest(
            f"logging_level {level!r} is not one the reference runner parses (DEBUG, INFO, WARN or"
            " ERROR, optionally with +n/-n)",
            error="invalid request",
        )
    return level.upper()


async def patch_settings(request: Request) -> Response:
    principal = await authenticate(request)
    principal.require_admin()
    body = await read_model(request, SettingsPatchBody)
    fields = body.model_dump(exclude_unset=True)
    if "job_group_parallelism" in fields and fields["job_group_parallelism"] is not None:
        fields["job_group_parallelism"] = {k: str(v) for k, v in fields["job_group_parallelism"].items()}
    fields = {k: v for k, v in fields.items() if v is not None or k == "job_group_parallelism"}
    if isinstance(fields.get("logging_level"), str):
        fields["logging_level"] = reference_logging_level(fields["logging_level"])
    row = await store_of(request).patch_settings(request.path_params["runner_id"], fields)
    return json_response(render.settings(row, base_url(request)))


async def create_runner(request: Request) -> Response:
    principal = await authenticate(request)
    principal.require_admin()
    body = await read_model(request, CreateRunnerBody, empty={})
    store = store_of(request)
    runner_id, token = await store.create_runner(
        principal.org_id, body.name, seconds_to_ns(options_of(request).heart_beat_timeout)
    )
    out = render.runner(await store.get_runner(runner_id), base_url(request))
    out["token"] = token
    return json_response(out, 201)


async def list_runners(request: Request) -> Response:
    principal = await authenticate(request)
    principal.require_admin()
    rows = await store_of(request).list_runners(principal.org_id)
    url = base_url(request)
    return json_response([render.runner(row, url) for row in rows])


ROUTES = [
    Route("/v1/runners", list_runners, methods=["GET"]),
    Route("/v1/runners", create_runner, methods=["POST"]),
    Route("/v1/runners/{runner_id}/jobs", submit_job, methods=["POST"]),
    Route("/v1/runners/{runner_id}/settings", patch_settings, methods=["PATCH"]),
    Route("/v1/runner-jobs/{job_id}/cancel", cancel_job, methods=["POST"]),
]
