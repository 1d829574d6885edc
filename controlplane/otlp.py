"""OTLP/HTTP protobuf log ingest: ``ExportLogsServiceRequest`` bytes -> flat records, in order.

Attribute values keep their JSON type (string, bool, int, float, list, map; bytes as base64).
A resource's attributes are encoded once per ``ResourceLogs`` and shared by its records, which
keeps decoding cheap for large batches.
"""

from __future__ import annotations

import base64
import json
import zlib
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from controlplane.store import LogRecord

#: OTLP times are unsigned 64-bit; SQLite integers are signed.
INT64_MAX = 2**63 - 1


class OTLPDecodeError(ValueError):
    pass


def any_value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "int_value":
        return value.int_value
    if kind == "double_value":
        return value.double_value
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    return None


def attributes(kvs: Any) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in kvs}


def _body(value: Any) -> str:
    if value.WhichOneof("value") == "string_value":
        return str(value.string_value)
    decoded = any_value(value)
    if decoded is None:
        return ""
    return decoded if isinstance(decoded, str) else json.dumps(decoded, separators=(",", ":"))


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """Undo ``Content-Encoding`` (gzip or deflate), refusing to inflate past ``limit`` bytes."""
    encoding = (encoding or "").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise OTLPDecodeError(f"unsupported Content-Encoding {encoding!r}")
    wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
    try:
        inflater = zlib.decompressobj(wbits)
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise OTLPDecodeError(f"invalid {encoding} body: {exc}") from exc
    if len(out) > limit:
        raise OverflowError("decompressed body too large")
    if not inflater.eof:
        # A truncated stream inflates without error as far as it goes: storing that prefix
        # would answer 201 for records never stored, and the sender would count them delivered.
        raise OTLPDecodeError(f"truncated {encoding} body: the compressed stream does not end")
    return out


def decode_logs(body: bytes) -> list[LogRecord]:
    request = ExportLogsServiceRequest()
    try:
        request.ParseFromString(body)
    except DecodeError as exc:
        raise OTLPDecodeError(f"not an OTLP ExportLogsServiceRequest: {exc}") from exc
    records: list[LogRecord] = []
    append = records.append
    # A runner sends the same attributes for every line of a job step: encode each set once. The
    # previous record's set is compared first (one C-level comparison, no bytes made); only a
    # change of set builds the serialized key of the cache.
    attrs_json: dict[tuple[bytes, ...], str] = {}
    for resource_logs in request.resource_logs:
        resource_attrs = json.dumps(attributes(resource_logs.resource.attributes), separators=(",", ":"))
        for scope_logs in resource_logs.scope_logs:
            scope_name = scope_logs.scope.name
            previous: Any = None
            previous_json = "{}"
            for rec in scope_logs.log_records:
                attrs = rec.attributes
                if not attrs:
                    encoded = "{}"
                elif previous is not None and attrs == previous:
                    encoded = previous_json
                else:
                    key = tuple(kv.SerializeToString() for kv in attrs)
                    encoded = attrs_json.get(key) or ""
                    if not encoded:
                        encoded = json.dumps(attributes(attrs), separators=(",", ":"))
                        if len(attrs_json) < 1024:
                            attrs_json[key] = encoded
                    previous, previous_json = attrs, encoded
                value = rec.body
                text = value.string_value if value.WhichOneof("value") == "string_value" else _body(value)
                at, observed = rec.time_unix_nano, rec.observed_time_unix_nano
                append(
                    LogRecord(
                        at if at <= INT64_MAX else INT64_MAX,
                        observed if observed <= INT64_MAX else INT64_MAX,
                        rec.severity_text,
                        rec.severity_number,
                        text,
                        encoded,
                        resource_attrs,
                        scope_name,
                        rec.trace_id.hex(),
                        rec.span_id.hex(),
                    )
                )
    return records


__all__ = ["OTLPDecodeError", "decode_logs", "decompress"]
