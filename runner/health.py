"""``/healthz``, ``/readyz`` and ``/metrics`` on a small HTTP/1.1 listener.

Three GET routes do not need an ASGI server: a plain anyio TCP listener keeps the idle runner
small (no uvicorn in ``runner run``) and has no moving parts to go wrong.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import anyio
import structlog
from anyio.abc import SocketStream, TaskStatus

log = structlog.get_logger("runner.health")


@dataclass(frozen=True)
class Probe:
    ok: bool
    detail: dict[str, object]


@dataclass
class HealthEndpoints:
    liveness: Callable[[], Probe]
    readiness: Callable[[], Probe]
    metrics: Callable[[], str]


_REASONS = {
    200: "OK",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
    400: "Bad Request",
}


def _response(status: int, body: bytes, content_type: str) -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'OK')}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def route(endpoints: HealthEndpoints, method: str, path: str) -> bytes:
    """The response bytes for one request line; a plain function for tests."""
    path = path.split("?", 1)[0]
    if method not in ("GET", "HEAD"):
        return _response(405, b"method not allowed\n", "text/plain")
    if path in ("/healthz", "/readyz"):
        probe = endpoints.liveness() if path == "/healthz" else endpoints.readiness()
        body = json.dumps({"ok": probe.ok, **probe.detail}, default=str).encode()
        return _response(200 if probe.ok else 503, body, "application/json")
    if path == "/metrics":
        return _response(200, endpoints.metrics().encode(), "text/plain; version=0.0.4; charset=utf-8")
    return _response(404, b"not found\n", "text/plain")


async def _handle(stream: SocketStream, endpoints: HealthEndpoints) -> None:
    async with stream:
        data = b""
        with anyio.move_on_after(5):
            while b"\r\n\r\n" not in data and len(data) < 16384:
                try:
                    chunk = await stream.receive(4096)
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    return
                data += chunk
        line = data.split(b"\r\n", 1)[0].decode("latin-1")
        parts = line.split(" ")
        if len(parts) < 2:
            reply = _response(400, b"bad request\n", "text/plain")
        else:
            try:
                reply = route(endpoints, parts[0], parts[1])
            except Exception as exc:  # noqa: BLE001 - a probe must answer, not crash the listener
                log.warning("health handler failed", error=str(exc))
                reply = _response(503, f"error: {exc}\n".encode(), "text/plain")
        try:
            await stream.send(reply)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            return


async def serve_health(
    address: str,
    endpoints: HealthEndpoints,
    *,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``host:port`` until cancelled; reports the bound port through ``task_status``."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    listener = await anyio.create_tcp_listener(local_host=host, local_port=int(port), reuse_port=False)
    bound = listener.extra(anyio.abc.SocketAttribute.local_port)
    log.info("health endpoints listening", address=f"{host}:{bound}")
    task_status.started(bound)
    async with listener:
        await listener.serve(lambda stream: _handle(stream, endpoints))
