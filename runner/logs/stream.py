"""One job's log stream: an in-memory queue, a shipper task, and a spool file when needed.

Why this shape: the reference runner batches 25 records every 5 s and loses the tail of a job's
log when its flush runs with an already-cancelled context (reference-runner.md §5.1). Here:

* ``JobLogger`` calls append a tuple to a deque and return (no lock, no I/O, no exception);
* one shipper task per stream takes batches in order, masks and encodes them, and POSTs them;
  while one POST is in flight the next batch is encoded, so the connection stays busy;
* when the control plane is unreachable (transport error, 408, 429, 5xx) the failed batch,
  anything already taken after it, and the queue go to the stream's spool file, in order; the
  shipper then delivers from the spool with exponential backoff and full jitter, and returns to
  memory once the spool is drained. A deque that outgrows ``memory_max_records`` (a producer
  faster than the shipper) spills to the spool too: memory stays bounded and nothing is dropped;
* a batch the server refuses (400, 413, ...) is split in halves until the bad records are
  isolated; those are counted as lost and reported, never retried forever. A 404 (no such log
  stream) loses the batch. A 401 with the log stream's write token falls back, once, to the
  runner token;
* ``close`` flushes everything within its own deadline, shielded from the job's cancellation;
  what is still undelivered then stays in the spool (fsynced) and is counted.

Ordering invariant (the spool holds the oldest undelivered records, memory the newest): a batch
is taken from memory only when every spooled frame has been taken, and whoever spills to the
spool first spills the batches taken from memory that are still in flight.
"""

from __future__ import annotations

import enum
import gzip
import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import structlog

from runner.api.client import NO_RETRY, APIError, RunnerClient, TransportError, Unauthorized
from runner.logs.otlp import SEVERITIES, attributes_blob, encode_record, export_request, resource_bytes
from runner.logs.records import Bound, DeliveryReport, JobLogger, LogMetrics, LogRecord, RawRecord
from runner.logs.spool import SpoolFile, SpoolHeader, spool_path
from runner.redact import Redactor

log = structlog.get_logger("runner.logs")

_now_ns = time.time_ns
_ENCODE_SLICE = 256  # records encoded between two yields to the event loop
_ATTR_CACHE_MAX = 4096
#: Requests one refused batch may cost while its bad records are isolated by halving.
_SPLIT_BUDGET = 48


@dataclass
class ShipperSettings:
    batch_max_records: int = 1000
    batch_max_bytes: int = 1_000_000
    flush_interval: float = 0.2
    memory_max_records: int = 20_000
    #: Bodies at least this large are sent gzip-compressed (None: never).
    compress_min_bytes: int | None = 8 * 1024
    post_timeout: float = 30.0
    backoff_base: float = 0.1
    backoff_max: float = 5.0


@dataclass
class Shared:
    """What the pipeline shares with its streams (and may change while they run)."""

    client: RunnerClient
    spool_dir: Path
    settings: ShipperSettings
    metrics: LogMetrics
    tee: Callable[[LogRecord], None] | None
    resource_attrs: dict[str, str]
    enabled: bool = True
    gzip_ok: bool = True
    resource: bytes = b""
    streams: set[JobLogStream] = field(default_factory=set)
    tee_failed: bool = False

    def __post_init__(self) -> None:
        self.resource = resource_bytes(self.resource_attrs)


class _Status(enum.Enum):
    OK = "ok"
    UNAVAILABLE = "unavailable"  # retry later, from the spool
    REJECTED = "rejected"  # this content is refused: split it
    DROP = "drop"  # nothing sent to this stream can succeed (404): lose the batch


class _Batch:
    """Frames taken from the queue or the spool, in order, on their way to the server.

    A batch taken from memory is encoded a slice at a time (``raw`` holds what is left);
    ``spool_range`` is set once its frames are also in the spool file.
    """

    __slots__ = ("frames", "pos", "raw", "spool_range")

    def __init__(
        self,
        frames: list[bytes] | None = None,
        raw: list[RawRecord] | None = None,
        spool_range: tuple[int, int] | None = None,
    ) -> None:
        self.frames: list[bytes] = frames if frames is not None else []
        self.raw = raw
        self.pos = 0
        self.spool_range = spool_range

    def encode_some(self, stream: JobLogStream, count: int | None = None) -> None:
        raw = self.raw
        if raw is None:
            return
        end = len(raw) if count is None else min(len(raw), self.pos + count)
        self.frames.extend(stream._encode(raw[self.pos : end]))
        self.pos = end
        if end >= len(raw):
            self.raw = None


