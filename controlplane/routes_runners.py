"""Runner-facing endpoints about the runner itself and its job queue (docs/runner-api.md §2, §3).

The jobs list is oldest first (we fix the reference's LIFO, §12.16) and, with ``wait``, is a
long-poll: the request is held until a job becomes available for this runner and group, or the
wait ends. Wake-ups come from ``JobNotifier``, never from polling the database.
"""

from __future__ import annotations

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from controlplane import render
from controlplane.bodies import HealthCheckBody, HeartBeatBody
from controlplane.errors import BadRequest, NotFound
from controlplane.http import (
    JSON_TYPE,
    authenticate,
    base_url,
    json_response,
    options_of,
    query_int,
    read_body,
    read_model,
    store_of,
)
from controlplane.notify import ANY_GROUP
from controlplane.wire import parse_wait, seconds_to_ns
from runner.api.models import JobGroup, JobStatus

_STATUSES = frozenset(s.value for s in JobStatus)
_GROUPS = frozenset(g.value for g in JobGroup)
#: ``status`` values that mean "no status filter" (docs/runner-api.md §3.5, plus ``any``).
_ANY_STATUS = frozenset({"", "any", "unknown"})


async def get_runner(request: Request) -> Response:
    principal = await authenticate(request)
    runner_id = request.path_params["runner_id"]
    principal.require_runner(runner_id)
    row = await store_of(request).get_runner(runner_id)
    return json_response(render.runner(row, base_url(request)))


async def get_settings(request: Request) -> Response:
    principal = await authenticate(request)
    runner_id = request.path_params["runner_id"]
    principal.require_runner(runner_id)
    row = await store_of(request).get_runner(runner_id)
    return json_response(render.settings(row, base_url(request)))


async def create_heartbeat(request: Request) -> Response:
    principal = await authenticate(request)
    runner_id = request.path_params["runner_id"]
    principal.require_runner(runner_id)
    body = await read_model(request, HeartBeatBody)
    options = options_of(request)
    row, _cancelled = await store_of(request).heartbeat(
        runner_id,
        body.alive_time,
        body.version,
        body.process,
        seconds_to_ns(options.restart_grace),
        instance_id=body.instance_id,
        offline_after_ns=seconds_to_ns(options.heartbeat_offline_after),
    )
    return json_response(render.heartbeat(row), 201)


async def latest_heartbeat(request: Request) -> Response:
    principal = await authenticate(request)
    runner_id = request.path_params["runner_id"]
    principal.require_runner(runner_id)
    store = store_of(request)
    await store.get_runner(runner_id)
    row = await store.latest_heartbeat(runner_id)
    if row is None:
        raise NotFound(f"runner {runner_id} has no heartbeat yet")
    row["started_at"] = row["created_at"] - row["alive_time"]
    return json_response(render.heartbeat(row))


async def create_health_check(request: Request) -> Response:
    principal = await authenticate(request)
    runner_id = request.path_params["runner_id"]
    principal.require_runner(runner_id)
    body = await read_model(request, HealthCheckBody, empty={})
    row = await store_of(request).health_check(runner_id, body.process)
    return json_response(render.health_check(row), 201)


def _status_filter(request: Request) -> str | None:
    raw = request.query_params.get("status")
    if raw is None:
        return JobStatus.AVAILABLE.value
    if raw in _ANY_STATUS:
        return None
    if raw not in _STATUSES:
        raise BadRequest(f"invalid status {raw!r}", error="invalid status")
    return raw


def _group_filter(request: Request) -> str | None:
    raw = request.query_params.get("group", "")
    if raw in ("", "any"):
        return None
    if raw not in _GROUPS:
        raise BadRequest(f"invalid group {raw!r}", error="invalid group")
    return raw


def _wait(request: Request) -> float:
    raw = request.query_params.get("wait")
    if raw is None or raw == "":
        return 0.0
    try:
        seconds = parse_wait(raw)
    except ValueError:
        raise BadRequest(
            f"invalid wait {raw!r}: seconds (20, 2.5) or a duration (20s, 500ms)", error="invalid wait"
        ) from None
    return min(seconds, options_of(request).long_poll_max)


