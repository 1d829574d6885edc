"""Log streams: ordered record append and paged reads."""

from __future__ import annotations

from collections.abc import Sequence

from controlplane.errors import NotFound
from controlplane.store_base import (
    LogRecord,
    Row,
    StoreBase,
    _loads,
)
from controlplane.wire import now_ns

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
        self, stream_id: str, records: Sequence[LogRecord], *, runner_scope: str | None
    ) -> int:
        """Append records in order; returns the stream's record count after the append."""

        def append() -> int:
            with self.db.transaction() as conn:
                stream = self._one(
                    "SELECT runner_id, record_count FROM log_streams WHERE id = ?", (stream_id,)
                )
                if stream is None or (runner_scope is not None and stream["runner_id"] != runner_scope):
                    raise NotFound(f"log stream {stream_id} not found")
                if not records:
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
                        for i, r in enumerate(records)
                    ],
                )
                total = first + len(records)
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
