"""The job log pipeline against an in-process fake of the log endpoint (httpx.MockTransport).

The fake decodes every request with the generated protobuf classes, so what is asserted is what
a server would store. Real HTTP over loopback is covered in tests/integration/test_log_pipeline.py.
"""

from __future__ import annotations

import base64
import gzip
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from runner.api.client import RunnerClient
from runner.logs import DecodedRecord, LogPipeline, LogRecord, decode_request
from runner.logs.spool import all_files, count_pending
from runner.redact import Redactor

pytestmark = [pytest.mark.unit, pytest.mark.anyio]

RUNNER_TOKEN = "runner-token-abcdef"
WRITE_TOKEN = "write-token-123456"
STEP = "runner_job_execution_step.name"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeLogEndpoint:
    """POST /v1/log-streams/{id}/logs: decodes, stores per stream, and fails on demand."""

    def __init__(self) -> None:
        self.records: dict[str, list[DecodedRecord]] = {}
        self.requests: list[httpx.Request] = []
        self.down = False
        self.status: int | None = None
        self.max_records: int | None = None
        self.poison: str | None = None
        self.refused_tokens: set[str] = set()
        self.refuse_gzip = False
        self.known_streams: set[str] | None = None

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        self.requests.append(request)
        token = request.headers["authorization"].removeprefix("Bearer ")
        if token in self.refused_tokens:
            return httpx.Response(401, json={"error": "unauthorized"})
        if self.status is not None:
            return httpx.Response(self.status, json={"error": "injected"})
        stream = request.url.path.split("/")[3]
        if self.known_streams is not None and stream not in self.known_streams:
            return httpx.Response(404, json={"error": "no such log stream"})
        body = request.content
        if request.headers.get("content-encoding") == "gzip":
            if self.refuse_gzip:
                return httpx.Response(415, json={"error": "unsupported encoding"})
            body = gzip.decompress(body)
        records = decode_request(body)
        if self.max_records is not None and len(records) > self.max_records:
            return httpx.Response(413, json={"error": "too large"})
        if self.poison is not None and any(self.poison in r.body for r in records):
            return httpx.Response(400, json={"error": "bad record"})
        self.records.setdefault(stream, []).extend(records)
        return httpx.Response(201, json="ok")

    def bodies(self, stream: str = "log1") -> list[str]:
        return [r.body for r in self.records.get(stream, [])]


def make_client(fake: FakeLogEndpoint) -> RunnerClient:
    return RunnerClient(
        "http://control-plane.test", RUNNER_TOKEN, "run1", transport=httpx.MockTransport(fake.handle)
    )


@asynccontextmanager
async def running(fake: FakeLogEndpoint, spool_dir: Path, **kwargs: Any) -> AsyncIterator[LogPipeline]:
    options: dict[str, Any] = {
        "flush_interval": 0.01,
        "backoff_max": 0.05,
        "resource_attrs": {"service.name": "runner", "runner.id": "run1"},
    }
    options.update(kwargs)
    client = make_client(fake)
    pipeline = LogPipeline(client, spool_dir, **options)
    async with anyio.create_task_group() as tg:
        await tg.start(pipeline.run)
        yield pipeline
        tg.cancel_scope.cancel()
    await client.aclose()


def open_stream(
    pipeline: LogPipeline, *, key: str = "exe1", stream: str | None = "log1", **kwargs: Any
) -> Any:
    options: dict[str, Any] = {
        "log_stream_id": stream,
        "write_token": None,
        "attrs": {"runner_job.id": "job1", "runner_job.type": "noop", "log_stream.id": stream or ""},
        "redactor": Redactor(RUNNER_TOKEN).child(),
        "spool_key": key,
    }
    options.update(kwargs)
    return pipeline.open_job(**options)


def deadline(seconds: float = 10.0) -> float:
    return anyio.current_time() + seconds


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.005)


# --------------------------------------------------------------------------- delivery