async def _wait_for(request: Request, event: anyio.Event, timeout: float) -> bool:
    """Wait for ``event`` up to ``timeout``; False if the client went away meanwhile."""
    gone = False
    async with anyio.create_task_group() as tg:

        async def watch_disconnect() -> None:
            nonlocal gone
            while True:
                message = await request.receive()
                if message["type"] == "http.disconnect":
                    gone = True
                    tg.cancel_scope.cancel()
                    return

        tg.start_soon(watch_disconnect)
        with anyio.move_on_after(timeout):
            await event.wait()
        tg.cancel_scope.cancel()
    return not gone


async def list_jobs(request: Request) -> Response:
    principal = await authenticate(request)
    runner_id = request.path_params["runner_id"]
    principal.require_runner(runner_id)
    status = _status_filter(request)
    group = _group_filter(request)
    limit = query_int(request, "limit", 10, minimum=1, maximum=100)
    offset = query_int(request, "offset", 0)
    page = query_int(request, "page", 0)
    if page > 0:
        offset = (page - 1) * limit
    wait = _wait(request) if status == JobStatus.AVAILABLE.value else 0.0
    store = store_of(request)
    deadline = anyio.current_time() + wait
    while True:
        event = store.notifier.event(runner_id, group or ANY_GROUP) if wait else None
        rows, more = await store.list_jobs(runner_id, status=status, group=group, limit=limit, offset=offset)
        remaining = deadline - anyio.current_time()
        if rows or event is None or remaining <= 0 or store.notifier.closed:
            break
        if not await _wait_for(request, event, remaining):
            return Response(status_code=499)
    url = base_url(request)
    headers = {
        "X-Nuon-Page-Next": "true" if more else "false",
        "X-Nuon-Page-Offset": str(offset),
        "X-Nuon-Page-Limit": str(limit),
    }
    if page > 0:
        headers["X-Nuon-Page-Number"] = str(page)
    return Response(render.job_list_json(rows, url), media_type=JSON_TYPE, headers=headers)


async def get_runner_job(request: Request) -> Response:
    """``GET /v1/runners/{runner_id}/jobs/{job_id}``: 404 unless the job is that runner's."""
    principal = await authenticate(request)
    runner_id = request.path_params["runner_id"]
    principal.require_runner(runner_id)
    row = await store_of(request).get_job(
        request.path_params["job_id"], runner_scope=runner_id, runner_id=runner_id
    )
    return json_response(render.job(row, base_url(request), detail=True))


async def get_runner_job_plan(request: Request) -> Response:
    principal = await authenticate(request)
    runner_id = request.path_params["runner_id"]
    principal.require_runner(runner_id)
    plan = await store_of(request).get_plan(
        request.path_params["job_id"], runner_scope=runner_id, runner_id=runner_id
    )
    return Response(plan, media_type="text/plain; charset=utf-8")


async def otel_sink(request: Request) -> Response:
    """Traces (200) and metrics (201) are accepted and dropped, as the reference runner never
    sends them (its client methods are no-ops, docs/runner-api.md §2.5)."""
    principal = await authenticate(request)
    principal.require_runner(request.path_params["runner_id"])
    await store_of(request).get_runner(request.path_params["runner_id"])
    await read_body(request)
    return json_response("ok", 201 if request.url.path.endswith("/metrics") else 200)


async def current_org(request: Request) -> Response:
    principal = await authenticate(request)
    org_id = principal.require_org_member()
    return json_response({"id": org_id, "name": "local", "sandbox_mode": False})


ROUTES = [
    Route("/v1/runners/{runner_id}", get_runner, methods=["GET"]),
    Route("/v1/runners/{runner_id}/settings", get_settings, methods=["GET"]),
    Route("/v1/runners/{runner_id}/heart-beats", create_heartbeat, methods=["POST"]),
    Route("/v1/runners/{runner_id}/heart-beats/latest", latest_heartbeat, methods=["GET"]),
    Route("/v1/runners/{runner_id}/health-checks", create_health_check, methods=["POST"]),
    Route("/v1/runners/{runner_id}/jobs", list_jobs, methods=["GET"]),
    Route("/v1/runners/{runner_id}/jobs/{job_id}", get_runner_job, methods=["GET"]),
    Route("/v1/runners/{runner_id}/jobs/{job_id}/plan", get_runner_job_plan, methods=["GET"]),
    Route("/v1/runners/{runner_id}/traces", otel_sink, methods=["POST"]),
    Route("/v1/runners/{runner_id}/metrics", otel_sink, methods=["POST"]),
    Route("/v1/orgs/current", current_org, methods=["GET"]),
]
