"""Waiting for the workload's ``/readyz`` (its health server, ``RUNNER_HEALTH_ADDR``).

Ready means the runner fetched its settings, reaches the API and is not draining: the same
answer a Kubernetes readiness probe reads. The wait ends early when the workload exits.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
import httpx

from runner.mng.policy import ReadyResult

POLL_INTERVAL = 0.25


async def wait_ready(url: str, deadline: float, *, exited: Callable[[], bool]) -> ReadyResult:
    """Poll ``url`` until it answers 200, ``deadline`` seconds pass, or ``exited()`` is true."""
    started = anyio.current_time()
    last = "no answer yet"
    async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
        while True:
            elapsed = anyio.current_time() - started
            if exited():
                return ReadyResult(False, elapsed, "the workload exited", exited=True)
            try:
                response = await client.get(url)
                if response.status_code == 200:
                    return ReadyResult(True, anyio.current_time() - started, "ready")
                last = f"/readyz answered {response.status_code}: {response.text[:200].strip()}"
            except httpx.HTTPError as exc:
                last = f"/readyz unreachable: {type(exc).__name__}"
            if elapsed >= deadline:
                return ReadyResult(False, elapsed, last)
            await anyio.sleep(POLL_INTERVAL)


def readyz_url(health_addr: str) -> str:
    """``RUNNER_HEALTH_ADDR`` (``host:port``) as the URL mng polls; a wildcard host is loopback."""
    host, _, port = health_addr.rpartition(":")
    if host in ("", "0.0.0.0", "::", "[::]"):  # noqa: S104 - reading an address, not binding
        host = "127.0.0.1"
    return f"http://{host}:{port}/readyz"
