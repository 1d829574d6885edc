"""Log ingest decoded from a REAL OpenTelemetry SDK exporter's protobuf (docs/runner-api.md §5.1)."""

from __future__ import annotations

import time

import pytest
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource

from tests.support.controlplane import EmbeddedControlPlane

pytestmark = pytest.mark.integration


def _provider(url: str, token: str, compression: Compression, batch: bool) -> LoggerProvider:
    resource = Resource.create({"service.name": "runner", "runner.id": "run-under-test"})
    provider = LoggerProvider(resource=resource)
    exporter = OTLPLogExporter(
        endpoint=url, headers={"Authorization": f"Bearer {token}"}, compression=compression
    )
    processor = BatchLogRecordProcessor(exporter) if batch else SimpleLogRecordProcessor(exporter)
    provider.add_log_record_processor(processor)
    return provider


@pytest.mark.parametrize(
    ("compression", "batch"),
    [(Compression.NoCompression, False), (Compression.Gzip, True)],
    ids=["plain", "gzip"],
)
def test_real_otlp_exporter_records_arrive_in_order_with_attributes(
    embedded_control_plane: EmbeddedControlPlane, compression: Compression, batch: bool
) -> None:
    cp = embedded_control_plane
    with cp.operator() as operator:
        job = operator.submit("noop")
        stream = job["log_stream"]
        url = f"{stream['runner_api_url']}/v1/log-streams/{stream['id']}/logs"
        provider = _provider(url, stream["write_token"], compression, batch)
        logger = provider.get_logger(f"otel-test-{compression.value}")
        try:
            for i in range(50):
                logger.emit(
                    timestamp=time.time_ns(),
                    severity_number=SeverityNumber.INFO,
                    severity_text="INFO",
                    body=f"line {i}",
                    attributes={"runner_job.id": job["id"], "step": "execute", "n": i},
                )
            logger.emit(severity_number=SeverityNumber.WARN, severity_text="WARN", body="a warning")
            assert provider.force_flush(10_000)
        finally:
            provider.shutdown()
        records = operator.logs(stream["id"])
    assert [r["body"] for r in records] == [f"line {i}" for i in range(50)] + ["a warning"]
    first = records[0]
    assert first["severity_text"] == "INFO"
    assert first["severity_number"] == 9
    assert records[-1]["severity_text"] == "WARN"
    assert first["attributes"]["runner_job.id"] == job["id"]
    assert first["attributes"]["step"] == "execute"
    assert first["resource_attributes"]["service.name"] == "runner"
    assert first["resource_attributes"]["runner.id"] == "run-under-test"
    assert first["scope_name"] == f"otel-test-{compression.value}"
    assert first["attributes"]["n"] == 0
    assert first["time_unix_nano"] > 0
    assert first["timestamp"].endswith("Z")
    assert [r["seq"] for r in records] == list(range(51))
