"""The job log pipeline against the embedded control plane, over real HTTP on 127.0.0.1.

The control plane decodes the OTLP protobuf and stores the records; they are read back through
its operator API (``GET /v1/log-streams/{id}/logs``), so these tests see what a user would see.
Outages are real: the control plane is stopped and started again on the same port and state.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import anyio
import pytest

from controlplane.operator import OperatorClient
from controlplane.server import RunningControlPlane, serve
from runner.api.client import RunnerClient
from runner.logs import DeliveryReport, JobLogStream, LogPipeline
from runner.logs.spool import all_files
from runner.redact import Redactor

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

STEP = "runner_job_execution_step.name"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def control_plane(state_dir: Path, port: int = 0) -> AsyncIterator[RunningControlPlane]:
    async with serve(state_dir, host="127.0.0.1", port=port, quiet=True) as cp:
        yield cp


def operator(cp: RunningControlPlane) -> OperatorClient:
    return OperatorClient(cp.url, cp.credentials.admin_token, runner_id=cp.credentials.runner_id)


async def submit_job(cp: RunningControlPlane) -> dict[str, Any]:
    with operator(cp) as op:
        job: dict[str, Any] = await anyio.to_thread.run_sync(lambda: op.submit("noop"))
    return job


async def stored_logs(cp: RunningControlPlane, log_stream_id: str) -> list[dict[str, Any]]:
    with operator(cp) as op:
        return await anyio.to_thread.run_sync(op.logs, log_stream_id)


@asynccontextmanager
async def pipeline(
    cp_url: str, runner_id: str, token: str, spool_dir: Path, **kwargs: Any
) -> AsyncIterator[LogPipeline]:
    client = RunnerClient(cp_url, token, runner_id, timeout=5.0)
    options: dict[str, Any] = {
        "resource_attrs": {"service.name": "runner", "runner.id": runner_id, "runner.version": "test"},
        "flush_interval": 0.05,
        "backoff_max": 0.2,
    }
    options.update(kwargs)
    logs = LogPipeline(client, spool_dir, **options)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(logs.run)
            yield logs
            tg.cancel_scope.cancel()
    finally:
        await client.aclose()


def open_job(
    logs: LogPipeline, job: dict[str, Any], *, write_token: str | None, secrets: Redactor
) -> JobLogStream:
    return logs.open_job(
        log_stream_id=job["log_stream_id"],
        write_token=write_token,
        attrs={
            "runner_job.id": job["id"],
            "runner_job.type": job["type"],
            "log_stream.id": job["log_stream_id"],
            "runner_job_execution.id": "exe-test",
        },
        redactor=secrets,
        spool_key="exe-test",
    )


async def test_records_reach_the_control_plane_with_their_attributes(tmp_path: Path) -> None:
    async with control_plane(tmp_path / "cp") as cp:
        creds = cp.credentials
        job = await submit_job(cp)
        write_token = job["log_stream"]["write_token"]
        runner_secrets = Redactor(creds.runner_token)
        secrets = runner_secrets.child()
        secrets.register(write_token, "registry-password-0042")
        async with pipeline(cp.url, creds.runner_id, creds.runner_token, tmp_path / "spool") as logs:
            stream = open_job(logs, job, write_token=write_token, secrets=secrets)
            log = stream.logger
            log.info("job started")
            execute = log.bind(**{STEP: "execute"})
            execute.info("$ docker login", stream="runner")
            auth = base64.b64encode(b"robot:registry-password-0042").decode()
            execute.warning(f'{{"auths": {{"r.example": {{"auth": "{auth}"}}}}}}', stream="stderr")
            execute.error(f"token {creds.runner_token} and {write_token}")
            report = await stream.close(deadline=anyio.current_time() + 10)
        assert report == DeliveryReport(delivered=4, spooled=0, lost=0)
        records = await stored_logs(cp, job["log_stream_id"])

    assert [r["body"] for r in records][:2] == ["job started", "$ docker login"]
    assert [r["severity_text"] for r in records] == ["info", "info", "warn", "error"]
    assert [r["severity_number"] for r in records] == [9, 9, 13, 17]
    first, second, third, fourth = records
    assert first["attributes"] == {
        "runner_job.id": job["id"],
        "runner_job.type": "noop",
        "log_stream.id": job["log_stream_id"],
        "runner_job_execution.id": "exe-test",
    }
    assert second["attributes"][STEP] == "execute"
    assert second["attributes"]["stream"] == "runner"
    assert first["resource_attributes"] == {
        "service.name": "runner",
        "runner.id": creds.runner_id,
        "runner.version": "test",
    }
    assert first["scope_name"] == "oteljob"
    assert first["time_unix_nano"] > 0
    text = repr(records)
    assert "registry-password-0042" not in text
    assert auth[:12] not in text
    assert creds.runner_token not in text
    assert write_token not in text
    assert fourth["body"] == "token *** and ***"
    assert "***" in third["body"]


async def test_a_wrong_write_token_falls_back_to_the_runner_token(tmp_path: Path) -> None:
    async with control_plane(tmp_path / "cp") as cp:
        creds = cp.credentials
        job = await submit_job(cp)
        async with pipeline(cp.url, creds.runner_id, creds.runner_token, tmp_path / "spool") as logs:
            stream = open_job(logs, job, write_token="tok-not-a-real-token-000", secrets=Redactor())
            for i in range(20):
                stream.logger.info(f"line {i}")
            report = await stream.close(deadline=anyio.current_time() + 10)
        records = await stored_logs(cp, job["log_stream_id"])
    assert report == DeliveryReport(delivered=20, spooled=0, lost=0)
    assert [r["body"] for r in records] == [f"line {i}" for i in range(20)]
    assert logs.metrics.export_failures == 1  # the one 401


async def test_control_plane_down_mid_job_then_back_every_line_in_order(tmp_path: Path) -> None:
    state = tmp_path / "cp"
    spool_dir = tmp_path / "spool"
    total = 6000
    async with control_plane(state) as cp:
        creds = cp.credentials
        port = urlparse(cp.url).port
        assert port is not None
        job = await submit_job(cp)
        write_token = job["log_stream"]["write_token"]
    # The control plane is started again below; the pipeline outlives both instances.
    client_url = f"http://127.0.0.1:{port}"
    async with pipeline(
        client_url, creds.runner_id, creds.runner_token, spool_dir, batch_max_records=500
    ) as logs:
        stream = open_job(logs, job, write_token=write_token, secrets=Redactor())
        produced = 0

        async def produce(count: int) -> None:
            nonlocal produced
            for _ in range(count):
                stream.logger.info(f"line {produced:05d}")
                produced += 1
                if produced % 100 == 0:
                    await anyio.sleep(0.005)

        async with control_plane(state, port=port) as cp:
            await produce(2000)
        # Down: connection refused for every POST while 2000 more lines are written.
        await produce(2000)
        await anyio.sleep(0.5)
        assert stream.spool is not None
        assert stream.spool.pending > 0
        async with control_plane(state, port=port) as cp:
            await produce(total - 4000)
            report = await stream.close(deadline=anyio.current_time() + 30)
            records = await stored_logs(cp, job["log_stream_id"])
    assert report == DeliveryReport(delivered=total, spooled=0, lost=0)
    assert [r["body"] for r in records] == [f"line {i:05d}" for i in range(total)]
    assert logs.metrics.export_failures > 0
    assert all_files(spool_dir) == []


async def test_a_spool_left_by_a_dead_process_is_delivered_by_the_next_one(tmp_path: Path) -> None:
    state = tmp_path / "cp"
    spool_dir = tmp_path / "spool"
    async with control_plane(state) as cp:
        creds = cp.credentials
        port = urlparse(cp.url).port
        assert port is not None
        job = await submit_job(cp)
    url = f"http://127.0.0.1:{port}"
    # First process: the control plane is unreachable; its job ends with everything spooled.
    async with pipeline(url, creds.runner_id, creds.runner_token, spool_dir) as logs:
        stream = open_job(logs, job, write_token=None, secrets=Redactor())
        for i in range(3000):
            stream.logger.info(f"line {i}")
        report = await stream.close(deadline=anyio.current_time() + 0.5)
    assert report == DeliveryReport(delivered=0, spooled=3000, lost=0)
    assert len(all_files(spool_dir)) == 1
    # Next process, control plane back: the spool goes out at start, in order, then is removed.
    async with (
        control_plane(state, port=port) as cp,
        pipeline(url, creds.runner_id, creds.runner_token, spool_dir) as logs,
    ):
        late = await logs.deliver_spooled("exe-test", deadline=anyio.current_time() + 30)
        records = await stored_logs(cp, job["log_stream_id"])
    assert late == DeliveryReport(delivered=3000, spooled=0, lost=0)
    assert [r["body"] for r in records] == [f"line {i}" for i in range(3000)]
    assert all_files(spool_dir) == []


async def test_a_large_job_is_compressed_and_delivered_whole(tmp_path: Path) -> None:
    async with control_plane(tmp_path / "cp") as cp:
        creds = cp.credentials
        job = await submit_job(cp)
        async with pipeline(cp.url, creds.runner_id, creds.runner_token, tmp_path / "spool") as logs:
            stream = open_job(logs, job, write_token=job["log_stream"]["write_token"], secrets=Redactor())
            for i in range(10_000):
                stream.logger.info(f"terraform: module.app[{i % 7}] creating resource {i}", stream="stdout")
                if i % 1000 == 0:
                    await anyio.sleep(0)
            report = await stream.close(deadline=anyio.current_time() + 30)
        records = await stored_logs(cp, job["log_stream_id"])
    assert report == DeliveryReport(delivered=10_000, spooled=0, lost=0)
    assert len(records) == 10_000
    assert records[-1]["body"] == f"terraform: module.app[{9_999 % 7}] creating resource 9999"
    assert [r["seq"] for r in records] == sorted(r["seq"] for r in records)
