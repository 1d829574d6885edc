"""The terraform state calls ride out a control-plane outage instead of failing the apply."""

from __future__ import annotations

import httpx
import pytest

from runner import adapters
from runner.adapters import RunnerHandlerAPI
from runner.api.client import RunnerClient

pytestmark = [pytest.mark.unit, pytest.mark.anyio]


def test_the_state_policy_waits_about_a_minute_in_expectation() -> None:
    policy = adapters._STATE_RETRY
    caps = [min(policy.max_delay, policy.base_delay * 2**i) for i in range(policy.attempts - 1)]
    # full jitter sleeps uniform in [0, cap]: the expected total wait is half the caps' sum
    assert sum(caps) / 2 >= 60.0
    assert sum(caps) <= 180.0


async def test_a_state_write_survives_a_run_of_503s(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, bytes]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.params.get("ID", ""), request.content))
        return httpx.Response(503 if len(seen) <= 8 else 200, text="down" if len(seen) <= 8 else "")

    slept: list[float] = []

    async def no_wait(delay: float) -> None:
        slept.append(delay)

    monkeypatch.setattr("runner.api.client.anyio.sleep", no_wait)
    client = RunnerClient("http://127.0.0.1:9", "tok", "r1", transport=httpx.MockTransport(answer))
    async with client:
        reply = await RunnerHandlerAPI(client).put_terraform_state("ws", "job", b'{"v":4}', lock_id="L1")
    assert reply.status == 200
    assert len(seen) == 9
    assert len(slept) == 8
    # every attempt was the same write under the same lock
    assert set(seen) == {("L1", b'{"v":4}')}
