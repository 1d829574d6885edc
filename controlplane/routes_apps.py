"""App configs (docs/runner-api.md §8.1): the runner's read, and the operator's writes (ours).

* ``GET /v1/apps/{app_id}/config/{app_config_id}``: the stored AppConfig, looked up by its id
  (the reference ignores ``app_id`` too), with ``id``, ``app_id``, ``org_id`` and times filled in;
* ``PUT /v1/apps/{app_id}/config/{app_config_id}`` (admin): store that app's config;
* ``POST /v1/runner-jobs/{job_id}/app-config`` (admin): store a config under the
  ``app_id``/``app_config_id`` the job's plan names, so that job's Fetch finds it.

A config must be what the reference's Go client decodes into ``AppAppConfig``: the fields the
runner reads are type-checked here (``component_config_connections`` a list of objects,
``sandbox`` an object), so a mistyped config is refused at the write and not at the runner.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from controlplane.errors import BadRequest
from controlplane.http import authenticate, json_response, read_json, store_of
from controlplane.store_base import Row
from controlplane.wire import rfc3339

#: Top-level AppConfig fields that the Go client decodes as arrays / objects.
_ARRAYS = ("component_config_connections", "component_ids", "action_workflow_configs")
_OBJECTS = ("sandbox", "runner", "input", "secrets", "stack", "permissions", "policies")


def check_app_config(config: Any) -> dict[str, Any]:
    """The config as stored, or a 400 naming the first field the Go client could not decode."""
    if not isinstance(config, dict):
        raise BadRequest("an app config must be a JSON object", error="invalid request")
    for name in _ARRAYS:
        value = config.get(name)
        if value is not None and not isinstance(value, list):
            raise BadRequest(f"app config {name} must be an array", error="invalid request")
    for name in _OBJECTS:
        value = config.get(name)
        if value is not None and not isinstance(value, dict):
            raise BadRequest(f"app config {name} must be an object", error="invalid request")
    for index, connection in enumerate(config.get("component_config_connections") or []):
        if not isinstance(connection, dict):
            raise BadRequest(
                f"app config component_config_connections[{index}] must be an object", error="invalid request"
            )
    sandbox = config.get("sandbox") or {}
    if "terraform_version" in sandbox and not isinstance(sandbox["terraform_version"], str):
        raise BadRequest("app config sandbox.terraform_version must be a string", error="invalid request")
    return {
        k: v for k, v in config.items() if k not in ("id", "app_id", "org_id", "created_at", "updated_at")
    }


def render_app_config(row: Row) -> dict[str, Any]:
    config: dict[str, Any] = json.loads(row["config"])
    config.setdefault("component_config_connections", [])
    config.setdefault("component_ids", [])
    config.setdefault("action_workflow_configs", [])
    return {
        "id": row["id"],
        "app_id": row["app_id"],
        "org_id": row["org_id"],
        "created_at": rfc3339(row["created_at"]),
        "updated_at": rfc3339(row["updated_at"]),
        **config,
    }


async def get_app_config(request: Request) -> Response:
    principal = await authenticate(request)
    org_id = principal.require_org_member()
    row = await store_of(request).get_app_config(request.path_params["app_config_id"], org_id)
    return json_response(render_app_config(row))


async def put_app_config(request: Request) -> Response:
    principal = await authenticate(request)
    principal.require_admin()
    config = check_app_config(await read_json(request))
    row = await store_of(request).put_app_config(
        principal.org_id, request.path_params["app_id"], request.path_params["app_config_id"], config
    )
    return json_response(render_app_config(row))


async def attach_app_config(request: Request) -> Response:
    principal = await authenticate(request)
    principal.require_admin()
    config = check_app_config(await read_json(request))
    row = await store_of(request).attach_app_config(request.path_params["job_id"], config)
    return json_response(render_app_config(row), 201)


ROUTES = [
    Route("/v1/apps/{app_id}/config/{app_config_id}", get_app_config, methods=["GET"]),
    Route("/v1/apps/{app_id}/config/{app_config_id}", put_app_config, methods=["PUT"]),
    Route("/v1/runner-jobs/{job_id}/app-config", attach_app_config, methods=["POST"]),
]