async def test_records_arrive_in_order_with_record_and_resource_attributes(tmp_path: Path) -> None:
    fake = FakeLogEndpoint()
    async with running(fake, tmp_path) as pipeline:
        stream = open_stream(pipeline, attrs={"runner_job.id": "job1", "runner_job_execution.id": "exe1"})
        log = stream.logger
        log.info("starting")
        step = log.bind(**{STEP: "execute"})
        step.debug("detail", stream="stdout")
        step.warning("careful", attempt=2)
        step.error("broken")
        report = await stream.close(deadline=deadline())
    assert report.delivered == 4
    assert report.spooled == 0
    assert report.lost == 0
    records = fake.records["log1"]
    assert [(r.severity_text, r.body) for r in records] == [
        ("info", "starting"),
        ("debug", "detail"),
        ("warn", "careful"),
        ("error", "broken"),
    ]
    assert records[0].attributes == {"runner_job.id": "job1", "runner_job_execution.id": "exe1"}
    assert records[1].attributes == {
        "runner_job.id": "job1",
        "runner_job_execution.id": "exe1",
        STEP: "execute",
        "stream": "stdout",
    }
    assert records[2].attributes["attempt"] == 2
    assert records[0].resource == {"service.name": "runner", "runner.id": "run1"}
    assert records[0].scope == "oteljob"
    assert all(r.timestamp_ns > 0 and r.observed_timestamp_ns == r.timestamp_ns for r in records)
    assert fake.requests[0].url.path == "/v1/log-streams/log1/logs"
    assert fake.requests[0].headers["content-type"] == "application/x-protobuf"
    assert fake.requests[0].headers["authorization"] == f"Bearer {RUNNER_TOKEN}"
    assert fake.requests[0].headers["x-nuon-client-version"].startswith("runner:")
    assert list(tmp_path.iterdir()) == []


async def test_secrets_are_masked_in_bodies_and_attributes(tmp_path: Path) -> None:
    fake = FakeLogEndpoint()
    async with running(fake, tmp_path) as pipeline:
        stream = open_stream(pipeline)
        stream._redactor.register("registry-password-xyz")
        encoded = base64.b64encode(b"user:registry-password-xyz").decode()
        stream.logger.info(f"auth {encoded} token {RUNNER_TOKEN}", header=f"Bearer {RUNNER_TOKEN}")
        stream.logger.bind(url="https://x:registry-password-xyz@host").info("bound")
        await stream.close(deadline=deadline())
    dump = repr(fake.records)
    assert "registry-password-xyz" not in dump
    assert RUNNER_TOKEN not in dump
    assert "cmVnaXN0cnktcGFzc3dvcmQteHl6" not in dump
    first, second = fake.records["log1"]
    assert first.attributes["header"] == "Bearer ***"
    assert second.attributes["url"] == "https://x:***@host"


async def test_large_volume_is_batched_and_compressed(tmp_path: Path) -> None:
    fake = FakeLogEndpoint()
    async with running(fake, tmp_path, batch_max_records=500) as pipeline:
        pipeline.set_accepted_encodings(["gzip"])  # announced (docs/runner-api.md §5.2)
        stream = open_stream(pipeline)
        for i in range(5000):
            stream.logger.info(f"line {i:05d} " + "pad " * 10)
            if i % 250 == 0:
                await anyio.sleep(0)
        report = await stream.close(deadline=deadline())
    assert report.delivered == 5000
    assert fake.bodies() == [f"line {i:05d} " + "pad " * 10 for i in range(5000)]
    assert len(fake.requests) >= 10
    assert any(r.headers.get("content-encoding") == "gzip" for r in fake.requests)
    assert pipeline.metrics.shipped == 5000


async def test_gzip_refused_falls_back_to_plain_bodies(tmp_path: Path) -> None:
    fake = FakeLogEndpoint()
    fake.refuse_gzip = True
    async with running(fake, tmp_path, compress_min_bytes=100) as pipeline:
        pipeline.set_accepted_encodings(["gzip"])
        stream = open_stream(pipeline)
        for i in range(200):
            stream.logger.info(f"line {i}")
        report = await stream.close(deadline=deadline())
    assert report.delivered == 200
    assert report.lost == 0
    assert fake.bodies() == [f"line {i}" for i in range(200)]


# --------------------------------------------------------------------------- outages and the spool


async def test_outage_then_recovery_delivers_everything_once_and_in_order(tmp_path: Path) -> None:
    fake = FakeLogEndpoint()
    async with running(fake, tmp_path, batch_max_records=100) as pipeline:
        stream = open_stream(pipeline)
        for i in range(3000):
            if i == 500:
                fake.down = True
            if i == 2000:
                fake.down = False
            stream.logger.info(f"line {i}")
            if i % 50 == 0:
                await anyio.sleep(0.001)
        report = await stream.close(deadline=deadline())
    assert report.delivered == 3000
    assert report.spooled == 0
    assert report.lost == 0
    assert fake.bodies() == [f"line {i}" for i in range(3000)]
    assert pipeline.metrics.export_failures > 0
    assert pipeline.metrics.spooled > 0
    assert all_files(tmp_path) == []


