"""Job and execution endpoints (docs/runner-api.md §3, §4), stricter where §12 says so.

* the claim (``POST …/executions``) is atomic: 409 when the job is no longer available;
* execution PATCHes are checked against ``runner.api.models.EXECUTION_TRANSITIONS`` (409);
* results are stored even without contents, and a second result replaces the first;
* outputs keep the reference's "duplicate key" 400 on a second POST.
"""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from controlplane import render
from controlplane.bodies import ExecutionStatusBody, JobStatusBody, OutputsBody, ResultBody
from controlplane.errors import BadRequest
from controlplane.http import authenticate, base_url, json_response, read_json, read_model, store_of, validate
from controlplane.wire import b64url_decode


async def get_job(request: Request) -> Response:
    principal = await authenticate(request)
    row = await store_of(request).get_job(
        request.path_params["job_id"], runner_scope=principal.runner_scope()
    )
    return json_response(render.job(row, base_url(request), detail=True))


async def patch_job(request: Request) -> Response:
    """Deprecated ``PATCH /v1/runner-jobs/{id}``: shut-down jobs mark themselves finished."""
    principal = await authenticate(request)
    body = await read_model(request, JobStatusBody)
    await store_of(request).update_job_status(
        request.path_params["job_id"], body.status.value, runner_scope=principal.runner_scope()
    )
    return json_response({})


async def get_plan(request: Request) -> Response:
    principal = await authenticate(request)
    plan = await store_of(request).get_plan(
        request.path_params["job_id"], runner_scope=principal.runner_scope()
    )
    return Response(plan, media_type="text/plain; charset=utf-8")


async def create_execution(request: Request) -> Response:
    principal = await authenticate(request)
    # The body is ``{}`` (no fields); anything that is not JSON is still refused.
    await read_json(request, empty={})
    row = await store_of(request).claim(
        request.path_params["job_id"],
        request.headers.get("x-nuon-client-version"),
        runner_scope=principal.runner_scope(),
    )
    return json_response(render.execution(row), 201)


async def list_executions(request: Request) -> Response:
    principal = await authenticate(request)
    rows = await store_of(request).list_executions(
        request.path_params["job_id"], runner_scope=principal.runner_scope()
    )
    return json_response([render.execution(row) for row in rows])


async def get_execution(request: Request) -> Response:
    principal = await authenticate(request)
    row = await store_of(request).get_execution(
        request.path_params["job_id"],
        request.path_params["execution_id"],
        runner_scope=principal.runner_scope(),
    )
    return json_response(render.execution(row))


async def patch_execution(request: Request) -> Response:
    principal = await authenticate(request)
    body = await read_model(request, ExecutionStatusBody)
    row = await store_of(request).update_execution(
        request.path_params["job_id"],
        request.path_params["execution_id"],
        body.status.value,
        runner_scope=principal.runner_scope(),
    )
    return json_response(render.execution(row))


def _decode_b64url(name: str, value: str | None) -> bytes | None:
    if not value:
        return None
    try:
        return b64url_decode(value)
    except ValueError:
        raise BadRequest(f"{name} is not valid base64url", error="invalid request") from None


async def create_result(request: Request) -> Response:
    principal = await authenticate(request)
    body = validate(ResultBody, await read_json(request))
    display = None
    if body.contents_display is not None:
        display = json.dumps(body.contents_display, separators=(",", ":")).encode()
    await store_of(request).put_result(
        request.path_params["job_id"],
        request.path_params["execution_id"],
        success=body.success,
        error_code=body.error_code,
        error_metadata=body.error_metadata,
        contents=body.contents or None,
        contents_display=display,
        contents_gzip=_decode_b64url("contents_compressed", body.contents_compressed),
        contents_display_gzip=_decode_b64url("contents_display_compressed", body.contents_display_compressed),
        runner_scope=principal.runner_scope(),
    )
    return json_response(None, 201)


async def get_result(request: Request) -> Response:
    principal = await authenticate(request)
    row = await store_of(request).get_result(
        request.path_params["job_id"],
        request.path_params["execution_id"],
        runner_scope=principal.runner_scope(),
    )
    return json_response(render.result(row))


async def create_outputs(request: Request) -> Response:
    principal = await authenticate(request)
    body = await read_model(request, OutputsBody)
    raw = json.dumps(body.outputs if body.outputs is not None else {}, separators=(",", ":")).encode()
    row = await store_of(request).put_outputs(
        request.path_params["job_id"],
        request.path_params["execution_id"],
        raw,
        runner_scope=principal.runner_scope(),
    )
    return json_response(render.outputs(row), 201)


_EXEC = "/v1/runner-jobs/{job_id}/executions/{execution_id}"

ROUTES = [
    Route("/v1/runner-jobs/{job_id}", get_job, methods=["GET"]),
    Route("/v1/runner-jobs/{job_id}", patch_job, methods=["PATCH"]),
    Route("/v1/runner-jobs/{job_id}/plan", get_plan, methods=["GET"]),
    Route("/v1/runner-jobs/{job_id}/executions", create_execution, methods=["POST"]),
    Route("/v1/runner-jobs/{job_id}/executions", list_executions, methods=["GET"]),
    Route(_EXEC, get_execution, methods=["GET"]),
    Route(_EXEC, patch_execution, methods=["PATCH"]),
    Route(_EXEC + "/result", create_result, methods=["POST"]),
    Route(_EXEC + "/result", get_result, methods=["GET"]),
    Route(_EXEC + "/outputs", create_outputs, methods=["POST"]),
]
