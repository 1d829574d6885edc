"""Action workflows (docs/runner-api.md §8.2): what the reference runner's ``actions-workflow``
handler reads and writes, and the operator routes (ours) that create configs and runs.

Runner side (runner token):
* ``GET /v1/installs/{install_id}/action-workflows/runs/{run_id}``: the run, its steps in order
  and its ``config``;
* ``GET /v1/action-workflows/configs/{config_id}``: the config (``timeout`` in nanoseconds);
* ``PUT /v1/installs/{install_id}/action-workflow-runs/{workflow_run_id}/steps/{step_id}``
  ``{status, execution_duration}``: found by ``step_id`` alone, like the reference (its runner
  sends the workflow id in the run slot); an unknown step is 404, an unknown status 400.

Operator side (admin token):
* ``POST /v1/action-workflows/configs`` ``{id?, action_workflow_id?, app_id?, timeout?, steps}``;
* ``POST /v1/installs/{install_id}/action-workflows/runs``
  ``{id?, action_workflow_config_id, run_env_vars?, runner_job_id?}``: one pending step per
  config step.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import Field, StrictInt, StrictStr
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from controlplane.bodies import Body
from controlplane.errors import BadRequest
from controlplane.http import authenticate, json_response, read_model, store_of
from controlplane.store_actions import STEP_STATUSES
from controlplane.store_base import Row
from controlplane.wire import rfc3339

_ID = Annotated[StrictStr, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]


class GitSource(Body):
    model_config = Body.model_config | {"extra": "allow"}


class StepConfigBody(Body):
    name: Annotated[StrictStr, Field(min_length=1, max_length=256)]
    command: StrictStr = ""
    inline_contents: StrictStr = ""
    env_vars: dict[str, StrictStr] = Field(default_factory=dict)
    public_git_vcs_config: GitSource | None = None
    connected_github_vcs_config: GitSource | None = None
    #: Ours: the step's own timeout in nanoseconds (0: only the workflow's); served as given.
    timeout: Annotated[StrictInt, Field(ge=0)] = 0


class ActionConfigBody(Body):
    id: _ID | None = None
    action_workflow_id: _ID | None = None
    app_id: StrictStr = ""
    timeout: Annotated[StrictInt, Field(ge=0)] = 0
    steps: Annotated[list[StepConfigBody], Field(min_length=1, max_length=100)]


class ActionRunBody(Body):
    id: _ID | None = None
    action_workflow_config_id: StrictStr
    run_env_vars: dict[str, StrictStr] = Field(default_factory=dict)
    runner_job_id: StrictStr | None = None


class StepUpdateBody(Body):
    model_config = Body.model_config | {"extra": "ignore"}

    status: StrictStr
    execution_duration: Annotated[StrictInt, Field(ge=0)] | None = None


def _times(row: Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "created_at": rfc3339(row["created_at"]),
        "updated_at": rfc3339(row["updated_at"]),
    }


def render_config(row: Row) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(row["config"])
    steps = [
        {
            **step,
            "created_at": rfc3339(row["created_at"]),
            "updated_at": rfc3339(row["updated_at"]),
            "references": [],
        }
        for step in document.get("steps") or []
    ]
    return {
        **_times(row),
        "action_workflow_id": row["action_workflow_id"],
        "app_id": row["app_id"],
        "timeout": row["timeout"],
        "steps": steps,
        "triggers": [],
        "references": [],
        "refs": [],
        "component_dependency_ids": [],
    }


def render_step(row: Row) -> dict[str, Any]:
    return {
        **_times(row),
        "install_action_workflow_run_id": row["run_id"],
        "step_id": row["step_id"],
        "status": row["status"],
        "execution_duration": row["execution_duration"],
    }


def render_run(run: Row, steps: list[Row], config: Row) -> dict[str, Any]:
    out: dict[str, Any] = {
        **_times(run),
        "install_id": run["install_id"],
        "action_workflow_config_id": run["action_workflow_config_id"],
        "status": run["status"],
        "trigger_type": run["trigger_type"],
        "run_env_vars": json.loads(run["run_env_vars"]),
        "steps": [render_step(step) for step in steps],
        "config": render_config(config),
    }
    if run["runner_job_id"]:
        out["runner_job_id"] = run["runner_job_id"]
    return out


async def get_run(request: Request) -> Response:
    principal = await authenticate(request)
    org_id = principal.require_org_member()
    rows = await store_of(request).get_action_run(
        request.path_params["run_id"], org_id, request.path_params["install_id"]
    )
    return json_response(render_run(*rows))


async def get_config(request: Request) -> Response:
    principal = await authenticate(request)
    org_id = principal.require_org_member()
    row = await store_of(request).get_action_config(request.path_params["config_id"], org_id)
    return json_response(render_config(row))


async def update_step(request: Request) -> Response:
    principal = await authenticate(request)
    org_id = principal.require_org_member()
    body = await read_model(request, StepUpdateBody)
    if body.status not in STEP_STATUSES:
        raise BadRequest(
            f"step status {body.status!r} is not one of {', '.join(sorted(STEP_STATUSES))}",
            error="invalid request",
        )
    row = await store_of(request).update_action_step(
        request.path_params["step_id"], org_id, body.status, body.execution_duration
    )
    return json_response(render_step(row))


async def create_config(request: Request) -> Response:
    principal = await authenticate(request)
    principal.require_admin()
    body = await read_model(request, ActionConfigBody)
    config = body.model_dump(exclude={"id"}, exclude_none=True)
    row = await store_of(request).create_action_config(principal.org_id, config, body.id)
    return json_response(render_config(row), 201)


async def create_run(request: Request) -> Response:
    principal = await authenticate(request)
    principal.require_admin()
    body = await read_model(request, ActionRunBody)
    rows = await store_of(request).create_action_run(
        principal.org_id,
        request.path_params["install_id"],
        body.action_workflow_config_id,
        body.run_env_vars,
        body.runner_job_id,
        body.id,
    )
    return json_response(render_run(*rows), 201)


ROUTES = [
    Route("/v1/installs/{install_id}/action-workflows/runs/{run_id}", get_run, methods=["GET"]),
    Route("/v1/installs/{install_id}/action-workflows/runs", create_run, methods=["POST"]),
    Route("/v1/action-workflows/configs/{config_id}", get_config, methods=["GET"]),
    Route("/v1/action-workflows/configs", create_config, methods=["POST"]),
    Route(
        "/v1/installs/{install_id}/action-workflow-runs/{workflow_run_id}/steps/{step_id}",
        update_step,
        methods=["PUT"],
    ),
]