@pytest.mark.parametrize("status", [500, 502, 503, 429, 408])
async def test_retryable_statuses_are_retried(tmp_path: Path, status: int) -> None:
    fake = FakeLogEndpoint()
    fake.status = status
    async with running(fake, tmp_path) as pipeline:
        stream = open_stream(pipeline)
        for i in range(10):
            stream.logger.info(f"line {i}")
        await wait_until(lambda: pipeline.metrics.export_failures >= 2)
        fake.status = None
        report = await stream.close(deadline=deadline())
    assert report.delivered == 10
    assert fake.bodies() == [f"line {i}" for i in range(10)]


async def test_close_with_the_server_down_leaves_the_records_spooled_and_a_restart_delivers_them(
    tmp_path: Path,
) -> None:
    fake = FakeLogEndpoint()
    fake.down = True
    async with running(fake, tmp_path) as pipeline:
        stream = open_stream(pipeline)
        for i in range(1200):
            stream.logger.info(f"line {i}")
        report = await stream.close(deadline=deadline(0.5))
    assert report.delivered == 0
    assert report.spooled == 1200
    assert report.lost == 0
    (path,) = all_files(tmp_path)
    assert count_pending(path) == 1200
    assert fake.bodies() == []

    # A new process (new pipeline): delivered at start, in order, and the file removed.
    fake.down = False
    async with running(fake, tmp_path, resource_attrs={"runner.version": "next"}) as pipeline:
        await wait_until(lambda: len(fake.bodies()) == 1200 and not all_files(tmp_path))
        late = await pipeline.deliver_spooled("exe1", deadline=deadline())
    assert fake.bodies() == [f"line {i}" for i in range(1200)]
    assert late.delivered == 1200
    assert late.spooled == 0
    # Spooled records keep the resource of the process that wrote them (recorded in the file).
    assert fake.records["log1"][0].resource == {"service.name": "runner", "runner.id": "run1"}


async def test_deliver_spooled_reports_what_is_left_when_the_server_stays_down(tmp_path: Path) -> None:
    fake = FakeLogEndpoint()
    fake.down = True
    async with running(fake, tmp_path) as pipeline:
        stream = open_stream(pipeline, key="exe9")
        for i in range(30):
            stream.logger.info(f"line {i}")
        await stream.close(deadline=deadline(0.2))
    async with running(fake, tmp_path) as pipeline:
        report = await pipeline.deliver_spooled("exe9", deadline=deadline(0.3))
        assert report.delivered == 0
        assert report.spooled == 30
        assert await pipeline.deliver_spooled("unknown-key", deadline=deadline()) == type(report)(0, 0, 0)
        fake.down = False
        report = await pipeline.deliver_spooled("exe9", deadline=deadline())
    assert report.delivered == 30
    assert report.spooled == 0
    assert fake.bodies() == [f"line {i}" for i in range(30)]


async def test_memory_stays_bounded_when_the_producer_never_yields(tmp_path: Path) -> None:
    fake = FakeLogEndpoint()
    fake.down = True
    async with running(fake, tmp_path, memory_max_records=500, batch_max_records=200) as pipeline:
        stream = open_stream(pipeline)
        peak = 0
        for i in range(10_000):  # a synchronous burst: the shipper gets no turn at all
            stream.logger.info(f"line {i}")
            peak = max(peak, len(stream._q))
        assert peak <= 501
        assert stream.spool is not None
        assert stream.spool.pending >= 9_500
        fake.down = False
        report = await stream.close(deadline=deadline(20))
    assert report.delivered == 10_000
    assert report.lost == 0
    assert fake.bodies() == [f"line {i}" for i in range(10_000)]


async def test_records_from_another_thread_are_delivered(tmp_path: Path) -> None:
    fake = FakeLogEndpoint()
    async with running(fake, tmp_path, memory_max_records=200, batch_max_records=50) as pipeline:
        stream = open_stream(pipeline)

        def produce() -> None:
            for i in range(2000):
                stream.logger.info(f"line {i}")

        await anyio.to_thread.run_sync(produce)
        thread = threading.Thread(target=produce)
        thread.start()
        await anyio.to_thread.run_sync(thread.join)
        report = await stream.close(deadline=deadline())
    assert report.delivered == 4000
    assert fake.bodies() == [f"line {i}" for i in range(2000)] * 2


# --------------------------------------------------------------------------- refusals


