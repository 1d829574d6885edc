"""The runner-wide job log pipeline: opens one stream per job, and delivers what a crash left.

One ``LogPipeline`` lives as long as the runner process. ``run`` owns the shipper tasks (one per
open job stream) and, at start, delivers the spool files a previous process left behind, file by
file in creation order for each log stream. ``deliver_spooled`` lets the executor wait for (or
do) the delivery of one orphaned execution's spool before it reports that execution, so the
loss it reports is the real one.
"""

from __future__ import annotations

import contextlib
import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import structlog

from runner.api.client import RunnerClient
from runner.logs import spool as spooling
from runner.logs.otlp import resource_bytes
from runner.logs.records import DeliveryReport, LogMetrics, LogRecord
from runner.logs.shared import Shared, ShipperSettings
from runner.logs.spool import SpoolError, SpoolFile
from runner.logs.stream import JobLogStream
from runner.redact import Redactor

log = structlog.get_logger("runner.logs")

_NOTHING = DeliveryReport(delivered=0, spooled=0, lost=0)
#: Log streams recovered at once at start-up (each one in order, file after file).
_RECOVERY_CONCURRENCY = 4


class LogPipeline:
    """Job logs of the whole runner: redaction -> bounded queue -> OTLP/HTTP -> disk spool on failure."""

    def __init__(
        self,
        client: RunnerClient,
        spool_dir: Path,
        *,
        resource_attrs: Mapping[str, str],
        enabled: bool = True,
        batch_max_records: int = 1000,
        batch_max_bytes: int = 1_000_000,
        flush_interval: float = 0.2,
        memory_max_records: int = 20_000,
        tee: Callable[[LogRecord], None] | None = None,
        metrics: LogMetrics | None = None,
        compress_min_bytes: int | None = 8 * 1024,
        post_timeout: float = 30.0,
        backoff_max: float = 5.0,
    ) -> None:
        self.metrics = metrics if metrics is not None else LogMetrics()
        self._shared = Shared(
            client=client,
            spool_dir=Path(spool_dir),
            settings=ShipperSettings(
                batch_max_records=batch_max_records,
                batch_max_bytes=batch_max_bytes,
                flush_interval=flush_interval,
                memory_max_records=memory_max_records,
                compress_min_bytes=compress_min_bytes,
                post_timeout=post_timeout,
                backoff_max=backoff_max,
            ),
            metrics=self.metrics,
            tee=tee,
            resource_attrs=dict(resource_attrs),
            enabled=enabled,
        )
        self._tg: anyio.abc.TaskGroup | None = None
        self._key_locks: dict[str, anyio.Lock] = {}
        self._recovering: dict[Path, JobLogStream] = {}
        self._recovered: dict[str, DeliveryReport] = {}

    # ------------------------------------------------------------------ settings
    @property
    def spool_dir(self) -> Path:
        return self._shared.spool_dir

    @property
    def enabled(self) -> bool:
        return self._shared.enabled

    def update_resource(self, attrs: Mapping[str, str]) -> None:
        """New resource attributes (settings metadata changed) for every batch sent from now on."""
        attrs = {str(k): str(v) for k, v in attrs.items() if v is not None}
        if attrs != self._shared.resource_attrs:
            self._shared.resource_attrs = attrs
            self._shared.resource = resource_bytes(attrs)

    def set_accepted_encodings(self, encodings: Sequence[str]) -> None:
        """Settings ``log_accept_encodings``: gzip log bodies only when the control plane says it
        takes them (the real one does not; docs/runner-api.md §5.2). A server that refused a gzip
        body once is not sent another."""
        shared = self._shared
        shared.gzip_ok = not shared.gzip_refused and "gzip" in {e.strip().lower() for e in encodings}

    def set_enabled(self, enabled: bool) -> None:
        """Settings ``enable_logging``: when false, records only reach the tee."""
        self._shared.enabled = bool(enabled)

    # ------------------------------------------------------------------ running
    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Own the shippers until cancelled; first start delivering spool left by a previous process."""
        leftovers = spooling.all_files(self.spool_dir)
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                if leftovers:
                    tg.start_soon(self._recover_previous, leftovers)
                task_status.started()
                await anyio.sleep_forever()
        finally:
            self._tg = None
            # Cancelled (shutdown) with streams still open: keep their records on disk.
            for stream in list(self._shared.streams):
                stream._persist()

    def open_job(
        self,
        *,
        log_stream_id: str | None,
        write_token: str | None,
        attrs: Mapping[str, str],
        redactor: Redactor,
        spool_key: str,
    ) -> JobLogStream:
        """A stream for one job execution; ``spool_key`` (the execution id) names its spool file."""
        if self._tg is None:
            raise RuntimeError("LogPipeline.run() is not running")
        stream = JobLogStream(
            self._shared,
            log_stream_id=log_stream_id,
            write_token=write_token,
            attrs=attrs,
            redactor=redactor,
            spool_key=spool_key,
        )
        self._shared.streams.add(stream)
        self._tg.start_soon(stream._ship)
        return stream

    # ------------------------------------------------------------------ spool left behind
    async def deliver_spooled(self, spool_key: str, *, deadline: float) -> DeliveryReport:
        """Deliver the spool files of ``spool_key`` (an orphaned execution) by ``deadline``.

        Returns what this call and the start-up recovery delivered for the key, and what is still
        spooled when the deadline passes.
        """
        report = _NOTHING
        live = self._live_paths()
        lock = self._key_locks.setdefault(spool_key, anyio.Lock())
        acquired = False
        with anyio.CancelScope(deadline=deadline):
            await lock.acquire()
            acquired = True
        try:
            for path in spooling.files_for_key(self.spool_dir, spool_key):
                if path in live:
                    continue
                if acquired and anyio.current_time() < deadline:
                    report += await self._deliver_file(path, deadline)
                else:
                    report += DeliveryReport(0, self._pending_in(path), 0)
        finally:
            if acquired:
                lock.release()
        return self._recovered.pop(spool_key, _NOTHING) + report

    async def _recover_previous(self, paths: list[Path]) -> None:
        groups: dict[str, list[tuple[int, Path, str]]] = defaultdict(list)
        for path in paths:
            try:
                header = spooling.read_header(path)
            except (OSError, SpoolError) as exc:
                log.error("ignoring an unreadable log spool file", file=path.name, error=str(exc))
                _set_aside(path)
                continue
            groups[header.log_stream_id].append((header.created_ns, path, header.spool_key))
        if not groups:
            return
        log.info(
            "delivering job logs spooled by a previous runner process", files=len(paths), streams=len(groups)
        )
        limiter = anyio.CapacityLimiter(_RECOVERY_CONCURRENCY)
        async with anyio.create_task_group() as tg:
            for entries in groups.values():
                tg.start_soon(self._recover_group, sorted(entries), limiter)

    async def _recover_group(
        self, entries: list[tuple[int, Path, str]], limiter: anyio.CapacityLimiter
    ) -> None:
        async with limiter:
            for _, path, key in entries:
                lock = self._key_locks.setdefault(key, anyio.Lock())
                async with lock:
                    if not path.exists():
                        continue
                    report = await self._deliver_file(path, math.inf)
                    self._recovered[key] = self._recovered.get(key, _NOTHING) + report

    async def _deliver_file(self, path: Path, deadline: float) -> DeliveryReport:
        try:
            spool = SpoolFile.open_existing(path)
        except FileNotFoundError:
            return _NOTHING
        except (OSError, SpoolError) as exc:
            log.error("ignoring an unreadable log spool file", file=path.name, error=str(exc))
            _set_aside(path)
            return _NOTHING
        stream = JobLogStream(
            self._shared,
            log_stream_id=spool.header.log_stream_id,
            write_token=None,
            attrs={},
            redactor=Redactor(),
            spool_key=spool.header.spool_key,
            adopt=spool,
        )
        self._recovering[path] = stream
        try:
            report = await stream.deliver_adopted(deadline)
        finally:
            self._recovering.pop(path, None)
        log.info(
            "delivered spooled job logs",
            file=path.name,
            log_stream_id=spool.header.log_stream_id,
            delivered=report.delivered,
            spooled=report.spooled,
            lost=report.lost,
        )
        return report

    def _pending_in(self, path: Path) -> int:
        stream = self._recovering.get(path)
        if stream is not None and stream.spool is not None:
            return stream.spool.pending
        try:
            return spooling.count_pending(path)
        except (OSError, SpoolError):
            return 0

    def _live_paths(self) -> set[Path]:
        return {s.spool.path for s in self._shared.streams if s.spool is not None}

    def stats(self) -> dict[str, Any]:
        """Counters and queue depths, for /metrics and debugging."""
        return {
            "shipped": self.metrics.shipped,
            "spooled": self.metrics.spooled,
            "lost": self.metrics.lost,
            "export_failures": self.metrics.export_failures,
            "open_streams": len(self._shared.streams),
        }


def _set_aside(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.rename(path.with_name(path.name + ".corrupt"))
