"""OTLP encoding of job log records: decoded back with the generated opentelemetry-proto classes."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2

from runner.logs.otlp import (
    DEBUG,
    ERROR,
    INFO,
    MAX_BODY_CHARS,
    SCOPE_NAME,
    SEVERITIES,
    WARN,
    attributes_blob,
    decode_request,
    encode_record,
    export_request,
    resource_bytes,
    varint,
)
from runner.logs.records import Bound, JobLogger, severity_index
from runner.redact import Redactor

pytestmark = pytest.mark.unit

TS = 1_700_000_000_123_456_789


def _identity(text: str) -> str:
    return text


def test_record_round_trip_through_the_generated_classes() -> None:
    attrs = {"runner_job.id": "job1", "runner_job_execution_step.name": "execute", "count": 3, "ok": True}
    frame = encode_record(TS, WARN, "hello world", attributes_blob(attrs, _identity))
    body = export_request(resource_bytes({"service.name": "runner", "runner.id": "run1"}), [frame])

    request = logs_service_pb2.ExportLogsServiceRequest.FromString(body)
    (resource_logs,) = request.resource_logs
    resource = {kv.key: kv.value.string_value for kv in resource_logs.resource.attributes}
    assert resource == {"service.name": "runner", "runner.id": "run1"}
    (scope_logs,) = resource_logs.scope_logs
    assert scope_logs.scope.name == SCOPE_NAME
    (record,) = scope_logs.log_records

    expected = logs_pb2.LogRecord(
        time_unix_nano=TS,
        observed_time_unix_nano=TS,
        severity_number=logs_pb2.SEVERITY_NUMBER_WARN,
        severity_text="warn",
        body=common_pb2.AnyValue(string_value="hello world"),
        attributes=[
            common_pb2.KeyValue(key="runner_job.id", value=common_pb2.AnyValue(string_value="job1")),
            common_pb2.KeyValue(
                key="runner_job_execution_step.name", value=common_pb2.AnyValue(string_value="execute")
            ),
            common_pb2.KeyValue(key="count", value=common_pb2.AnyValue(int_value=3)),
            common_pb2.KeyValue(key="ok", value=common_pb2.AnyValue(bool_value=True)),
        ],
    )
    assert record == expected


def _reference(timestamp_ns: int, severity: int, body: str, attrs: dict[str, str]) -> logs_pb2.LogRecord:
    """The same record built entirely with the generated classes (the oracle)."""
    number, text = SEVERITIES[severity]
    return logs_pb2.LogRecord(
        time_unix_nano=timestamp_ns,
        observed_time_unix_nano=timestamp_ns,
        severity_number=logs_pb2.SeverityNumber.ValueType(number),
        severity_text=text,
        body=common_pb2.AnyValue(string_value=body),
        attributes=[
            common_pb2.KeyValue(key=k, value=common_pb2.AnyValue(string_value=v)) for k, v in attrs.items()
        ],
    )


@settings(max_examples=300, deadline=None)
@given(
    timestamp_ns=st.integers(min_value=0, max_value=2**64 - 1),
    severity=st.integers(min_value=0, max_value=3),
    body=st.text(max_size=20_000),
    attrs=st.dictionaries(st.text(min_size=1, max_size=20), st.text(max_size=200), max_size=5),
)
def test_direct_encoding_equals_the_generated_classes(
    timestamp_ns: int, severity: int, body: str, attrs: dict[str, str]
) -> None:
    frame = encode_record(timestamp_ns, severity, body, attributes_blob(attrs, _identity))
    request = logs_service_pb2.ExportLogsServiceRequest.FromString(export_request(b"", [frame]))
    (record,) = request.resource_logs[0].scope_logs[0].log_records
    assert record == _reference(timestamp_ns, severity, body, attrs)


def test_bodies_that_are_not_valid_utf8_are_repaired_not_lost() -> None:
    (record,) = decode_request(export_request(b"", [encode_record(TS, INFO, "bad \udcff byte", b"")]))
    assert record.body == "bad ? byte"


def test_many_frames_and_an_empty_request_decode_in_order() -> None:
    blob = attributes_blob({"k": "v"}, _identity)
    frames = [encode_record(TS + i, i % 4, f"line {i} " + "x" * (i * 37), blob) for i in range(300)]
    records = decode_request(export_request(resource_bytes({}), frames))
    assert [r.body for r in records] == [f"line {i} " + "x" * (i * 37) for i in range(300)]
    assert [r.timestamp_ns for r in records] == [TS + i for i in range(300)]
    assert {r.severity_text for r in records} == {"debug", "info", "warn", "error"}
    assert decode_request(export_request(resource_bytes({"a": "b"}), [])) == []


@pytest.mark.parametrize(
    ("index", "number", "text"),
    [(DEBUG, 5, "debug"), (INFO, 9, "info"), (WARN, 13, "warn"), (ERROR, 17, "error")],
)
def test_severities(index: int, number: int, text: str) -> None:
    (record,) = decode_request(export_request(b"", [encode_record(TS, index, "x", b"")]))
    assert (record.severity_number, record.severity_text) == (number, text)


@pytest.mark.parametrize(
    ("level", "index"),
    [
        ("debug", DEBUG),
        ("INFO", INFO),
        ("warn", WARN),
        ("Warning", WARN),
        ("error", ERROR),
        ("bogus", INFO),
        (17, ERROR),
    ],
)
def test_level_names(level: Any, index: int) -> None:
    assert severity_index(level) == index


def test_attribute_values_keep_their_types_and_strings_are_masked() -> None:
    redactor = Redactor("secret-value")
    blob = attributes_blob(
        {"s": "has secret-value in it", "i": -5, "f": 1.5, "b": False, "o": ["secret-value"], "big": 2**70},
        redactor.mask,
    )
    (record,) = decode_request(export_request(b"", [encode_record(TS, INFO, "x", blob)]))
    assert record.attributes == {
        "s": "has *** in it",
        "i": -5,
        "f": 1.5,
        "b": False,
        "o": "['***']",
        "big": str(2**70),
    }


def test_long_bodies_are_cut() -> None:
    (record,) = decode_request(
        export_request(b"", [encode_record(TS, INFO, "y" * (MAX_BODY_CHARS + 10), b"")])
    )
    assert record.body.startswith("y" * MAX_BODY_CHARS)
    assert record.body.endswith("[truncated 10 characters]")


def test_non_ascii_bodies_survive() -> None:
    text = "déploiement terminé ✅ 日本語"
    (record,) = decode_request(export_request(b"", [encode_record(TS, INFO, text, b"")]))
    assert record.body == text


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 16383, 16384, 2**21, 2**35])
def test_varint_matches_protobuf(value: int) -> None:
    encoded = common_pb2.AnyValue(int_value=value).SerializeToString()
    assert encoded[1:] == varint(value)


def test_bound_attributes_follow_the_redactor_generation() -> None:
    redactor = Redactor()
    bound = Bound({"step": "token-registered-later"})
    before = bound.blob(redactor)
    redactor.register("token-registered-later")
    after = bound.blob(redactor)
    assert before != after
    (record,) = decode_request(export_request(b"", [encode_record(TS, INFO, "x", after)]))
    assert record.attributes == {"step": "***"}


def test_job_logger_calls_reach_the_emit_function_with_bound_attributes() -> None:
    seen: list[tuple[int, str, dict[str, Any] | None, dict[str, Any]]] = []

    def emit(severity: int, message: str, attrs: dict[str, Any] | None, bound: Bound) -> None:
        seen.append((severity, message, attrs, bound.attrs))

    logger = JobLogger(emit, Bound({"runner_job.id": "job1"}))
    step = logger.bind(**{"runner_job_execution_step.name": "execute"})
    logger.info("a")
    step.debug("b", stream="stdout")
    step.warning("c")
    step.error("d")
    step.log("warn", "e")
    assert [(s, m) for s, m, _, _ in seen] == [
        (INFO, "a"),
        (DEBUG, "b"),
        (WARN, "c"),
        (ERROR, "d"),
        (WARN, "e"),
    ]
    assert seen[1][2] == {"stream": "stdout"}
    assert seen[0][3] == {"runner_job.id": "job1"}
    assert seen[1][3] == {"runner_job.id": "job1", "runner_job_execution_step.name": "execute"}
