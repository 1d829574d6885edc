"""Crash-safe record of claimed executions, and the lock that keeps one runner per state dir.

Why: a runner killed mid-job (``kill -9``, OOM, a node reboot) leaves an execution the server
believes is running. The reference runner forgets it; this one writes a journal entry after the
claim and before any work, closes it only once the server has the final status, and at the
next start reports every entry left over as failed ("runner restarted"), delivers its spooled
logs and removes its workspace.

One small JSON file per execution (``<execution_id>.json``), written to a temporary file,
fsynced, renamed into place, then the directory fsynced: a reader sees the old entry or the new
one, never half of one. A file that does not parse is logged, moved to ``corrupt/`` and
skipped: a bad file must never stop the runner from starting.

Status updates are atomic but not fsynced by default: they survive a killed process (the page
cache does), and after a power loss the older status is harmless because every leftover entry is
reported failed whatever its status. Pass ``durable=True`` to pay for the fsyncs anyway.

The methods block on disk I/O (about 2 ms for a durable write); async code can use the
``*_async`` variants, which run them in a worker thread.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio.to_thread
import structlog

from runner.workspace import check_execution_id

__all__ = ["Journal", "JournalEntry", "StateDirLock", "StateDirLocked"]

_log = structlog.get_logger("runner.journal")

_SUFFIX = ".json"
_TMP_SUFFIX = ".tmp"
_FORMAT_VERSION = 1
#: Fields an entry written by an older version may lack.
_OPTIONAL_FIELDS = frozenset({"held_locks"})


@dataclass
class JournalEntry:
    execution_id: str
    job_id: str
    job_type: str
    group: str
    log_stream_id: str | None
    #: Unix time of the claim.
    claimed_at: float
    #: The runner process that claimed it.
    pid: int
    last_status: str
    #: Where this execution's undelivered log records are spooled (the log pipeline's key).
    spool_key: str
    #: Terraform state locks the job holds right now: ``{"workspace_id", "lock_id", "info"}``
    #: (``info`` is the lock body terraform sent). A runner killed mid-apply leaves them held;
    #: orphan recovery releases them, with their IDs, before it reports the orphan.
    held_locks: list[dict[str, str]] = dataclasses.field(default_factory=list)

    def to_json(self) -> bytes:
        data: dict[str, Any] = {"version": _FORMAT_VERSION, **dataclasses.asdict(self)}
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> JournalEntry:
        """Parse and type-check one entry; ``ValueError`` on anything unexpected."""
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name in _OPTIONAL_FIELDS and f.name not in data:
                continue  # written by a version that did not have it
            if f.name not in data:
                raise ValueError(f"missing field {f.name!r}")
            values[f.name] = value = data[f.name]
            ok = {
                "claimed_at": isinstance(value, int | float) and not isinstance(value, bool),
                "pid": isinstance(value, int) and not isinstance(value, bool),
                "log_stream_id": value is None or isinstance(value, str),
                "held_locks": isinstance(value, list)
                and all(isinstance(v, dict) and all(isinstance(x, str) for x in v.values()) for v in value),
            }.get(f.name, isinstance(value, str))
            if not ok:
                raise ValueError(f"field {f.name!r} has the wrong type")
        values["claimed_at"] = float(values["claimed_at"])
        check_execution_id(values["execution_id"])
        return cls(**values)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Journal:
    """The journal directory: one file per claimed, not yet closed execution.

    Safe to call from several threads for different executions; calls for one execution are
    serialised (so a late status update cannot bring back an entry that was just closed).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._locks_guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    # -- paths and locks ------------------------------------------------------------------
    def _file(self, execution_id: str) -> Path:
        return self.directory / (check_execution_id(execution_id) + _SUFFIX)

    @contextlib.contextmanager
    def _locked(self, execution_id: str) -> Iterator[None]:
        with self._locks_guard:
            lock = self._locks.setdefault(execution_id, threading.Lock())
        with lock:
            yield

    def _write(self, entry: JournalEntry, *, durable: bool) -> None:
        final = self._file(entry.execution_id)
        tmp = self.directory / f".{entry.execution_id}.{os.getpid()}.{uuid.uuid4().hex[:8]}{_TMP_SUFFIX}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, entry.to_json())
            if durable:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
        os.replace(tmp, final)
        if durable:
            _fsync_dir(self.directory)

    # -- the API --------------------------------------------------------------------------
    def record_claim(self, entry: JournalEntry) -> None:
        """Durably record a claimed execution (before any work on it starts)."""
        with self._locked(entry.execution_id):
            self._write(entry, durable=True)

    def update_status(self, execution_id: str, status: str, *, durable: bool = False) -> None:
        """Note the last status reported; a closed or unknown execution is ignored (and logged)."""
        with self._locked(execution_id):
            try:
                raw = self._file(execution_id).read_bytes()
            except FileNotFoundError:
                _log.warning(
                    "journal: status update for an execution not in the journal", execution_id=execution_id
                )
                return
            try:
                entry = JournalEntry.from_json(raw)
            except ValueError as exc:
                _log.error(
                    "journal: cannot update a corrupt entry", execution_id=execution_id, error=str(exc)
                )
                return
            if entry.last_status != status:
                entry.last_status = status
                self._write(entry, durable=durable)

    def note_lock(self, job_id: str, workspace_id: str, lock_id: str, info: str) -> bool:
        """Durably record that the job's execution now holds ``lock_id`` on ``workspace_id``.
        False when no open entry belongs to ``job_id`` (then there is nothing to recover)."""
        return self._change_locks(job_id, workspace_id, lock_id, info)

    def forget_lock(self, job_id: str, workspace_id: str, lock_id: str) -> bool:
        """The lock was released (an empty ``lock_id``: whatever the job held on the workspace)."""
        return self._change_locks(job_id, workspace_id, lock_id, None)

    def _change_locks(self, job_id: str, workspace_id: str, lock_id: str, info: str | None) -> bool:
        for candidate in self.entries():
            if candidate.job_id != job_id:
                continue
            with self._locked(candidate.execution_id):
                entry = self.get(candidate.execution_id)
                if entry is None:
                    return False
                kept = [
                    lock
                    for lock in entry.held_locks
                    if lock.get("workspace_id") != workspace_id
                    or (info is None and lock_id and lock.get("lock_id") != lock_id)
                ]
                if info is not None:
                    kept.append({"workspace_id": workspace_id, "lock_id": lock_id, "info": info})
                if kept != entry.held_locks:
                    entry.held_locks = kept
                    self._write(entry, durable=True)
            return True
        return False

    def close(self, execution_id: str) -> None:
        """Remove the entry once the server has the final status; a missing entry is fine."""
        with self._locked(execution_id):
            try:
                self._file(execution_id).unlink()
            except FileNotFoundError:
                pass
            else:
                _fsync_dir(self.directory)
        with self._locks_guard:
            self._locks.pop(execution_id, None)

    def get(self, execution_id: str) -> JournalEntry | None:
        try:
            return JournalEntry.from_json(self._file(execution_id).read_bytes())
        except (FileNotFoundError, ValueError):
            return None

    def entries(self) -> list[JournalEntry]:
        """Every open entry, oldest claim first. Corrupt files are logged and moved aside.

        A temporary file left by a dead writer is finished (renamed into place) when it holds a
        complete entry and the final file is missing, else removed.
        """
        self._recover_tmp_files()
        found: list[JournalEntry] = []
        for path in sorted(self.directory.glob("*" + _SUFFIX)):
            if path.name.startswith("."):
                continue
            try:
                entry = JournalEntry.from_json(path.read_bytes())
                if path.name != entry.execution_id + _SUFFIX:
                    raise ValueError(f"file holds execution {entry.execution_id!r}")
            except FileNotFoundError:
                continue  # closed meanwhile
            except (ValueError, UnicodeDecodeError, OSError) as exc:
                self._quarantine(path, f"{type(exc).__name__}: {exc}")
                continue
            found.append(entry)
        found.sort(key=lambda e: (e.claimed_at, e.execution_id))
        return found

    def _quarantine(self, path: Path, reason: str) -> None:
        corrupt = self.directory / "corrupt"
        target = corrupt / f"{path.name}.{int(time.time())}"
        try:
            corrupt.mkdir(mode=0o700, exist_ok=True)
            os.replace(path, target)
            _fsync_dir(self.directory)
        except OSError as exc:
            _log.error("journal: corrupt entry could not be moved aside", file=str(path), error=str(exc))
            return
        _log.error("journal: corrupt entry moved aside", file=str(path), moved_to=str(target), reason=reason)

    def _recover_tmp_files(self) -> None:
        me = str(os.getpid())
        for tmp in self.directory.glob(".*" + _TMP_SUFFIX):
            parts = tmp.name[1:].rsplit(".", 3)  # <id>.<pid>.<rand>.tmp
            if len(parts) != 4 or parts[1] == me:
                continue  # ours: maybe being written right now
            final = self.directory / (parts[0] + _SUFFIX)
            try:
                if not final.exists():
                    JournalEntry.from_json(tmp.read_bytes())
                    os.replace(tmp, final)
                    _log.info("journal: recovered an entry from an interrupted write", file=str(final))
                    continue
            except (ValueError, UnicodeDecodeError, OSError):
                pass
            tmp.unlink(missing_ok=True)

    # -- async wrappers -------------------------------------------------------------------
    async def record_claim_async(self, entry: JournalEntry) -> None:
        await anyio.to_thread.run_sync(self.record_claim, entry)

    async def update_status_async(self, execution_id: str, status: str, *, durable: bool = False) -> None:
        await anyio.to_thread.run_sync(lambda: self.update_status(execution_id, status, durable=durable))

    async def close_async(self, execution_id: str) -> None:
        await anyio.to_thread.run_sync(self.close, execution_id)

    async def note_lock_async(self, job_id: str, workspace_id: str, lock_id: str, info: str) -> bool:
        return await anyio.to_thread.run_sync(self.note_lock, job_id, workspace_id, lock_id, info)

    async def forget_lock_async(self, job_id: str, workspace_id: str, lock_id: str) -> bool:
        return await anyio.to_thread.run_sync(self.forget_lock, job_id, workspace_id, lock_id)


# --------------------------------------------------------------------------- the lock


class StateDirLocked(RuntimeError):
    """Another runner process holds the state dir."""


class StateDirLock:
    """An exclusive ``flock`` on ``<state_dir>/runner.lock`` for the life of the runner.

    Two runners sharing a state dir would sweep each other's workspaces and replay each other's
    journal as "crashed". The kernel drops the lock when the process dies, however it dies, so a
    stale lock file never blocks a restart. The file is never deleted (deleting lock files races).
    """

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / "runner.lock"
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        if self._fd is not None:
            return
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StateDirLocked(
                f"state dir {self.state_dir} is locked by pid {holder} (another runner is using it)"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> StateDirLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
