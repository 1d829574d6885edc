"""API client: headers, retries with backoff, 401 not retried, claim not blindly retried."""

from __future__ import annotations

import httpx
import pytest

from runner.api.client import APIError, RetryPolicy, RunnerClient, TransportError, Unauthorized
from runner.api.models import ExecutionStatus

pytestmark = [pytest.mark.unit, pytest.mark.anyio]

FAST = RetryPolicy(attempts=4, base_delay=0.001, max_delay=0.002)


def make(handler: httpx.MockTransport) -> RunnerClient:
    return RunnerClient("http://cp.test", "tok-123", "run1", retry=FAST, transport=handler)


async def test_headers_and_paths() -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"heart_beat_timeout": 1_000_000_000, "groups": ["build"]})

    client = make(httpx.MockTransport(handle))
    settings = await client.get_settings()
    assert settings.groups == ["build"]
    assert seen[0].url.path == "/v1/runners/run1/settings"
    assert seen[0].headers["authorization"] == "Bearer tok-123"
    assert seen[0].headers["x-nuon-client-version"].startswith("runner:")
    await client.aclose()


async def test_retries_5xx_then_succeeds() -> None:
    calls = {"n": 0}

    def handle(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] < 3:
            return httpx.Response(503, json={"error": "busy"})
        return httpx.Response(200, json={})

    client = make(httpx.MockTransport(handle))
    await client.update_execution("job1", "run2", ExecutionStatus.IN_PROGRESS)
    assert calls["n"] == 3
    await client.aclose()


async def test_401_is_not_retried() -> None:
    calls = {"n": 0}

    def handle(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        return httpx.Response(401, json={"error": "token is expired"})

    client = make(httpx.MockTransport(handle))
    with pytest.raises(Unauthorized, match="token is expired"):
        await client.get_settings()
    assert calls["n"] == 1
    await client.aclose()


async def test_4xx_not_retried_and_transport_error_wrapped() -> None:
    calls = {"n": 0}

    def bad(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        return httpx.Response(409, json={"error": "job is not available"})

    client = make(httpx.MockTransport(bad))
    with pytest.raises(APIError) as info:
        await client.create_execution("job1")
    assert info.value.status == 409
    assert calls["n"] == 1
    await client.aclose()

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    client = make(httpx.MockTransport(down))
    with pytest.raises(TransportError):
        await client.get_job("job1")
    await client.aclose()


async def test_claim_retries_only_connect_errors() -> None:
    calls = {"n": 0}

    def flaky_read(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        raise httpx.ReadTimeout("slow", request=request)

    client = make(httpx.MockTransport(flaky_read))
    with pytest.raises(TransportError):
        await client.create_execution("job1")
    assert calls["n"] == 1  # the request may have reached the server: never claim twice
    await client.aclose()


async def test_duplicate_outputs_is_success() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"error": "duplicate key"})

    client = make(httpx.MockTransport(handle))
    await client.post_outputs("job1", "run2", {"a": 1})
    await client.aclose()


async def test_on_request_counts_every_attempt() -> None:
    # The daemon's byoc_runner_api_requests_total (requests per idle minute, bench/runner_bench.py).
    calls = {"n": 0}

    def handle(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] < 3:
            return httpx.Response(503)
        return httpx.Response(200, json={"heart_beat_timeout": 1_000_000_000, "groups": ["build"]})

    client = make(httpx.MockTransport(handle))
    seen: list[str] = []
    client.on_request = seen.append
    await client.get_settings()
    assert seen == ["GET", "GET", "GET"]
    await client.aclose()
