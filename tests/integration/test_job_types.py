"""Per-job-type behaviour from the job-type table, against the real embedded control plane:
which jobs PATCH the *job* ``finished`` themselves (issue 10 point 5, the reference's
``finishJob``), and the handler's exit stack being closed after a finished, cancelled or
timed-out job.

The runner is an in-process ``Daemon`` whose API client records every request it sends (the
control plane's job status alone cannot show the PATCH: a finished execution finishes the job).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import anyio
import httpx
import pytest

from controlplane.server import serve
from runner.api.client import RunnerClient
from runner.config import Config
from runner.daemon import Daemon
from runner.local import OperatorAPI
from runner.sdk import Handler, HandlerRegistry, JobContext

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

TYPES = ("mng-shut-down", "mng-vm-shut-down", "shut-down", "mng-runner-update-version", "noop")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Quick(Handler):
    """Stands in for every type here (the real shut-down would stop the runner): finishes at
    once, or sleeps for ``metadata.sleep`` seconds; registers a resource on the exit stack."""

    needs_plan: ClassVar[bool] = False
    closed: ClassVar[list[str]] = []
    executing: ClassVar[list[str]] = []

    async def prepare(self, ctx: JobContext) -> None:
        ctx.resources.callback(Quick.closed.append, ctx.job.id)

    async def execute(self, ctx: JobContext) -> None:
        Quick.executing.append(ctx.job.id)
        await anyio.sleep(float((ctx.job.metadata or {}).get("sleep") or 0))
        ctx.set_outputs({})


class Recording(httpx.AsyncBaseTransport):
    """Passes requests on and keeps ``(method, path)`` of each."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.seen: list[tuple[str, str]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append((request.method, request.url.path))
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def _with_runner(tmp_path: Path, body: Any) -> Recording:
    transport = Recording()
    async with serve(None, credentials_dir=tmp_path / "cp") as cp:
        creds = cp.credentials
        config = Config(
            runner_id=creds.runner_id,
            api_url=cp.url,
            api_token=creds.runner_token,
            state_dir=tmp_path / "runner",
            health_addr=None,
            poll_interval=0.05,
            cancel_poll_interval=0.1,
            groups=("operations", "management"),
            default_concurrency=4,
        )
        api = RunnerClient(cp.url, creds.runner_token, creds.runner_id, transport=transport)
        registry = HandlerRegistry(dict.fromkeys(TYPES, Quick))
        daemon = Daemon(config, registry=registry, api=api, install_signal_handlers=False)
        operator = OperatorAPI(cp.url, creds.admin_token, creds.runner_id)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(daemon.run)
                await daemon.wait_ready()
                with anyio.fail_after(60):
                    await body(operator)
                daemon.request_shutdown(graceful=True, reason="test done")
        finally:
            await operator.aclose()
    return transport


def _patched_jobs(transport: Recording) -> set[str]:
    """Ids of the jobs the runner PATCHed (``PATCH /v1/runner-jobs/{id}``, not an execution)."""
    return {
        path.split("/")[3]
        for method, path in transport.seen
        if method == "PATCH" and path.startswith("/v1/runner-jobs/") and path.count("/") == 3
    }


async def test_jobs_that_finish_themselves_patch_the_job_as_the_reference_does(tmp_path: Path) -> None:
    cases = [
        ("mng-shut-down", {}, True),
        ("mng-vm-shut-down", {"shutdown_type": "vm"}, True),
        ("mng-vm-shut-down", {}, False),
        ("shut-down", {"shutdown_type": "force"}, True),
        ("shut-down", {"shutdown_type": "graceful"}, False),
        ("mng-runner-update-version", {}, False),
        ("noop", {}, False),
    ]
    submitted: list[tuple[dict[str, Any], bool]] = []
    finished: dict[str, dict[str, Any]] = {}

    async def body(operator: OperatorAPI) -> None:
        for job_type, metadata, patches in cases:
            job = await operator.submit({"type": job_type, "metadata": metadata})
            submitted.append((job, patches))
        for job, _ in submitted:
            finished[job["id"]] = await operator.wait_terminal(job["id"], poll=0.05)

    transport = await _with_runner(tmp_path, body)
    assert {job_id: job["status"] for job_id, job in finished.items()} == dict.fromkeys(finished, "finished")
    expected = {job["id"] for job, patches in submitted if patches}
    assert _patched_jobs(transport) == expected
    assert expected <= set(Quick.closed)


async def test_the_exit_stack_is_closed_after_a_cancel_and_a_timeout(tmp_path: Path) -> None:
    ends: dict[str, str] = {}

    async def body(operator: OperatorAPI) -> None:
        cancelled = await operator.submit({"type": "noop", "metadata": {"sleep": "30"}})
        timed_out = await operator.submit(
            {"type": "noop", "metadata": {"sleep": "30"}, "execution_timeout": 1_000_000_000}
        )
        while cancelled["id"] not in Quick.executing:
            await anyio.sleep(0.05)
        await operator.cancel(cancelled["id"])
        for job in (cancelled, timed_out):
            ends[job["id"]] = (await operator.wait_terminal(job["id"], poll=0.05))["status"]

    transport = await _with_runner(tmp_path, body)
    assert sorted(ends.values()) == ["cancelled", "timed-out"]
    assert set(ends) <= set(Quick.closed)
    assert not _patched_jobs(transport)
