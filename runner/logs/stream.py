"""One job's log stream: an in-memory queue, a shipper task, and a spool file when needed.

Why this shape: the reference runner batches 25 records every 5 s and loses the tail of a job's
log when its flush runs with an already-cancelled context (docs/runner-api.md §5). Here:

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

Delivered once (docs/runner-api.md §5.7): the stream numbers the frames it encodes (1, 2, 3,
... in order) and each request carries its range, under a writer id unique to this stream, in
``X-Byoc-Log-Range``; a batch keeps its numbers through retries, splits and the spool, so our
control plane skips a range it already stored (a request it buffered while stopped, then the
resend). The real server ignores the header.

Ordering invariant (the spool holds the oldest undelivered records, memory the newest): a batch
is taken from memory only when every spooled frame has been taken, and whoever spills to the
spool first spills the batches taken from memory that are still in flight.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import anyio
import anyio.lowlevel
import structlog

from runner.backoff import backoff_delay
from runner.logs.encoder import RecordEncoder
from runner.logs.export import Exporter, Status
from runner.logs.otlp import resource_bytes
from runner.logs.records import Bound, DeliveryReport, JobLogger, RawRecord
from runner.logs.shared import Shared
from runner.logs.spool import SpoolFile, SpoolHeader, SpoolWriteError, spool_path
from runner.redact import Redactor

log = structlog.get_logger("runner.logs")

_now_ns = time.time_ns
_ENCODE_SLICE = 256  # records encoded between two yields to the event loop
#: Requests one refused batch may cost while its bad records are isolated by halving.
_SPLIT_BUDGET = 48


class _Batch:
    """Frames taken from the queue or the spool, in order, on their way to the server.

    A batch taken from memory is encoded a slice at a time (``raw`` holds what is left);
    ``spool_range`` is set once its frames are also in the spool file.
    """

    __slots__ = ("first_frame", "first_seq", "frames", "pos", "raw", "spool_range")

    def __init__(
        self,
        frames: list[bytes] | None = None,
        raw: list[RawRecord] | None = None,
        spool_range: tuple[int, int] | None = None,
        first_seq: int = 0,
        first_frame: int = 0,
    ) -> None:
        self.frames: list[bytes] = frames if frames is not None else []
        self.raw = raw
        self.pos = 0
        self.spool_range = spool_range
        #: Sequence number of the first record (memory batches; 0 when unknown, from the spool).
        self.first_seq = first_seq
        #: The stream's number of the first frame (0: unknown, from a spool adopted after a crash).
        self.first_frame = first_frame

    def encode_some(self, stream: JobLogStream, count: int | None = None) -> None:
        raw = self.raw
        if raw is None:
            return
        end = len(raw) if count is None else min(len(raw), self.pos + count)
        new = stream._encode(raw[self.pos : end])
        if new and not self.frames:
            self.first_frame = stream._framed - len(new) + 1
        self.frames.extend(new)
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
        self._redactor = redactor
        self._encoder = RecordEncoder(shared, redactor, self._lose)
        self._exporter = (
            Exporter(
                shared,
                self.log_stream_id,
                write_token,
                resource_bytes(adopt.header.resource) if adopt and adopt.header.resource else None,
                writer=uuid.uuid4().hex,
            )
            if self.log_stream_id is not None
            else None
        )
        self._q: deque[RawRecord] = deque()
        #: Records taken off the queue so far: the next one's sequence number is this plus one.
        self._dequeued = 0
        #: Frames encoded for shipping so far: the next one's number is this plus one.
        self._framed = 0
        self._lock = threading.RLock()
        self._loop_thread = threading.get_ident()
        self._spool = adopt
        self._inflight: list[_Batch] = []
        self._closing = adopt is not None
        self._closed = False
        self._event: anyio.Event | None = None
        self._stopped = anyio.Event()
        self._scope: anyio.CancelScope | None = None
        self._report: DeliveryReport | None = None
        self._delivered = 0
        self._lost = 0
        self._batch_max = max(1, self._settings.batch_max_records)
        self._memory_max = max(self._batch_max, self._settings.memory_max_records)
        self._flush = max(0.0, self._settings.flush_interval)
        self._logger = JobLogger(self._emit, Bound(attrs))

    @property
    def delivered(self) -> int:
        """Records the server has accepted so far (grows while the stream ships)."""
        return self._delivered

    @property
    def backlog(self) -> int:
        """About how many records are not delivered yet (memory, in flight, spool)."""
        with self._lock:
            queued = len(self._q)
            inflight = sum(
                len(b.frames) + (len(b.raw) - b.pos if b.raw is not None else 0)
                for b in self._inflight
                if b.spool_range is None
            )
            spooled = self._spool.pending if self._spool is not None else 0
        return queued + inflight + spooled

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
        self._dequeued += count
        return [q.popleft() for _ in range(count)]

    def _encode(self, chunk: Sequence[RawRecord]) -> list[bytes]:
        """Frames for ``chunk``, numbered on from ``_framed`` (encoding happens in stream order)."""
        frames = self._encoder.encode(chunk)
        self._framed += len(frames)
        return frames

    def _consume_locally(self, records: Sequence[RawRecord]) -> None:
        """Records that are not shipped (no log stream, or logging disabled): tee and count them."""
        self._encoder.tee_only(records)
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

    def _spill(
        self, *, include_inflight: bool, limit: int | None = None, keep_on_failure: bool = False
    ) -> bool:
        """Move in-flight memory batches (in order), then the oldest queued records (all, or
        ``limit``) to the spool. The lock is held.

        Every record that can be neither written nor kept is counted lost, with its range of
        sequence numbers (``_lose_range``): a full disk must not turn 200,000 lost lines into
        "1 lost". With ``keep_on_failure`` queued records stay in memory instead (the queue is
        still bounded by the overflow path, which does drop and count). Returns False when the
        spool could not take everything; in-flight batches it could not take are left with no
        ``spool_range`` for the caller."""
        try:
            spool = self._ensure_spool()
        except OSError as exc:
            log.error("cannot create a log spool file", error=str(exc), spool_key=self.spool_key)
            if not keep_on_failure:
                self._lose_queued(limit, "spool unavailable")
            return False
        metrics = self._shared.metrics
        if include_inflight:
            for batch in self._inflight:
                if batch.spool_range is not None:
                    continue
                batch.encode_some(self)
                try:
                    start, end = spool.append(batch.frames, batch.first_frame)
                    spool.flush()
                except SpoolWriteError as exc:
                    log.error("cannot write to a log spool file", error=str(exc), spool_key=self.spool_key)
                    for other in self._inflight:  # the rolled-back bytes are no batch's any more
                        if other.spool_range is not None and other.spool_range[1] > spool.end:
                            other.spool_range = None
                    if not keep_on_failure:
                        self._lose_queued(limit, "disk full: the log spool cannot grow")
                    return False
                batch.spool_range = (start, end)
                if spool.cursor == start:
                    spool.cursor = end  # in flight already: not to be taken again
                metrics.spooled += len(batch.frames)
        left = len(self._q) if limit is None else min(limit, len(self._q))
        while left > 0:
            first = self._dequeued + 1
            chunk = self._drain_queue(min(left, self._batch_max))
            left -= len(chunk)
            frames = self._encode(chunk)
            try:
                spool.append(frames, self._framed - len(frames) + 1)
                spool.flush()
            except SpoolWriteError as exc:
                log.error("cannot write to a log spool file", error=str(exc), spool_key=self.spool_key)
                self._lose_range(first, len(chunk), "disk full: the log spool cannot grow")
                if keep_on_failure:
                    return False
                self._lose_queued(left, "disk full: the log spool cannot grow")
                return False
            metrics.spooled += len(frames)
        return True

    def _lose_queued(self, limit: int | None, reason: str) -> None:
        """Drop the oldest queued records (all, or ``limit``), counted with their range."""
        first = self._dequeued + 1
        self._lose_range(first, len(self._drain_queue(limit)), reason)

    def _lose_range(self, first: int, count: int, reason: str) -> None:
        """``count`` records from sequence number ``first`` (1-based, in emission order) lost."""
        if count <= 0:
            return
        self._lost += count
        self._shared.metrics.lost += count
        log.error(
            "job log records lost",
            count=count,
            first_seq=first,
            last_seq=first + count - 1,
            reason=reason,
            log_stream_id=self.log_stream_id,
            lost_total=self._lost,
        )

    def _spill_everything(self, *, keep_queue: bool = False) -> None:
        """After a failed POST or at close: in-flight memory batches and the whole queue to disk.
        In-flight batches that cannot be written are lost (counted, with their range)."""
        if not self._spill(include_inflight=True, keep_on_failure=keep_queue):
            unspooled = [b for b in self._inflight if b.spool_range is None]
            for batch in unspooled:
                count = len(batch.frames) + (len(batch.raw) - batch.pos if batch.raw else 0)
                if batch.first_seq:
                    self._lose_range(batch.first_seq, count, "disk full: the log spool cannot grow")
                else:
                    self._lose(count, "spool unavailable")
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
                if self._export().failures_in_row:
                    log.info(
                        "job log delivery resumed",
                        log_stream_id=self.log_stream_id,
                        spooled=self._spool.pending if self._spool else 0,
                    )
                    self._export().failures_in_row = 0
                pending = following
            else:
                with self._lock:
                    self._spill_everything(keep_queue=True)
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
                if spool.cut_frames:
                    self._lose(spool.cut_frames, "unreadable bytes in the log spool")
                    spool.cut_frames = 0
                if not frames:
                    return None
                batch = _Batch(frames=frames, spool_range=(start, end), first_frame=spool.frame_at(start))
                self._inflight.append(batch)
                return batch
            n = len(self._q)
            if n == 0 or (only_if_ready and n < self._batch_max and not self._closing):
                return None
            first = self._dequeued + 1
            raw = self._drain_queue(self._batch_max)
            if not self._ships():
                self._consume_locally(raw)
                return None
            batch = _Batch(raw=raw, first_seq=first)
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
            first = batch.first_frame + i if batch.first_frame else 0
            resolved = await self._deliver(frames[i:j], [_SPLIT_BUDGET], first)
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
            if batch.first_seq:
                batch.first_seq += resolved
            if batch.first_frame:
                batch.first_frame += resolved
            if batch.spool_range is not None and self._spool is not None:
                start = batch.spool_range[0] + sum(len(f) for f in head)
                self._spool.note_frame(start, batch.first_frame)
                self._spool.commit(start, len(head))
                batch.spool_range = (start, batch.spool_range[1])

    async def _deliver(self, frames: list[bytes], budget: list[int], first: int = 0) -> int:
        """How many frames from the start were resolved (delivered or lost) before an outage.
        ``first`` is the number of the first frame (0: unknown; then the request has no range).

        A refused request is split in halves to isolate the records the server will not take;
        ``budget`` caps the requests spent on that, so a server refusing everything costs a few
        dozen requests per batch, not one per record.
        """
        if budget[0] <= 0:
            self._lose(len(frames), "records rejected by the server")
            return len(frames)
        budget[0] -= 1
        status = await self._export().post(frames, first)
        if status is Status.OK:
            self._delivered += len(frames)
            self._shared.metrics.shipped += len(frames)
            return len(frames)
        if status is Status.UNAVAILABLE:
            exporter = self._export()
            if exporter.server_errors_in_row < self._settings.server_error_attempts:
                return 0
            # A batch the server keeps failing on (5xx): set aside, counted, and move on.
            attempts = exporter.server_errors_in_row
            exporter.set_aside(self.spool_key, frames)
            self._lose(len(frames), f"set aside after {attempts} HTTP 5xx answers in a row")
            return len(frames)
        if status is Status.DROP:
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
        left = await self._deliver(frames[:middle], budget, first)
        if left < middle:
            return left
        return middle + await self._deliver(frames[middle:], budget, first + middle if first else 0)

    def _export(self) -> Exporter:
        assert self._exporter is not None, "only streams with a log stream ship"
        return self._exporter

    async def _backoff(self) -> None:
        attempt = max(0, self._export().failures_in_row - 1)
        await anyio.sleep(
            backoff_delay(
                attempt, base=self._settings.backoff_base, cap=self._settings.backoff_max, jitter="equal"
            )
        )
        with self._lock:
            if self._q:  # keep the outage's records on disk, not in memory (disk full: memory)
                self._spill(include_inflight=False, keep_on_failure=True)

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
                except SpoolWriteError as exc:
                    self._lose(exc.frames, "disk full: the log spool cannot grow")
                except OSError as exc:
                    log.error("cannot close a log spool file", error=str(exc), spool_key=self.spool_key)

    async def deliver_adopted(self, deadline: float = math.inf) -> DeliveryReport:
        """For a stream adopting a spool file left behind: deliver it, by ``deadline``."""
        with anyio.CancelScope(deadline=deadline):
            await self._ship()
        return self._finish()
