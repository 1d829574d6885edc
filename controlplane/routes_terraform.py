"""Terraform's HTTP state backend and workspaces (docs/runner-api.md §6), with the fixes of §12.

Terraform authenticates with ``?token=`` (it sends no Authorization header). Differences from
the reference server, all of which terraform itself understands:
* a lock conflict answers **423 with the holder's lock info** (terraform prints its ID);
* unlock with a lock ID must name the holder (409 with the holder otherwise); an empty body
  (``terraform force-unlock``) or ``{}`` releases any lock;
* a state write while the workspace is locked must carry the holder's ``?ID=`` (409 otherwise);
* state history is kept (the newest ``STATE_HISTORY`` revisions).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from controlplane import render
from controlplane.bodies import CreateWorkspaceBody
from controlplane.errors import BadRequest, Forbidden, NotFound
from controlplane.http import authenticate, json_response, query_int, read_body, read_json, store_of, validate
from runner.api.statejson import decode_state_json

_LOCK_KEYS = ("ID", "Operation", "Info", "Who", "Version", "Created", "Path")
_LOCK_FOLD = {key.lower(): key for key in _LOCK_KEYS}


def _empty(status: int = 200) -> Response:
    return Response(b"", status_code=status, media_type="text/plain; charset=utf-8")


def _workspace_param(request: Request) -> str:
    workspace_id = request.query_params.get("workspace_id", "")
    if not workspace_id:
        raise BadRequest("workspace_id is required", error="invalid request")
    return workspace_id


def lock_info(data: Any) -> dict[str, Any]:
    """Terraform's LockInfo with its capitalised keys, matched case-insensitively like Go does."""
    if not isinstance(data, dict):
        raise BadRequest("the lock info must be a JSON object", error="invalid request format")
    out: dict[str, Any] = {}
    for key, value in data.items():
        canonical = _LOCK_FOLD.get(str(key).lower())
        if canonical is None:
            continue
        if canonical != "Version" and not isinstance(value, str):
            raise BadRequest(f"lock info {canonical} must be a string", error="invalid request format")
        out[canonical] = value
    return out


async def get_state(request: Request) -> Response:
    principal = await authenticate(request)
    org_id = principal.require_org_member()
    state = await store_of(request).get_state(_workspace_param(request), org_id)
    if not state:
        return Response(status_code=204)
    return Response(state, media_type="application/json")


async def put_state(request: Request) -> Response:
    principal = await authenticate(request)
    org_id = principal.require_org_member()
    workspace_id = _workspace_param(request)
    body = await read_body(request)
    try:
        state = json.loads(body)
    except (ValueError, RecursionError):
        raise BadRequest("the state must be terraform state JSON", error="invalid request format") from None
    if not isinstance(state, dict):
        raise BadRequest("the state must be a JSON object", error="invalid request format")
    for key in ("version", "serial"):
        if key in state and (not isinstance(state[key], int) or isinstance(state[key], bool)):
            raise BadRequest(f"state {key} must be an integer", error="invalid request format")
    await store_of(request).put_state(
        workspace_id,
        org_id,
        body,
        job_id=request.query_params.get("job_id") or None,
        lock_id=request.query_params.get("ID") or None,
    )
    return _empty()


async def delete_state(request: Request) -> Response:
    """A no-op like the reference: terraform never deletes http state (``destroy`` POSTs)."""
    principal = await authenticate(request)
    principal.require_org_member()
    return _empty()


async def list_workspaces(request: Request) -> Response:
    principal = await authenticate(request)
    org_id = principal.require_org_member()
    limit = query_int(request, "limit", 100, minimum=1, maximum=1000)
    offset = query_int(request, "offset", 0)
    rows = await store_of(request).list_workspaces(org_id, limit, offset)
    return json_response([render.workspace(row) for row in rows])


async def create_workspace(request: Request) -> Response:
    principal = await authenticate(request)
    org_id = principal.require_org_member()
    body = validate(CreateWorkspaceBody, await read_json(request, empty={}))
    if body.id is not None and not principal.is_admin:
        raise Forbidden("only the admin token may choose a workspace id")
    row = await store_of(request).create_workspace(org_id, body.id, body.owner_id, body.owner_type)
    return json_response(render.workspace(row), 201)


async def get_workspace(request: Request) -> Response:
    principal = await authenticate(request)
    org_id = principal.require_org_member()
    row = await store_of(request).get_workspace(request.path_params["workspace_id"], org_id)
    return json_response(render.workspace(row))


async def delete_workspace(request: Request) -> Response:
    principal = await authenticate(request)
    org_id = principal.require_org_member()
    row = await store_of(request).delete_workspace(request.path_params["workspace_id"], org_id)
    return json_response(render.workspace(row))


