"""The on-disk spool of one job's undelivered log records.

Why: when the control plane is unreachable, records must neither be dropped (other agents lose
the tail of their logs exactly there, peer-agents.md "Lost or truncated logs") nor pile up in
memory. They are appended, in order, to a file per job under the runner's state dir, shipped
from it once the server is back, and delivered by the next process after a crash.

Layout, little-endian::

    magic "BYOCLOG\\x01" | committed offset u64 | header length u32 | header JSON | frames...

A frame is a ``ScopeLogs.log_records`` field exactly as sent (tag 0x12, varint length, the
serialized ``LogRecord``), so the frames are length-prefixed records and a batch read from disk
goes on the wire without re-encoding. ``committed`` is the offset of the first frame the server
has not acknowledged; it is rewritten in place after each delivered batch, so a restart resends
at most one batch. A torn last frame (crash mid-write) is cut off when the file is reopened.
Secrets never reach the file: records are masked before they are encoded, and the log stream's
write token is not stored (recovered records are sent with the runner token).

Frame numbers (docs/runner-api.md §5.7): the stream numbers the frames it encodes, 1, 2, 3, ...,
and sends each request's range so our control plane can skip a range it already stored. The
spool keeps, in memory only, the number of the frame at each batch boundary (``frame_at``) and
the offsets where the numbering jumps (frames lost in between) or is unknown; a ``take`` never
crosses such an offset, so every batch taken is a dense range. A file adopted from a previous
process has no numbers: its batches are sent without a range.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import json
import os
import re
import struct
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

MAGIC = b"BYOCLOG\x01"
_HEAD = struct.Struct("<8sQI")
_COMMITTED = struct.Struct("<Q")
_COMMITTED_OFFSET = 8
SUFFIX = ".spool"
_READ_CHUNK = 1 << 20
_MAX_FRAME_HEAD = 11  # tag byte + a varint of at most 10 bytes

log = structlog.get_logger("runner.logs.spool")


class SpoolError(Exception):
    """A spool file that cannot be read (wrong magic, unreadable header)."""


class SpoolWriteError(OSError):
    """Buffered frames could not be written (disk full, I/O error). The file was cut back to its
    last complete frame and ``end``/``pending`` no longer count the ``frames`` that were dropped:
    the caller counts them as lost."""

    def __init__(self, frames: int, cause: OSError) -> None:
        super().__init__(cause.errno, f"{frames} log frames not written: {cause.strerror or cause}")
        self.frames = frames


@dataclass(frozen=True)
class SpoolHeader:
    spool_key: str
    log_stream_id: str
    created_ns: int = field(default_factory=time.time_ns)
    resource: dict[str, str] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "spool_key": self.spool_key,
                "log_stream_id": self.log_stream_id,
                "created_ns": self.created_ns,
                "resource": self.resource,
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> SpoolHeader:
        raw = json.loads(data)
        return cls(
            spool_key=str(raw["spool_key"]),
            log_stream_id=str(raw["log_stream_id"]),
            created_ns=int(raw.get("created_ns") or 0),
            resource={str(k): str(v) for k, v in (raw.get("resource") or {}).items()},
        )


def safe_key(spool_key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", spool_key)[:120] or "_"


def spool_path(spool_dir: Path, spool_key: str, created_ns: int) -> Path:
    """One file per stream; the creation time keeps several files of one key apart and ordered."""
    return spool_dir / f"{safe_key(spool_key)}.{created_ns}{SUFFIX}"


def files_for_key(spool_dir: Path, spool_key: str) -> list[Path]:
    prefix = safe_key(spool_key) + "."
    if not spool_dir.is_dir():
        return []
    return sorted(
        (p for p in spool_dir.iterdir() if p.name.startswith(prefix) and p.name.endswith(SUFFIX)),
        key=_created_from_name,
    )


def all_files(spool_dir: Path) -> list[Path]:
    if not spool_dir.is_dir():
        return []
    return sorted((p for p in spool_dir.iterdir() if p.name.endswith(SUFFIX)), key=_created_from_name)


def _created_from_name(path: Path) -> tuple[int, str]:
    stem = path.name[: -len(SUFFIX)]
    _, _, created = stem.rpartition(".")
    return (int(created) if created.isdigit() else 0, path.name)


class SpoolFile:
    """An append-only file of frames with a committed offset and a read cursor.

    ``committed <= cursor <= end``: frames before ``committed`` are delivered, frames between
    ``committed`` and ``cursor`` are taken by the shipper (in flight), frames after ``cursor``
    wait. ``pending`` counts the frames after ``committed``.
    """

    def __init__(
        self, path: Path, header: SpoolHeader, fd: int, data_start: int, committed: int, end: int
    ) -> None:
        self.path = path
        self.header = header
        self._fd = fd
        self._data_start = data_start
        self.committed = committed
        self.cursor = committed
        self.end = end
        self.pending = 0
        self._buffer: list[bytes] = []
        self._buffered = 0
        #: Frames that were cut off as unreadable since the owner last looked (it counts them lost).
        self.cut_frames = 0
        self.closed = False
        #: Offset -> number of the frame starting there, at batch boundaries (not persisted).
        self._numbers: dict[int, int] = {}
        self._numbers_pruned = 64
        #: Sorted offsets where the numbering jumps or becomes unknown: takes stop before them.
        self._breaks: list[int] = []
        #: The number the next appended frame gets if nothing is lost in between (0: unknown).
        self._next_number = 0

    # ------------------------------------------------------------------ opening
    @classmethod
    def create(cls, path: Path, header: SpoolHeader) -> SpoolFile:
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = header.to_bytes()
        data_start = _HEAD.size + len(meta)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, _HEAD.pack(MAGIC, data_start, len(meta)) + meta)
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        return cls(path, header, fd, data_start, data_start, data_start)

    @classmethod
    def open_existing(cls, path: Path) -> SpoolFile:
        """Reopen a file left by a stream (this process or a previous one) to deliver the rest."""
        fd = os.open(path, os.O_RDWR)
        try:
            header, data_start, committed = _read_head(fd, path.name)
            size = os.fstat(fd).st_size
            committed = min(max(committed, data_start), size)
            spool = cls(path, header, fd, data_start, committed, size)
        except BaseException:
            os.close(fd)
            raise
        count, valid_end = spool._scan(committed, size)
        if valid_end < size:
            log.warning(
                "cutting a torn or corrupt tail off a log spool file",
                file=path.name,
                bytes=size - valid_end,
            )
            os.ftruncate(fd, valid_end)
            spool.end = valid_end
        spool.pending = count
        return spool

    def _scan(self, start: int, end: int) -> tuple[int, int]:
        """(frames, end of the last complete frame) between ``start`` and ``end``."""
        count = 0
        pos = start
        for _, frame_end in self._frames(start, end):
            count += 1
            pos = frame_end
        return count, pos

    def _frames(self, start: int, end: int) -> Iterator[tuple[int, int]]:
        return _frames(self._fd, start, end)

    # ------------------------------------------------------------------ writing
    def append(self, frames: Sequence[bytes], first_number: int = 0) -> tuple[int, int]:
        """Append frames (buffered until ``flush``); returns their (start, end) offsets.

        ``first_number`` is the stream's number of the first frame (0: unknown)."""
        start = self.end
        size = sum(len(f) for f in frames)
        if frames:
            if first_number != self._next_number:  # a jump, or known <-> unknown
                if not self._breaks or self._breaks[-1] != start:
                    self._breaks.append(start)
                self._numbers.pop(start, None)
            if first_number:
                self._numbers[start] = first_number
                self._next_number = first_number + len(frames)
            else:
                self._next_number = 0
        self._buffer.extend(frames)
        self._buffered += size
        self.end += size
        if frames and first_number:
            self._numbers[self.end] = self._next_number
        self.pending += len(frames)
        if self._buffered >= _READ_CHUNK:
            self.flush()
        return start, self.end

    def flush(self) -> None:
        """Write the buffered frames. All or nothing: on a failed or short write (ENOSPC) the file
        is cut back to where the buffer started, so ``end`` always equals what is on disk and no
        hole of zeros is left for the reader to trip over; raises ``SpoolWriteError``."""
        if not self._buffer:
            return
        data = b"".join(self._buffer)
        frames = len(self._buffer)
        self._buffer.clear()
        self._buffered = 0
        start = self.end - len(data)
        try:
            written = os.pwrite(self._fd, data, start)
            if written != len(data):
                raise OSError(errno.ENOSPC, f"short write: {written} of {len(data)} bytes")
        except OSError as exc:
            self.end = start
            self.pending = max(0, self.pending - frames)
            self.cursor = min(self.cursor, start)
            # The numbers of the rolled-back frames are lost: the next append starts a new run.
            self._next_number = 0
            self._numbers = {k: v for k, v in self._numbers.items() if k <= start}
            del self._breaks[bisect.bisect_right(self._breaks, start) :]
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, start)
            raise SpoolWriteError(frames, exc) from exc

    def sync(self) -> None:
        self.flush()
        os.fsync(self._fd)

    # ------------------------------------------------------------------ reading and committing
    @property
    def has_untaken(self) -> bool:
        return self.cursor < self.end

    def frame_at(self, offset: int) -> int:
        """The stream's number of the frame starting at ``offset`` (a batch boundary); 0: unknown."""
        return self._numbers.get(offset, 0)

    def note_frame(self, offset: int, number: int) -> None:
        """The frame at ``offset`` (a frame boundary inside a taken batch) has ``number``."""
        if number:
            self._numbers[offset] = number

    def take(self, max_frames: int, max_bytes: int) -> tuple[list[bytes], int, int]:
        """Frames from the cursor on (at least one if any), within the limits; moves the cursor.
        The frames are one run of consecutive numbers: a take stops where the numbering jumps."""
        self.flush()
        start = self.cursor
        limit = self.end
        i = bisect.bisect_right(self._breaks, start)
        if i < len(self._breaks):
            limit = self._breaks[i]
        frames = self._take_fast(start, max_frames, max_bytes, limit)
        if frames:
            self.cursor = start + sum(len(f) for f in frames)
            self._number_taken(start, self.cursor, len(frames))
            return frames, start, self.cursor
        # A first frame larger than ``max_bytes``, or bytes that are not frames: the slow path.
        bounds: list[tuple[int, int]] = []
        stop = start
        for frame_start, frame_end in self._frames(start, limit):
            if bounds and (len(bounds) >= max_frames or frame_end - start > max_bytes):
                break
            bounds.append((frame_start, frame_end))
            stop = frame_end
        if not bounds:
            if start < self.end:
                # Unreadable bytes where frames should be (disk corruption): cut them off rather
                # than loop forever on them, and count what they held as lost.
                size = os.fstat(self._fd).st_size
                before = self.pending
                log.error(
                    "cutting unreadable bytes off a log spool file",
                    file=self.path.name,
                    bytes=self.end - start,
                    file_size=size,
                )
                os.ftruncate(self._fd, start)
                self.end = start
                self.pending = self._scan(self.committed, start)[0]
                self.cut_frames += max(0, before - self.pending)
            return [], start, start
        data = os.pread(self._fd, stop - start, start)
        frames = [data[a - start : b - start] for a, b in bounds]
        self.cursor = stop
        self._number_taken(start, stop, len(frames))
        return frames, start, stop

    def _number_taken(self, start: int, stop: int, count: int) -> None:
        first = self._numbers.get(start, 0)
        if first and stop not in self._numbers:
            self._numbers[stop] = first + count

    def _take_fast(self, start: int, max_frames: int, max_bytes: int, limit: int) -> list[bytes]:
        """Whole frames within one read of at most ``max_bytes`` (the common case, in one loop)."""
        data = os.pread(self._fd, min(limit - start, max_bytes), start)
        size = len(data)
        frames: list[bytes] = []
        append = frames.append
        pos = 0
        while len(frames) < max_frames and pos + 2 <= size and data[pos] == 0x12:
            length, payload = _frame_length(data, pos + 1)
            if payload is None:
                break
            end = payload + length
            if end > size:
                break
            append(data[pos:end])
            pos = end
        return frames

    def rewind(self) -> None:
        self.cursor = self.committed

    def commit(self, upto: int, frames: int) -> None:
        """The server has every frame before ``upto``."""
        self.committed = upto
        self.pending = max(0, self.pending - frames)
        os.pwrite(self._fd, _COMMITTED.pack(upto), _COMMITTED_OFFSET)
        if len(self._numbers) > self._numbers_pruned:  # delivered boundaries are not needed
            self._numbers = {k: v for k, v in self._numbers.items() if k >= upto}
            self._numbers_pruned = max(64, 2 * len(self._numbers))
            del self._breaks[: bisect.bisect_left(self._breaks, upto)]

    def drained(self) -> bool:
        return self.committed >= self.end

    def reset(self) -> None:
        """Everything is delivered: empty the file so it does not grow across outages."""
        self._buffer.clear()
        self._buffered = 0
        os.ftruncate(self._fd, self._data_start)
        os.pwrite(self._fd, _COMMITTED.pack(self._data_start), _COMMITTED_OFFSET)
        self.committed = self.cursor = self.end = self._data_start
        self.pending = 0
        self._numbers.clear()
        self._breaks.clear()
        self._next_number = 0

    def close(self) -> None:
        """Flush, fsync and close; the file is removed when nothing in it is undelivered."""
        if self.closed:
            return
        self.closed = True
        try:
            if self.drained() and not self._buffer:
                self.path.unlink(missing_ok=True)
            else:
                self.sync()
        finally:
            os.close(self._fd)


