"""A tiny registry of the tests for answers distribution never gives: a schema-1 manifest,
403s, transient 503s, a lying ``Docker-Content-Digest``. Served over real HTTP on loopback
(``python -m uvicorn tests.oci.edge_registry:app``); the interesting cases are repositories:

* ``schema1/app`` - manifests are ``application/vnd.docker.distribution.manifest.v1+prettyjws``;
* ``forbidden/app`` - everything answers 403 DENIED;
* ``flaky/app`` - a small valid image; each manifest and blob GET fails with 503 twice first;
* ``liar/app`` - the manifest comes with a wrong ``Docker-Content-Digest``.

``GET /stats`` returns how many requests each path got.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


LAYER = b"flaky layer content\n" * 100
CONFIG = json.dumps({"architecture": "arm64", "os": "linux", "variant": "v8"}).encode()
MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": _digest(CONFIG),
            "size": len(CONFIG),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": _digest(LAYER),
                "size": len(LAYER),
            }
        ],
    }
).encode()
BLOBS = {_digest(LAYER): LAYER, _digest(CONFIG): CONFIG}
SCHEMA1 = json.dumps({"schemaVersion": 1, "name": "schema1/app", "tag": "v1", "fsLayers": []}).encode()

hits: Counter[str] = Counter()


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"errors": [{"code": code, "message": message}]}, status_code=status)


async def root(request: Request) -> Response:
    return JSONResponse({})


async def stats(request: Request) -> Response:
    return JSONResponse(dict(hits))


async def dispatch(request: Request) -> Response:
    path = request.url.path
    hits[path] += 1
    rest = path.removeprefix("/v2/")
    if rest.startswith("forbidden/"):
        return _error(403, "DENIED", "requested access to the resource is denied")
    if rest.startswith("schema1/app/manifests/"):
        return Response(SCHEMA1, media_type="application/vnd.docker.distribution.manifest.v1+prettyjws")
    if rest.startswith("liar/app/manifests/"):
        return Response(
            MANIFEST,
            media_type="application/vnd.oci.image.manifest.v1+json",
            headers={"Docker-Content-Digest": "sha256:" + "1" * 64},
        )
    if rest.startswith("flaky/app/"):
        if hits[path] <= 2:
            return _error(503, "UNAVAILABLE", "try again")
        kind, _, ref = rest.removeprefix("flaky/app/").partition("/")
        if kind == "manifests":
            return Response(
                MANIFEST,
                media_type="application/vnd.oci.image.manifest.v1+json",
                headers={"Docker-Content-Digest": _digest(MANIFEST)},
            )
        if kind == "blobs" and ref in BLOBS:
            return Response(BLOBS[ref], media_type="application/octet-stream")
    return _error(404, "NAME_UNKNOWN", "repository name not known to registry")


app = Starlette(
    routes=[
        Route("/v2/", root),
        Route("/stats", stats),
        Route("/v2/{path:path}", dispatch, methods=["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE"]),
    ]
)