async def test_write_token_refused_falls_back_to_the_runner_token(tmp_path: Path) -> None:
    fake = FakeLogEndpoint()
    fake.refused_tokens = {WRITE_TOKEN}
    async with running(fake, tmp_path) as pipeline:
        stream = open_stream(pipeline, write_token=WRITE_TOKEN)
        stream.logger.info("one")
        await wait_until(lambda: len(fake.bodies()) == 1)
        stream.logger.info("two")
        report = await stream.close(deadline=deadline())
    assert report.delivered == 2
    tokens = [r.headers["authorization"] for r in fake.requests]
    assert tokens == [f"Bearer {WRITE_TOKEN}", f"Bearer {RUNNER_TOKEN}", f"Bearer {RUNNER_TOKEN}"]


async def test_write_token_is_used_when_accepted(tmp_path: Path) -> None:
    fake = FakeLogEndpoint()
    async with running(fake, tmp_path) as pipeline:
        stream = open_stream(pipeline, write_token=WRITE_TOKEN)
        stream.logger.info("one")
        await stream.close(deadline=deadline())
    assert [r.headers["authorization"] for r in fake.requests] == [f"Bearer {WRITE_TOKEN}"]


async def test_runner_token_refused_keeps_the_records_spooled(tmp_path: Path) -> None:
    fake = FakeLogEndpoint()
    fake.refused_tokens = {RUNNER_TOKEN}
    async with running(fake, tmp_path) as pipeline:
        stream = open_stream(pipeline)
        stream.logger.info("one")
        report = await stream.close(deadline=deadline(0.3))
    assert report.spooled == 1
    assert report.lost == 0


async def test_a_rejected_record_is_isolated_and_counted_lost(tmp_path: Path) -> None:
    fake = FakeLogEndpoint()
    fake.poison = "POISON"
    async with running(fake, tmp_path, batch_max_records=64) as pipeline:
        stream = open_stream(pipeline)
        for i in range(64):
            stream.logger.info("POISON" if i == 37 else f"line {i}")
        report = await stream.close(deadline=deadline())
    assert report.lost == 1
    assert report.delivered == 63
    assert fake.bodies() == [f"line {i}" for i in range(64) if i != 37]
    assert pipeline.metrics.lost == 1


async def test_a_batch_too_large_is_split(tmp_path: Path) -> None:
    fake = FakeLogEndpoint()
    fake.max_records = 10
    async with running(fake, tmp_path, batch_max_records=100) as pipeline:
        stream = open_stream(pipeline)
        for i in range(100):
            stream.logger.info(f"line {i}")
        report = await stream.close(deadline=deadline())
    assert report.delivered == 100
    assert report.lost == 0
    assert fake.bodies() == [f"line {i}" for i in range(100)]


async def test_a_server_refusing_everything_costs_a_bounded_number_of_requests(tmp_path: Path) -> None:
    fake = FakeLogEndpoint()
    fake.status = 400
    async with running(fake, tmp_path, batch_max_records=1000) as pipeline:
        stream = open_stream(pipeline)
        for i in range(1000):
            stream.logger.info(f"line {i}")
        report = await stream.close(deadline=deadline())
    assert report.lost == 1000
    assert report.spooled == 0
    assert len(fake.requests) <= 48 + 1  # + the one gzip attempt


async def test_an_unknown_log_stream_loses_its_records_without_retrying_forever(tmp_path: Path) -> None:
    fake = FakeLogEndpoint()
    fake.known_streams = {"log1"}
    async with running(fake, tmp_path) as pipeline:
        stream = open_stream(pipeline, stream="log-gone")
        for i in range(5):
            stream.logger.info(f"line {i}")
        report = await stream.close(deadline=deadline())
    assert report.lost == 5
    assert report.spooled == 0
    assert len(fake.requests) == 1


# --------------------------------------------------------------------------- no stream, disabled, tee


async def test_a_job_without_log_stream_goes_to_the_tee_only(tmp_path: Path) -> None:
    fake = FakeLogEndpoint()
    seen: list[LogRecord] = []
    async with running(fake, tmp_path, tee=seen.append) as pipeline:
        stream = open_stream(pipeline, stream=None)
        stream.logger.bind(**{STEP: "execute"}).warning(f"token {RUNNER_TOKEN}", stream="stderr")
        report = await stream.close(deadline=deadline())
    assert report.delivered == 1
    assert fake.requests == []
    (record,) = seen
    assert record.body == "token ***"
    assert record.severity_text == "warn"
    assert record.severity_number == 13
    assert record.attributes[STEP] == "execute"
    assert record.attributes["stream"] == "stderr"