def _frames(fd: int, start: int, end: int) -> Iterator[tuple[int, int]]:
    """(start, end) of each complete frame from ``start``; stops at the first bad or torn one."""
    pos = start
    chunk = b""
    chunk_start = start
    while pos < end:
        rel = pos - chunk_start
        if rel + _MAX_FRAME_HEAD > len(chunk) and chunk_start + len(chunk) < end:
            chunk = os.pread(fd, min(_READ_CHUNK, end - pos), pos)
            chunk_start, rel = pos, 0
        if rel + 1 >= len(chunk) or chunk[rel] != 0x12:
            return
        length, payload = _frame_length(chunk, rel + 1)
        if payload is None:
            return
        frame_end = chunk_start + payload + length
        if frame_end > end:
            return
        yield pos, frame_end
        pos = frame_end


def _read_head(fd: int, name: str) -> tuple[SpoolHeader, int, int]:
    """(header, data start, committed offset) of an open spool file."""
    head = os.pread(fd, _HEAD.size, 0)
    if len(head) < _HEAD.size:
        raise SpoolError(f"{name}: truncated header")
    magic, committed, meta_len = _HEAD.unpack(head)
    if magic != MAGIC:
        raise SpoolError(f"{name}: not a log spool file")
    try:
        header = SpoolHeader.from_bytes(os.pread(fd, meta_len, _HEAD.size))
    except (ValueError, KeyError, TypeError) as exc:
        raise SpoolError(f"{name}: unreadable header: {exc}") from exc
    return header, _HEAD.size + meta_len, committed


def read_header(path: Path) -> SpoolHeader:
    fd = os.open(path, os.O_RDONLY)
    try:
        return _read_head(fd, path.name)[0]
    finally:
        os.close(fd)


def count_pending(path: Path) -> int:
    """Undelivered frames in a spool file, without changing it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        _, data_start, committed = _read_head(fd, path.name)
        size = os.fstat(fd).st_size
        return sum(1 for _ in _frames(fd, min(max(committed, data_start), size), size))
    finally:
        os.close(fd)


def _frame_length(buffer: bytes, at: int) -> tuple[int, int | None]:
    """(length, payload offset) of the frame whose length varint starts at ``at``; the offset is
    None when the varint is torn. One- and two-byte lengths (nearly every log line) inline."""
    length = buffer[at]
    if length < 0x80:
        return length, at + 1
    if at + 1 < len(buffer) and buffer[at + 1] < 0x80:
        return (length & 0x7F) | (buffer[at + 1] << 7), at + 2
    return _varint_at(buffer, at)


def _varint_at(buffer: bytes, pos: int) -> tuple[int, int | None]:
    """(value, offset after it) of the varint at ``pos``; offset None if incomplete."""
    value = 0
    shift = 0
    while pos < len(buffer):
        byte = buffer[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    return value, None
