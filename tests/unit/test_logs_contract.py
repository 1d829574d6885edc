"""Job logs as the real log endpoint takes them (docs/runner-api.md §5), issue 10 break 1.

The real ``POST /v1/log-streams/{id}/logs`` (``log_stream_write_logs.go``) reads the body and
unmarshals it as protobuf with no decompression: a gzip body answers 500. The fake below does
exactly that, so these tests fail on a runner that compresses unasked, or that retries a batch
answered with 5xx for ever while the lines behind it wait.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from runner.logs import decode_request
from runner.logs.export import REJECTED_SUFFIX
from runner.logs.spool import SpoolFile, all_files
from tests.unit.test_logs_pipeline import FakeLogEndpoint, deadline, open_stream, running

pytestmark = [pytest.mark.unit, pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class RealLikeEndpoint(FakeLogEndpoint):
    """Protobuf only, no decompression (a gzip body is a 500, as on the real server); records
    whose body holds ``fail_on`` make the whole request a 500 (a server-side failure on them)."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_on: str | None = None
        self.server_errors = 0

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.headers.get("content-encoding"):
            self.requests.append(request)
            self.server_errors += 1
            return httpx.Response(500, json={"error": "unable to unmarshal request"})
        if self.fail_on is not None and any(self.fail_on in r.body for r in decode_request(request.content)):
            self.requests.append(request)
            self.server_errors += 1
            return httpx.Response(500, json={"error": "unable to write runner logs"})
        return super().handle(request)


async def test_no_gzip_unless_the_control_plane_announced_it(tmp_path: Path) -> None:
    fake = RealLikeEndpoint()
    async with running(fake, tmp_path, compress_min_bytes=100, batch_max_records=200) as pipeline:
        stream = open_stream(pipeline)
        for i in range(1000):
            stream.logger.info(f"line {i:04d} " + "pad " * 20)
        report = await stream.close(deadline=deadline())
    assert report.delivered == 1000
    assert report.lost == 0
    assert fake.server_errors == 0
    assert not any(r.headers.get("content-encoding") for r in fake.requests)
    assert fake.bodies() == [f"line {i:04d} " + "pad " * 20 for i in range(1000)]


async def test_gzip_when_announced_and_never_after_a_refusal(tmp_path: Path) -> None:
    fake = FakeLogEndpoint()
    async with running(fake, tmp_path, compress_min_bytes=100) as pipeline:
        pipeline.set_accepted_encodings(["gzip"])
        stream = open_stream(pipeline)
        for i in range(300):
            stream.logger.info(f"line {i} " + "pad " * 20)
        await stream.close(deadline=deadline())
        assert any(r.headers.get("content-encoding") == "gzip" for r in fake.requests)

        fake.refuse_gzip = True
        fake.requests.clear()
        stream = open_stream(pipeline, key="exe2")
        for i in range(300):
            stream.logger.info(f"again {i} " + "pad " * 20)
        assert (await stream.close(deadline=deadline())).lost == 0
        pipeline.set_accepted_encodings(["gzip"])  # a settings refresh does not turn it back on
        fake.requests.clear()
        stream = open_stream(pipeline, key="exe3")
        for i in range(300):
            stream.logger.info(f"third {i} " + "pad " * 20)
        await stream.close(deadline=deadline())
        assert fake.requests
        assert not any(r.headers.get("content-encoding") for r in fake.requests)


async def test_a_batch_failing_with_5xx_is_set_aside_and_the_lines_behind_it_move_on(tmp_path: Path) -> None:
    fake = RealLikeEndpoint()
    fake.fail_on = "poison"
    async with running(fake, tmp_path, batch_max_records=50, flush_interval=0.01) as pipeline:
        attempts = pipeline._shared.settings.server_error_attempts
        stream = open_stream(pipeline)
        stream.logger.info("poison line")
        for i in range(200):
            stream.logger.info(f"after {i}")
        report = await stream.close(deadline=deadline(20))
    delivered = fake.bodies()
    assert delivered[-1] == "after 199", "the lines behind the failing batch were delivered"
    assert "poison line" not in delivered
    assert report.lost >= 1
    assert report.lost + report.delivered == 201
    assert report.spooled == 0
    # Bounded: the failing batch cost ``attempts`` requests, not one per backoff for ever.
    assert fake.server_errors == attempts
    rejected = [p for p in tmp_path.iterdir() if p.name.endswith(REJECTED_SUFFIX)]
    assert len(rejected) == 1
    assert rejected[0] not in all_files(tmp_path), "a set-aside batch is never resent"
    kept = SpoolFile.open_existing(rejected[0])
    try:
        frames, _, _ = kept.take(1000, 1 << 20)
    finally:
        kept.close()
    assert len(frames) == report.lost


async def test_scope_name_and_severity_text_are_the_references(tmp_path: Path) -> None:
    fake = FakeLogEndpoint()
    async with running(fake, tmp_path) as pipeline:
        stream = open_stream(pipeline)
        stream.logger.debug("d")
        stream.logger.info("i")
        stream.logger.warning("w")
        stream.logger.error("e")
        await stream.close(deadline=deadline())
    records = fake.records["log1"]
    # otelzap.NewCore("oteljob"): scope "oteljob", severity text = zap's level name.
    assert {r.scope for r in records} == {"oteljob"}
    assert [(r.severity_number, r.severity_text) for r in records] == [
        (5, "debug"),
        (9, "info"),
        (13, "warn"),
        (17, "error"),
    ]
