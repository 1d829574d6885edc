"""The ASGI application: routes, the error shape, public probes and the monitor's lifetime.

``create_app`` is all a server needs: uvicorn serves it (``controlplane.server``), tests may
call it in-process. The monitor runs for as long as the app's lifespan does, so any server that
runs the lifespan gets timeouts enforced.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from controlplane import (
    routes_actions,
    routes_apps,
    routes_helm,
    routes_jobs,
    routes_logs,
    routes_operator,
    routes_runners,
    routes_terraform,
)
from controlplane.errors import APIError
from controlplane.http import json_response, store_of
from controlplane.logs import logger
from controlplane.monitor import Monitor
from controlplane.openapi import openapi_document
from controlplane.options import ControlPlaneOptions
from controlplane.store import Store

VERSION = "0.1.0"


async def api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
    return json_response(exc.payload(), exc.status)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    errors = {404: "not found", 405: "method not allowed"}
    body = {
        "error": errors.get(exc.status_code, "invalid request"),
        "description": f"{request.method} {request.url.path}: {exc.detail}",
        "user_error": exc.status_code < 500,
    }
    return json_response(body, exc.status_code, headers=dict(exc.headers or {}))


async def internal_error(request: Request, exc: Exception) -> Response:
    logger("controlplane").error(
        "unhandled error", method=request.method, path=request.url.path, error=repr(exc)
    )
    body = {"error": "internal error", "description": type(exc).__name__, "user_error": False}
    return json_response(body, 500)


async def livez(request: Request) -> Response:
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    store = store_of(request)
    await store.job_status_counts()
    return json_response({"status": "ok"})


async def version(request: Request) -> Response:
    return json_response({"version": VERSION, "git_ref": "local"})


def create_app(store: Store, options: ControlPlaneOptions | None = None) -> Starlette:
    options = options or ControlPlaneOptions()
    document: dict[str, Any] = {}

    async def openapi(request: Request) -> Response:
        if not document:  # built on first request: it needs every body schema
            document.update(openapi_document(VERSION))
        return json_response(document)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tg:
            tg.start_soon(Monitor(store, options).run)
            try:
                yield
            finally:
                store.notifier.close()
                tg.cancel_scope.cancel()

    # Matched in order: the runner's hot paths (job and execution updates, polling) first.
    routes: list[Any] = [
        *routes_jobs.ROUTES,
        *routes_runners.ROUTES,
        *routes_logs.ROUTES,
        *routes_operator.ROUTES,
        *routes_terraform.ROUTES,
        *routes_apps.ROUTES,
        *routes_helm.ROUTES,
        *routes_actions.ROUTES,
        Route("/livez", livez, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/version", version, methods=["GET"]),
        Route("/oapi/v3", openapi, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={APIError: api_error, HTTPException: http_error, Exception: internal_error},
        lifespan=lifespan,
    )
    app.state.store = store
    app.state.options = options
    return app
