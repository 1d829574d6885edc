"""Helm release storage, ``/v1/helm-releases/{helm_chart_id}/releases/...`` (docs/runner-api.md §9).

The helm "nuon" storage driver of the reference runner talks to these with the runner token. The
release JSON is Helm's ``release/v1.Release`` plus ``labels``; it is kept as posted (gzipped and
base64-encoded in ``Body``, as the reference stores it) and served back with the stored labels
merged in. Status codes follow what the driver expects, not the reference's bugs: see
``controlplane.store_helm``.
"""

from __future__ import annotations

import base64
import gzip
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from controlplane.errors import BadRequest
from controlplane.http import authenticate, json_response, read_json, store_of
from controlplane.store_base import Row
from controlplane.store_helm import QUERY_COLUMNS, QUERY_LABELS
from controlplane.wire import rfc3339


def _encode(release: dict[str, Any]) -> str:
    return base64.b64encode(gzip.compress(json.dumps(release).encode(), compresslevel=6)).decode()


def release_json(row: Row) -> dict[str, Any]:
    """The Release as the driver decodes it: the stored JSON with the stored labels."""
    release: dict[str, Any] = json.loads(gzip.decompress(base64.b64decode(row["body"])))
    labels = json.loads(row["labels"])
    if labels:
        release["labels"] = labels
    return release


def release_row_json(row: Row) -> dict[str, Any]:
    """The stored row as the reference's create answers it (``app.HelmRelease``: Go field names
    where the struct has no json tags)."""
    out: dict[str, Any] = {
        "HelmChartID": row["helm_chart_id"],
        "created_at": rfc3339(row["created_at"]),
        "updated_at": rfc3339(row["updated_at"]),
        "org_id": row["org_id"],
        "Key": row["key"],
        "Type": row["type"],
        "Body": row["body"],
        "Name": row["name"],
        "Namespace": row["namespace"],
        "Version": row["version"],
        "Status": row["status"],
        "Owner": row["owner"],
    }
    labels = json.loads(row["labels"])
    if labels:
        out["labels"] = labels
    return out


def _params(request: Request) -> tuple[str, str]:
    return request.path_params["helm_chart_id"], request.path_params["namespace"]


async def _release_body(request: Request) -> dict[str, Any]:
    release = await read_json(request)
    if not isinstance(release, dict):
        raise BadRequest("a helm release must be a JSON object", error="invalid request format")
    if not isinstance(release.get("name", ""), str) or isinstance(release.get("version", 0), bool):
        raise BadRequest("a helm release needs a string name and an integer version", error="invalid request")
    if not isinstance(release.get("version", 0), int):
        raise BadRequest("a helm release version must be an integer", error="invalid request")
    info = release.get("info")
    if info is not None and not isinstance(info, dict):
        raise BadRequest("a helm release info must be an object", error="invalid request")
    labels = release.get("labels")
    if labels is not None and (
        not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values())
    ):
        raise BadRequest("helm release labels must be an object of strings", error="invalid request")
    return release


async def list_releases(request: Request) -> Response:
    principal = await authenticate(request)
    org_id = principal.require_org_member()
    rows = await store_of(request).list_helm_releases(org_id, *_params(request))
    return json_response([release_json(row) for row in rows])


async def query_releases(request: Request) -> Response:
    principal = await authenticate(request)
    org_id = principal.require_org_member()
    filters: dict[str, str] = {}
    for key, value in request.query_params.multi_items():
        if key not in QUERY_COLUMNS and key not in QUERY_LABELS:
            raise BadRequest(f"unknown label {key}", error="invalid request")
        filters.setdefault(key, value)
    rows = await store_of(request).list_helm_releases(org_id, *_params(request), filters)
    if not rows:
        return json_response({"error": "no helm release matches the query"}, 404)
    return json_response([release_json(row) for row in rows])


async def get_release(request: Request) -> Response:
    principal = await authenticate(request)
    org_id = principal.require_org_member()
    row = await store_of(request).get_helm_release(org_id, *_params(request), request.path_params["key"])
    return json_response(release_json(row))


async def create_release(request: Request) -> Response:
    principal = await authenticate(request)
    org_id = principal.require_org_member()
    release = await _release_body(request)
    row = await store_of(request).create_helm_release(
        org_id, *_params(request), request.path_params["key"], release, _encode(release)
    )
    return json_response(release_row_json(row), 201)


async def update_release(request: Request) -> Response:
    principal = await authenticate(request)
    org_id = principal.require_org_member()
    release = await _release_body(request)
    await store_of(request).update_helm_release(
        org_id, *_params(request), request.path_params["key"], release, _encode(release)
    )
    return json_response(None)


async def delete_release(request: Request) -> Response:
    principal = await authenticate(request)
    org_id = principal.require_org_member()
    await store_of(request).delete_helm_release(org_id, *_params(request), request.path_params["key"])
    return json_response(None)


_BASE = "/v1/helm-releases/{helm_chart_id}/releases/{namespace}"

# ``query`` before ``{key}``: a release whose key is "query" is shadowed, as on the reference.
ROUTES = [
    Route(_BASE, list_releases, methods=["GET"]),
    Route(_BASE + "/query", query_releases, methods=["GET"]),
    Route(_BASE + "/{key}", get_release, methods=["GET"]),
    Route(_BASE + "/{key}", create_release, methods=["POST"]),
    Route(_BASE + "/{key}", update_release, methods=["PUT"]),
    Route(_BASE + "/{key}", delete_release, methods=["DELETE"]),
]