class JobLogStream:
    """The records of one job execution, shipped in order to one log stream."""

    def __init__(
        self,
        shared: Shared,
        *,
        log_stream_id: str | None,
        write_token: str | None,
        attrs: Mapping[str, Any],
        redactor: Redactor,
        spool_key: str,
        adopt: SpoolFile | None = None,
    ) -> None:
        self._shared = shared
        self._settings = shared.settings
        self.log_stream_id = log_stream_id or None
        self.spool_key = spool_key
        self._write_token = write_token or None
        self._use_write_token = self._write_token is not None
        self._redactor = redactor
        self._q: deque[RawRecord] = deque()
        self._lock = threading.RLock()
        self._loop_thread = threading.get_ident()
        self._spool = adopt
        self._own_resource = (
            resource_bytes(adopt.header.resource) if adopt and adopt.header.resource else None
        )
        self._inflight: list[_Batch] = []
        self._closing = adopt is not None
        self._closed = False
        self._event: anyio.Event | None = None
        self._stopped = anyio.Event()
        self._scope: anyio.CancelScope | None = None
        self._report: DeliveryReport | None = None
        self._delivered = 0
        self._lost = 0
        self._failures_in_row = 0
        self._attr_cache: dict[tuple[Bound, str, str], bytes] = {}
        self._attr_cache_generation = -1
        self._batch_max = max(1, self._settings.batch_max_records)
        self._memory_max = max(self._batch_max, self._settings.memory_max_records)
        self._flush = max(0.0, self._settings.flush_interval)
        self._logger = JobLogger(self._emit, Bound(attrs))

    @property
    def logger(self) -> JobLogger:
        return self._logger

    @property
    def spool(self) -> SpoolFile | None:
        return self._spool

    def __repr__(self) -> str:
        return f"<JobLogStream {self.spool_key} log_stream={self.log_stream_id} queued={len(self._q)}>"

    # ================================================================== emitting (hot path)
    def _emit(self, severity: int, message: str, attrs: dict[str, Any] | None, bound: Bound) -> None:
        try:
            if self._closed:
                self._lost += 1
                self._shared.metrics.lost += 1
                return
            if message.__class__ is not str:
                message = str(message)
            q = self._q
            q.append((_now_ns(), severity, message, attrs, bound))
            n = len(q)
            if n == 1 or n == self._batch_max:
                self._notify()
            elif n > self._memory_max:
                self._overflow()
        except Exception:  # noqa: S110 - a log call must never fail a job
            pass

    def _notify(self) -> None:
        event = self._event
        if event is not None and threading.get_ident() == self._loop_thread:
            event.set()

    def _overflow(self) -> None:
        """The producer outran the shipper: move the queue to the spool (or the tee) now."""
        with self._lock:
            if len(self._q) <= self._memory_max or self._closed:
                return
            if not self._ships():
                self._consume_locally(self._drain_queue())
            else:
                # The oldest records only, a few batches at a time: each overflow pauses the
                # producer for a bounded time, and the newest records stay in memory.
                self._spill(
                    include_inflight=True, limit=len(self._q) - self._memory_max + 4 * self._batch_max
                )

    # ================================================================== encoding
    def _ships(self) -> bool:
        return self.log_stream_id is not None and self._shared.enabled

    def _drain_queue(self, limit: int | None = None) -> list[RawRecord]:
        q = self._q
        count = len(q) if limit is None else min(limit, len(q))
        return [q.popleft() for _ in range(count)]

    def _encode(self, chunk: Sequence[RawRecord]) -> list[bytes]:
        """Mask, tee and encode records into frames (records that fail to encode are counted lost).

        The hot loop of the pipeline: attribute bytes come from caches (per logger, and per
        ``(logger, key, value)`` for the one-attribute calls a child process makes per line).
        """
        redactor = self._redactor
        bodies = redactor.mask_many([r[2] for r in chunk])
        generation = redactor.generation
        cache = self._attr_cache
        if generation != self._attr_cache_generation:
            cache.clear()
            self._attr_cache_generation = generation
        encode = encode_record
        frames: list[bytes] = []
        append = frames.append
        for (ts, severity, _, attrs, bound), body in zip(chunk, bodies, strict=True):
            try:
                if not attrs:
                    blob = bound.blob(redactor, generation)
                else:
                    cached = None
                    if len(attrs) == 1:
                        ((key, value),) = attrs.items()
                        if value.__class__ is str:
                            cached = cache.get((bound, key, value))
                    blob = cached if cached is not None else self._attributes(attrs, bound, generation)
                append(encode(ts, severity, body, blob))
            except Exception as exc:  # noqa: BLE001 - one bad record must not stop the stream
                self._lose(1, f"unencodable record: {type(exc).__name__}")
        tee = self._shared.tee
        if tee is not None:
            for (ts, severity, _, attrs, bound), body in zip(chunk, bodies, strict=True):
                self._tee(tee, ts, severity, body, attrs, bound)
        return frames

    def _attributes(self, attrs: dict[str, Any], bound: Bound, generation: int) -> bytes:
        """Serialized attributes of a record with per-call ``attrs``; one string attribute (such
        as ``stream=stdout`` on every line of a child process) is cached."""
        blob = self._attributes_slow(attrs, bound, generation)
        if len(attrs) == 1 and len(self._attr_cache) < _ATTR_CACHE_MAX:
            ((key, value),) = attrs.items()
            if value.__class__ is str:
                self._attr_cache[(bound, key, value)] = blob
        return blob

    def _attributes_slow(self, attrs: dict[str, Any], bound: Bound, generation: int) -> bytes:
        mask = self._redactor.mask
        if not bound.keys.isdisjoint(attrs):
            return attributes_blob({**bound.attrs, **attrs}, mask)
        return bound.blob(self._redactor, generation) + attributes_blob(attrs, mask)

    def _tee(
        self,
        tee: Callable[[LogRecord], None],
        ts: int,
        severity: int,
        body: str,
        attrs: dict[str, Any] | None,
        bound: Bound,
    ) -> None:
        number, text = SEVERITIES[severity]
        merged = {**bound.attrs, **attrs} if attrs else bound.attrs
        mask = self._redactor.mask
        shown = {k: (mask(v) if isinstance(v, str) else v) for k, v in merged.items() if v is not None}
        try:
            tee(LogRecord(ts, number, text, body, shown))
        except Exception as exc:  # noqa: BLE001 - a broken tee must not stop shipping
            if not self._shared.tee_failed:
                self._shared.tee_failed = True
                log.warning("job log tee failed", error=f"{type(exc).__name__}: {exc}")

    def _consume_locally(self, records: Sequence[RawRecord]) -> None:
        """Records that are not shipped (no log stream, or logging disabled): tee and count them."""
        if not records:
            return
        tee = self._shared.tee
        if tee is not None:
            bodies = self._redactor.mask_many([r[2] for r in records])
            for (ts, severity, _, attrs, bound), body in zip(records, bodies, strict=True):
                self._tee(tee, ts, severity, body, attrs, bound)
        self._delivered += len(records)

    def _lose(self, count: int, reason: str) -> None:
        if count <= 0:
            return
        self._lost += count
        self._shared.metrics.lost += count
        log.warning("job log records lost", count=count, reason=reason, log_stream_id=self.log_stream_id)

    # ================================================================== the spool
    def _ensure_spool(self) -> SpoolFile:
        if self._spool is None:
            assert self.log_stream_id is not None
            created = _now_ns()
            header = SpoolHeader(
                spool_key=self.spool_key,
                log_stream_id=self.log_stream_id,
                created_ns=created,
                resource=dict(self._shared.resource_attrs),
            )
            self._spool = SpoolFile.create(
                spool_path(self._shared.spool_dir, self.spool_key, created), header
            )
        return self._spool

    def _spill(self, *, include_inflight: bool, limit: int | None = None) -> bool:
        """Move in-flight memory batches (in order), then the oldest queued records (all, or
        ``limit``) to the spool. The lock is held. False when no spool file can be written: the
        queued records are then lost (counted), in-flight batches are left to the caller."""
        try:
            spool = self._ensure_spool()
        except OSError as exc:
            log.error("cannot create a log spool file", error=str(exc), spool_key=self.spool_key)
            self._lose(len(self._drain_queue(limit)), "spool unavailable")
            return False
        metrics = self._shared.metrics
        try:
            if include_inflight:
                for batch in self._inflight:
                    if batch.spool_range is None:
                        batch.encode_some(self)
                        start, end = spool.append(batch.frames)
                        batch.spool_range = (start, end)
                        if spool.cursor == start:
                            spool.cursor = end  # in flight already: not to be taken again
                        metrics.spooled += len(batch.frames)
            left = len(self._q) if limit is None else min(limit, len(self._q))
            while left > 0:
                chunk = self._drain_queue(min(left, self._batch_max))
                left -= len(chunk)
                frames = self._encode(chunk)
                spool.append(frames)
                metrics.spooled += len(frames)
            spool.flush()
        except OSError as exc:
            log.error("cannot write to a log spool file", error=str(exc), spool_key=self.spool_key)
        return True

    def _spill_everything(self) -> None:
        """After a failed POST or at close: in-flight memory batches and the whole queue to disk."""
        if not self._spill(include_inflight=True):
            unspooled = [b for b in self._inflight if b.spool_range is None]
            self._lose(
                sum(len(b.frames) + (len(b.raw) - b.pos if b.raw else 0) for b in unspooled),
                "spool unavailable",
            )
            self._inflight = [b for b in self._inflight if b.spool_range is not None]

    # ================================================================== shipping
    async def _ship(self) -> None:
        """The shipper task: runs until the stream is closed and drained, or cancelled."""
        try:
            if self._closed:
                return
            with anyio.CancelScope() as scope:
                self._scope = scope
                await self._ship_loop()
        except Exception:
            log.exception(
                "job log shipper failed", log_stream_id=self.log_stream_id, spool_key=self.spool_key
            )
        finally:
            self._stopped.set()

    async def _ship_loop(self) -> None:
        pending: _Batch | None = None
        while True:
            if pending is None:
                if not await self._wait_for_work():
                    break
                pending = await self._take(only_if_ready=False)
                if pending is None:
                    continue
            outcome: list[bool] = []
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._send_into, pending, outcome)
                following = await self._take(only_if_ready=True)
            if outcome and outcome[0]:
                self._resolve(pending)
                if self._failures_in_row:
                    log.info(
                        "job log delivery resumed",
                        log_stream_id=self.log_stream_id,
                        spooled=self._spool.pending if self._spool else 0,
                    )
                    self._failures_in_row = 0
                pending = following
            else:
                with self._lock:
                    self._spill_everything()
                    self._inflight.clear()
                    if self._spool is not None:
                        self._spool.rewind()
                pending = None
                await self._backoff()

    async def _wait_for_work(self) -> bool:
        """Until a batch is due; False when the stream is closing and everything is resolved."""
        while True:
            spool = self._spool
            if spool is not None and spool.has_untaken:
                return True
            n = len(self._q)
            if n >= self._batch_max:
                return True
            if self._closing:
                return n > 0
            timeout = max(self._flush, 0.1)  # idle: also catches records emitted from other threads
            if n:
                try:
                    age = (_now_ns() - self._q[0][0]) / 1e9
                except IndexError:
                    continue
                timeout = min(self._flush - age, self._flush)
                if timeout <= 0:
                    return True
            event = self._event = anyio.Event()
            with anyio.move_on_after(max(timeout, 0.001)):
                await event.wait()

    async def _take(self, *, only_if_ready: bool) -> _Batch | None:
        """The next batch in order: from the spool first, else from memory (encoded in slices)."""
        with self._lock:
            spool = self._spool
            if spool is not None and spool.has_untaken:
                frames, start, end = spool.take(self._batch_max, self._settings.batch_max_bytes)
                if not frames:
                    return None
                batch = _Batch(frames=frames, spool_range=(start, end))
                self._inflight.append(batch)
                return batch
            n = len(self._q)
            if n == 0 or (only_if_ready and n < self._batch_max and not self._closing):
                return None
            raw = self._drain_queue(self._batch_max)
            if not self._ships():
                self._consume_locally(raw)
                return None
            batch = _Batch(raw=raw)
            self._inflight.append(batch)
        while batch.raw is not None:
            with self._lock:
                batch.encode_some(self, _ENCODE_SLICE)
            if batch.raw is not None:
                await anyio.lowlevel.checkpoint()
        if not batch.frames:
            self._resolve(batch)
            return None
        return batch

    def _resolve(self, batch: _Batch) -> None:
        """Every frame of ``batch`` was delivered or counted lost."""
        with self._lock:
            if batch in self._inflight:
                self._inflight.remove(batch)
            spool = self._spool
            if spool is None:
                return
            if batch.spool_range is not None:
                spool.commit(batch.spool_range[1], len(batch.frames))
            if not self._inflight and spool.drained() and not spool.closed:
                spool.reset()

    async def _send_into(self, batch: _Batch, outcome: list[bool]) -> None:
        outcome.append(await self._send(batch))

    async def _send(self, batch: _Batch) -> bool:
        """POST a batch (in requests of at most ``batch_max_bytes``). False: unavailable, and the
        batch now holds only its undelivered suffix."""
        frames = batch.frames
        limit = self._settings.batch_max_bytes
        i = 0
        while i < len(frames):
            j, size = i, 0
            while j < len(frames) and (j == i or size + len(frames[j]) <= limit):
                size += len(frames[j])
                j += 1
            resolved = await self._deliver(frames[i:j], [_SPLIT_BUDGET])
            if resolved < j - i:
                self._trim(batch, i + resolved)
                return False
            i = j
        return True

    def _trim(self, batch: _Batch, resolved: int) -> None:
        if resolved <= 0:
            return
        with self._lock:
            head, batch.frames = batch.frames[:resolved], batch.frames[resolved:]
            if batch.spool_range is not None and self._spool is not None:
                start = batch.spool_range[0] + sum(len(f) for f in head)
                self._spool.commit(start, len(head))
                batch.spool_range = (start, batch.spool_range[1])

    async def _deliver(self, frames: list[bytes], budget: list[int]) -> int:
        """How many frames from the start were resolved (delivered or lost) before an outage.

        A refused request is split in halves to isolate the records the server will not take;
        ``budget`` caps the requests spent on that, so a server refusing everything costs a few
        dozen requests per batch, not one per record.
        """
        if budget[0] <= 0:
            self._lose(len(frames), "records rejected by the server")
            return len(frames)
        budget[0] -= 1
        status = await self._post(frames)
        if status is _Status.OK:
            self._delivered += len(frames)
            self._shared.metrics.shipped += len(frames)
            return len(frames)
        if status is _Status.UNAVAILABLE:
            return 0
        if status is _Status.DROP:
            self._lose(len(frames), "log stream not found")
            return len(frames)
        if budget[0] == _SPLIT_BUDGET - 1:
            log.warning(
                "the control plane rejected a log batch; isolating the records it refuses",
                records=len(frames),
                log_stream_id=self.log_stream_id,
            )
        if len(frames) == 1:
            self._lose(len(frames), "records rejected by the server")
            return len(frames)
        middle = len(frames) // 2
        left = await self._deliver(frames[:middle], budget)
        if left < middle:
            return left
        return middle + await self._deliver(frames[middle:], budget)

    async def _post(self, frames: Sequence[bytes]) -> _Status:
        shared = self._shared
        body = export_request(self._own_resource or shared.resource, frames)
        path = f"/v1/log-streams/{self.log_stream_id}/logs"
        for _ in range(3):  # at most one token fallback and one compression fallback
            headers = {"Content-Type": "application/x-protobuf"}
            content = body
            compressed = False
            threshold = self._settings.compress_min_bytes
            if shared.gzip_ok and threshold is not None and len(body) >= threshold:
                content = gzip.compress(body, compresslevel=1)
                headers["Content-Encoding"] = "gzip"
                compressed = True
            token = self._write_token if self._use_write_token else None
            if token:
                headers["Authorization"] = f"Bearer {token}"
            try:
                await shared.client.request(
                    "POST",
                    path,
                    content=content,
                    headers=headers,
                    timeout=self._settings.post_timeout,
                    retry=NO_RETRY,
                )
                return _Status.OK
            except Unauthorized:
                shared.metrics.export_failures += 1
                if token:
                    self._use_write_token = False
                    log.warning(
                        "log stream write token refused; falling back to the runner token",
                        log_stream_id=self.log_stream_id,
                    )
                    continue
                self._note_failure("unauthorized (401) with the runner token")
                return _Status.UNAVAILABLE
            except APIError as exc:
                shared.metrics.export_failures += 1
                if exc.status in (408, 429) or exc.status >= 500:
                    self._note_failure(f"HTTP {exc.status}")
                    return _Status.UNAVAILABLE
                if compressed and exc.status in (400, 415):
                    shared.gzip_ok = False
                    log.warning("the control plane refused a gzip log body; sending uncompressed from now on")
                    continue
                if exc.status in (404, 410):
                    return _Status.DROP
                log.debug("the control plane rejected log records", status=exc.status, records=len(frames))
                return _Status.REJECTED
            except TransportError as exc:
                shared.metrics.export_failures += 1
                self._note_failure(str(exc))
                return _Status.UNAVAILABLE
            except Exception as exc:  # noqa: BLE001 - anything else: keep the records, retry later
                shared.metrics.export_failures += 1
                self._note_failure(f"{type(exc).__name__}: {exc}")
                return _Status.UNAVAILABLE
        return _Status.UNAVAILABLE

    def _note_failure(self, reason: str) -> None:
        self._failures_in_row += 1
        if self._failures_in_row == 1:
            log.warning(
                "cannot deliver job logs; spooling to disk and retrying",
                log_stream_id=self.log_stream_id,
                reason=reason,
            )

    async def _backoff(self) -> None:
        attempt = max(0, self._failures_in_row - 1)
        cap = min(self._settings.backoff_max, self._settings.backoff_base * (2 ** min(attempt, 30)))
        await anyio.sleep(random.uniform(cap / 2, cap))
        with self._lock:
            if self._q:  # keep the outage's records on disk, not in memory
                self._spill(include_inflight=False)

    # ================================================================== closing
    async def close(self, *, deadline: float) -> DeliveryReport:
        """Deliver everything (memory and spool) by ``deadline``, shielded from outer cancellation.

        What is still undelivered then stays in the spool file (fsynced) and is counted in
        ``spooled``. Idempotent: a second call returns the first report.
        """
        if self._report is not None:
            return self._report
        self._closing = True
        self._notify()
        with anyio.CancelScope(shield=True, deadline=deadline):
            await self._stopped.wait()
        if not self._stopped.is_set() and self._scope is not None:
            self._scope.cancel()
            with anyio.CancelScope(shield=True) as scope:
                scope.deadline = anyio.current_time() + 5
                await self._stopped.wait()
        return self._finish()

    def _finish(self) -> DeliveryReport:
        self._persist()
        self._shared.streams.discard(self)
        spooled = self._spool.pending if self._spool is not None else 0
        self._report = DeliveryReport(delivered=self._delivered, spooled=spooled, lost=self._lost)
        if spooled:
            log.warning(
                "job log records left in the spool",
                spooled=spooled,
                log_stream_id=self.log_stream_id,
                file=self._spool.path.name if self._spool else None,
            )
        return self._report

    def _persist(self) -> None:
        """Put whatever is not delivered on disk and close the spool (synchronous, idempotent)."""
        with self._lock:
            self._closed = True
            if not self._ships():
                self._consume_locally(self._drain_queue())
            if self.log_stream_id is not None and (
                self._q or any(b.spool_range is None for b in self._inflight)
            ):
                self._spill_everything()
            self._inflight.clear()
            if self._spool is not None and not self._spool.closed:
                try:
                    self._spool.close()
                except OSError as exc:
                    log.error("cannot close a log spool file", error=str(exc), spool_key=self.spool_key)

    async def deliver_adopted(self, deadline: float = math.inf) -> DeliveryReport:
        """For a stream adopting a spool file left behind: deliver it, by ``deadline``."""
        with anyio.CancelScope(deadline=deadline):
            await self._ship()
        return self._finish()
