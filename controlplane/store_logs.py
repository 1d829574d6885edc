"""Log streams: ordered record append and paged reads."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from controlplane.errors import NotFound
from controlplane.store_base import (
    LogRecord,
    Row,
    StoreBase,
    _loads,
)
from controlplane.wire import now_ns


class LogRange(NamedTuple):
    """``X-Byoc-Log-Range``: the writer's numbers of a request's records, ``first``..``last``."""

    writer: str
    first: int
    last: int


#: Batches larger than this are written from a worker thread, off the event loop.
OFFLOAD_RECORDS = 256


class LogStore(StoreBase):
    # ================================================================ log streams

    async def get_log_stream(self, stream_id: str, *, runner_scope: str | None) -> Row:
        def query() -> Row:
            row = self._one("SELECT * FROM log_streams WHERE id = ?", (stream_id,))
            if row is None or (runner_scope is not None and row["runner_id"] != runner_scope):
                raise NotFound(f"log stream {stream_id} not found")
            row["attrs"] = _loads(row["attrs"])
            return row

        return await self._run(query)

    async def append_logs(
        self,
        stream_id: str,
        records: Sequence[LogRecord],
        *,
        runner_scope: str | None,
        log_range: LogRange | None = None,
    ) -> int:
        """Append records in order; returns the stream's record count after the append.

        With ``log_range`` (one record per number), records whose number the writer already
        stored on this stream are skipped, in the same transaction as the insert: a request
        resent after a timeout, or a stale one arriving after later ranges, stores nothing twice
        and nothing out of order (a writer's requests cover increasing ranges)."""
        if log_range is not None and log_range.last - log_range.first + 1 != len(records):
            log_range = None  # not one number per record: store as sent

        def append() -> int:
            with self.db.transaction() as conn:
                stream = self._one(
                    "SELECT runner_id, record_count FROM log_streams WHERE id = ?", (stream_id,)
                )
                if stream is None or (runner_scope is not None and stream["runner_id"] != runner_scope):
                    raise NotFound(f"log stream {stream_id} not found")
                todo = records
                if log_range is not None:
                    seen = self._one(
                        "SELECT high FROM log_stream_ranges WHERE stream_id = ? AND writer = ?",
                        (stream_id, log_range.writer),
                    )
                    high = int(seen["high"]) if seen is not None else 0
                    skip = min(len(records), max(0, high - log_range.first + 1))
                    todo = records[skip:]
                    if todo:
                        conn.execute(
                            "INSERT INTO log_stream_ranges (stream_id, writer, high) VALUES (?, ?, ?)"
                            " ON CONFLICT (stream_id, writer) DO UPDATE SET high = excluded.high",
                            (stream_id, log_range.writer, log_range.last),
                        )
                if not todo:
                    return int(stream["record_count"])
                first = int(stream["record_count"])
                conn.executemany(
                    "INSERT INTO log_records (stream_id, seq, time_unix_nano,"
                    " observed_time_unix_nano, severity_text,"
                    " severity_number, body, attributes, resource_attributes, scope_name, trace_id, span_id)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            stream_id,
                            first + i,
                            r.time_unix_nano,
                            r.observed_time_unix_nano,
                            r.severity_text,
                            r.severity_number,
                            r.body,
                            r.attributes,
                            r.resource_attributes,
                            r.scope_name,
                            r.trace_id,
                            r.span_id,
                        )
                        for i, r in enumerate(todo)
                    ],
                )
                total = first + len(todo)
                conn.execute(
                    "UPDATE log_streams SET record_count = ?, updated_at = ? WHERE id = ?",
                    (total, now_ns(), stream_id),
                )
                return total

        if len(records) > OFFLOAD_RECORDS:
            return await self._run_offloaded(append)
        return await self._run(append)

    async def read_logs(
        self, stream_id: str, offset: int, limit: int, *, runner_scope: str | None
    ) -> tuple[list[Row], int]:
        """Records from ``offset`` (0-based) on, and the stream's record count."""

        def query() -> tuple[list[Row], int]:
            stream = self._one("SELECT runner_id, record_count FROM log_streams WHERE id = ?", (stream_id,))
            if stream is None or (runner_scope is not None and stream["runner_id"] != runner_scope):
                raise NotFound(f"log stream {stream_id} not found")
            rows = self._all(
                "SELECT * FROM log_records WHERE stream_id = ? AND seq >= ? ORDER BY seq LIMIT ?",
                (stream_id, offset, limit),
            )
            return rows, int(stream["record_count"])

        return await self._run(query)
