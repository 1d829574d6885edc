"""Log streams: OTLP/HTTP protobuf in (docs/runner-api.md §5), JSON records out (operator API).

Writers are the stream's own write token (handed to the runner inside the job), the runner
token of the stream's runner, or the admin token. Records keep their order, timestamps,
severity, body and attributes; readers page with ``?offset=`` (record index) so
``runner jobs logs --follow`` can tail a stream.
"""

from __future__ import annotations

import re

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from controlplane import render
from controlplane.auth import LOG_STREAM
from controlplane.errors import BadRequest, Forbidden, PayloadTooLarge, UnsupportedMediaType
from controlplane.http import (
    authenticate,
    base_url,
    json_response,
    options_of,
    query_int,
    read_body,
    store_of,
)
from controlplane.store_logs import LogRange

_PROTOBUF_TYPES = ("application/x-protobuf", "application/protobuf", "application/octet-stream", "")
#: ``X-Byoc-Log-Range: <writer>:<first>-<last>`` (ours, docs/runner-api.md §5.7).
_RANGE = re.compile(r"([A-Za-z0-9_.-]{1,128}):([1-9][0-9]{0,17})-([1-9][0-9]{0,17})")

#: Decoding a batch this large or larger happens in a worker thread, off the event loop.
_THREAD_DECODE_BYTES = 64 * 1024


async def write_logs(request: Request) -> Response:
    principal = await authenticate(request)
    stream_id = request.path_params["log_stream_id"]
    if principal.kind == LOG_STREAM:
        if principal.log_stream_id != stream_id:
            raise Forbidden("this write token belongs to another log stream")
        scope = None
    else:
        scope = principal.runner_scope()
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in _PROTOBUF_TYPES:
        raise UnsupportedMediaType(
            f"logs must be an OTLP/HTTP protobuf ExportLogsServiceRequest, not {content_type!r}"
        )
    from controlplane.otlp import OTLPDecodeError, decode_logs, decompress  # protobuf: on first use

    limit = options_of(request).max_body_bytes
    body = await read_body(request)
    try:
        raw = decompress(body, request.headers.get("content-encoding"), limit)
        if len(raw) >= _THREAD_DECODE_BYTES:
            records = await anyio.to_thread.run_sync(decode_logs, raw)
        else:
            records = decode_logs(raw)
    except OverflowError:
        raise PayloadTooLarge(f"the decompressed body exceeds the limit of {limit} bytes") from None
    except OTLPDecodeError as exc:
        raise BadRequest(str(exc), error="invalid request format") from None
    await store_of(request).append_logs(
        stream_id, records, runner_scope=scope, log_range=log_range_of(request)
    )
    return json_response("ok", 201)


def log_range_of(request: Request) -> LogRange | None:
    """The request's ``X-Byoc-Log-Range``; None when absent or malformed (then the records are
    stored as sent, as before the header existed: a bad header must not lose lines)."""
    value = request.headers.get("x-byoc-log-range")
    if not value:
        return None
    match = _RANGE.fullmatch(value.strip())
    if match is None:
        return None
    first, last = int(match.group(2)), int(match.group(3))
    if last < first:
        return None
    return LogRange(match.group(1), first, last)


async def read_logs(request: Request) -> Response:
    principal = await authenticate(request)
    stream_id = request.path_params["log_stream_id"]
    offset = query_int(request, "offset", 0)
    limit = query_int(request, "limit", 1000, minimum=1, maximum=10000)
    rows, total = await store_of(request).read_logs(
        stream_id, offset, limit, runner_scope=principal.runner_scope()
    )
    next_offset = offset + len(rows)
    headers = {
        "X-Nuon-API-Offset": str(next_offset),
        "X-Nuon-Page-Next": "true" if next_offset < total else "false",
        "X-Nuon-Log-Count": str(total),
    }
    return json_response([render.log_record(row) for row in rows], headers=headers)


async def get_log_stream(request: Request) -> Response:
    principal = await authenticate(request)
    row = await store_of(request).get_log_stream(
        request.path_params["log_stream_id"], runner_scope=principal.runner_scope()
    )
    return json_response(render.log_stream(row, base_url(request)))


ROUTES = [
    Route("/v1/log-streams/{log_stream_id}", get_log_stream, methods=["GET"]),
    Route("/v1/log-streams/{log_stream_id}/logs", write_logs, methods=["POST"]),
    Route("/v1/log-streams/{log_stream_id}/logs", read_logs, methods=["GET"]),
]