async def lock(request: Request) -> Response:
    principal = await authenticate(request)
    org_id = principal.require_org_member()
    info = lock_info(await read_json(request))
    if not info.get("ID"):
        raise BadRequest("the lock info needs an ID", error="invalid request format")
    await store_of(request).lock(
        request.path_params["workspace_id"], org_id, info, job_id=request.query_params.get("job_id") or None
    )
    return _empty()


async def unlock(request: Request) -> Response:
    principal = await authenticate(request)
    org_id = principal.require_org_member()
    info = lock_info(await read_json(request, empty={}))
    lock_id = info.get("ID") or None
    await store_of(request).unlock(request.path_params["workspace_id"], org_id, lock_id)
    return _empty()


def _state_document(body: bytes) -> bytes:
    """The ``show -json`` document in a state-json body of either form (docs/runner-api.md §6.3)."""
    try:
        document = decode_state_json(body)
        json.loads(document)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(
            "the state-json body must be the terraform show -json document, as a quoted base64"
            f" string (what the reference runner sends) or as raw JSON: {exc}",
            error="invalid request format",
        ) from None
    return document


async def put_state_json(request: Request) -> Response:
    """Stored as posted, like the real server; a body that neither form decodes is refused here
    (the real server stores it and its readers fail later)."""
    principal = await authenticate(request)
    org_id = principal.require_org_member()
    body = await read_body(request)
    _state_document(body)
    await store_of(request).put_state_json(
        request.path_params["workspace_id"], org_id, body, job_id=request.query_params.get("job_id") or None
    )
    return json_response({"message": "terraform state json updated"})


async def get_state_json(request: Request) -> Response:
    """Ours: the workspace's latest document, decoded (the real public API lists ids here)."""
    principal = await authenticate(request)
    org_id = principal.require_org_member()
    contents = await store_of(request).get_state_json(request.path_params["workspace_id"], org_id)
    if contents is None:
        return Response(status_code=204)
    return Response(_state_document(contents), media_type="application/json")


async def _state_json_by_id(request: Request) -> bytes:
    principal = await authenticate(request)
    org_id = principal.require_org_member()
    row = await store_of(request).get_state_json_row(
        request.path_params["workspace_id"], org_id, request.path_params["state_id"]
    )
    if row is None:
        raise NotFound("terraform state not found")
    return _state_document(bytes(row["contents"]))


async def get_state_json_by_id(request: Request) -> Response:
    """The real public API's ``state-json/{state_id}``: the decoded document."""
    return Response(await _state_json_by_id(request), media_type="application/json")


async def get_state_json_resources(request: Request) -> Response:
    """The addresses of every resource in the document, sorted. The reference prefixes a child
    module's resources with the module address a second time (their address already holds it);
    we list each address once."""
    document = json.loads(await _state_json_by_id(request))
    root = (document.get("values") or {}).get("root_module") if isinstance(document, dict) else None
    if not root:
        return json_response(None)
    addresses: list[str] = []
    stack = [root]
    while stack:
        module = stack.pop()
        addresses.extend(str(r.get("address", "")) for r in module.get("resources") or [])
        stack.extend(module.get("child_modules") or [])
    return json_response(sorted(addresses))


async def delete_state_json(request: Request) -> Response:
    principal = await authenticate(request)
    org_id = principal.require_org_member()
    await store_of(request).delete_state_json(request.path_params["workspace_id"], org_id)
    return json_response({"message": "terraform state json deleted"})


async def list_states(request: Request) -> Response:
    principal = await authenticate(request)
    org_id = principal.require_org_member()
    rows = await store_of(request).list_states(request.path_params["workspace_id"], org_id)
    return json_response([render.state_revision(row) for row in rows])


_WS = "/v1/terraform-workspaces/{workspace_id}"

ROUTES = [
    Route("/v1/terraform-backend", get_state, methods=["GET"]),
    Route("/v1/terraform-backend", put_state, methods=["POST"]),
    Route("/v1/terraform-backend", delete_state, methods=["DELETE"]),
    Route("/v1/terraform-workspaces", list_workspaces, methods=["GET"]),
    Route("/v1/terraform-workspaces", create_workspace, methods=["POST"]),
    Route(_WS, get_workspace, methods=["GET"]),
    Route(_WS, delete_workspace, methods=["DELETE"]),
    Route(_WS + "/lock", lock, methods=["POST"]),
    Route(_WS + "/unlock", unlock, methods=["POST"]),
    Route(_WS + "/state-json", put_state_json, methods=["POST"]),
    Route(_WS + "/state-json", get_state_json, methods=["GET"]),
    Route(_WS + "/state-json/{state_id}", get_state_json_by_id, methods=["GET"]),
    Route(_WS + "/state-json/{state_id}/resources", get_state_json_resources, methods=["GET"]),
    Route(_WS + "/states", delete_state_json, methods=["DELETE"]),
    Route(_WS + "/states", list_states, methods=["GET"]),
]