async def test_the_tee_also_sees_shipped_records_and_a_broken_tee_does_not_stop_shipping(
    tmp_path: Path,
) -> None:
    fake = FakeLogEndpoint()
    calls = 0

    def broken(record: LogRecord) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("tee is broken")

    async with running(fake, tmp_path, tee=broken) as pipeline:
        stream = open_stream(pipeline)
        for i in range(10):
            stream.logger.info(f"line {i}")
        report = await stream.close(deadline=deadline())
    assert calls == 10
    assert report.delivered == 10
    assert len(fake.bodies()) == 10


async def test_disabled_logging_sends_nothing(tmp_path: Path) -> None:
    fake = FakeLogEndpoint()
    seen: list[LogRecord] = []
    async with running(fake, tmp_path, tee=seen.append, enabled=False) as pipeline:
        stream = open_stream(pipeline)
        stream.logger.info("not shipped")
        await stream.close(deadline=deadline())
        pipeline.set_enabled(True)
        stream = open_stream(pipeline, key="exe2")
        stream.logger.info("shipped")
        await stream.close(deadline=deadline())
    assert [r.body for r in seen] == ["not shipped", "shipped"]
    assert fake.bodies() == ["shipped"]


async def test_update_resource_applies_to_later_batches(tmp_path: Path) -> None:
    fake = FakeLogEndpoint()
    async with running(fake, tmp_path) as pipeline:
        stream = open_stream(pipeline)
        stream.logger.info("before")
        await wait_until(lambda: len(fake.bodies()) == 1)
        pipeline.update_resource({"service.name": "runner", "runner.id": "run1", "org.id": "org1"})
        stream.logger.info("after")
        await stream.close(deadline=deadline())
    before, after = fake.records["log1"]
    assert "org.id" not in before.resource
    assert after.resource["org.id"] == "org1"


# --------------------------------------------------------------------------- robustness


async def test_logging_never_raises_and_late_records_are_counted(tmp_path: Path) -> None:
    fake = FakeLogEndpoint()
    async with running(fake, tmp_path) as pipeline:
        stream = open_stream(pipeline)
        log = stream.logger
        log.info(12345)
        log.log("nonsense-level", "odd level")
        log.info("unhashable attr", data={"a": [1, 2]})
        report = await stream.close(deadline=deadline())
        log.info("after close")
        assert await stream.close(deadline=deadline()) is report
    assert fake.bodies() == ["12345", "odd level", "unhashable attr"]
    assert report.delivered == 3
    assert pipeline.metrics.lost == 1


async def test_close_is_shielded_from_the_callers_cancellation(tmp_path: Path) -> None:
    fake = FakeLogEndpoint()
    async with running(fake, tmp_path) as pipeline:
        stream = open_stream(pipeline)
        for i in range(100):
            stream.logger.info(f"line {i}")
        with anyio.CancelScope() as scope:
            scope.cancel()  # the job's scope is already cancelled (timeout, cancel request)
            report = await stream.close(deadline=deadline())
    assert report.delivered == 100
    assert len(fake.bodies()) == 100


async def test_pipeline_shutdown_with_open_streams_keeps_their_records_on_disk(tmp_path: Path) -> None:
    fake = FakeLogEndpoint()
    fake.down = True
    async with running(fake, tmp_path) as pipeline:
        stream = open_stream(pipeline)
        for i in range(50):
            stream.logger.info(f"line {i}")
        await anyio.sleep(0.05)
    report = await stream.close(deadline=deadline())
    assert report.spooled == 50
    (path,) = all_files(tmp_path)
    assert count_pending(path) == 50


async def test_open_job_needs_a_running_pipeline(tmp_path: Path) -> None:
    pipeline = LogPipeline(make_client(FakeLogEndpoint()), tmp_path, resource_attrs={})
    with pytest.raises(RuntimeError):
        open_stream(pipeline)


async def test_several_jobs_at_once_keep_their_own_order(tmp_path: Path) -> None:
    fake = FakeLogEndpoint()
    async with running(fake, tmp_path, batch_max_records=20) as pipeline:
        streams = [open_stream(pipeline, key=f"exe{n}", stream=f"log{n}") for n in range(4)]
        for i in range(300):
            for n, stream in enumerate(streams):
                stream.logger.info(f"{n}:{i}")
            if i % 40 == 0:
                fake.down = not fake.down
            await anyio.sleep(0)
        fake.down = False
        reports = [await s.close(deadline=deadline()) for s in streams]
    assert all(r.delivered == 300 for r in reports)
    for n in range(4):
        assert fake.bodies(f"log{n}") == [f"{n}:{i}" for i in range(300)]
