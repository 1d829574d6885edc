"""One SQLite connection, used by one call at a time.

Short calls (almost all: indexed reads and small writes, tens of microseconds) run inline on
the event loop thread: measured, a hop to a worker thread per call costs more than the query
itself, and the GIL hand-off between the two threads caps throughput far below the target
(bench/controlplane_bench.py). Calls that may take long (big log batches, housekeeping, WAL
checkpoints) are offloaded to a worker thread with ``offload=True``; an async lock keeps inline
calls out while one runs, so the connection is never used by two threads at once, concurrent
writers cannot interleave, and a claim (``UPDATE … WHERE status='available'``) is atomic.

No commit waits for the disk: WAL with ``synchronous=NORMAL``, and automatic checkpoints are off;
the monitor checkpoints in a worker thread on a connection of its own (``checkpoint``), so fsyncs
never block the loop nor the calls.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from controlplane.schema import MIGRATIONS
from controlplane.wire import now_ns

T = TypeVar("T")


def _dict_row(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> dict[str, Any]:
    return {col[0]: value for col, value in zip(cursor.description, row, strict=True)}


class Database:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        target = ":memory:" if path is None else str(path)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(target, isolation_level=None, check_same_thread=False)
        self.conn.row_factory = _dict_row
        self._lock = anyio.Lock()
        self._checkpoint_lock = anyio.Lock()
        self._checkpointer: sqlite3.Connection | None = None
        self._in_tx = False
        conn = self.conn
        if path is not None:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("PRAGMA temp_store=MEMORY")
        self.migrate()

    # ---------------------------------------------------------------- running calls

    async def run(self, fn: Callable[[], T], *, offload: bool = False) -> T:
        """Run ``fn`` (which uses ``self.conn``) alone: inline, or in a worker thread with ``offload``."""
        try:
            self._lock.acquire_nowait()
        except anyio.WouldBlock:
            await self._lock.acquire()
        try:
            if offload:
                return await anyio.to_thread.run_sync(fn)
            return fn()
        finally:
            self._lock.release()

    async def checkpoint(self) -> None:
        """Fold the WAL back into the database file, off the event loop and off the main connection.

        A PASSIVE checkpoint on a connection of its own does not block writers, so calls keep
        running while it copies pages and fsyncs: run on the main connection it held the lock,
        and a 1,000,000-line log bench spent ~8 % of the control plane's samples (py-spy) with
        every insert waiting on it.
        """
        if self.path is None:
            return
        async with self._checkpoint_lock:
            await anyio.to_thread.run_sync(self._checkpoint_blocking)

    def _checkpoint_blocking(self) -> None:
        if self._checkpointer is None:
            own = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
            own.execute("PRAGMA busy_timeout=5000")
            self._checkpointer = own
        self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``; rolls back on any exception. Not re-entrant."""
        if self._in_tx:
            raise RuntimeError("nested transaction")
        self.conn.execute("BEGIN IMMEDIATE")
        self._in_tx = True
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        else:
            self.conn.execute("COMMIT")
        finally:
            self._in_tx = False

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.close()
            self._checkpointer = None
        self.conn.close()

    # ---------------------------------------------------------------- schema

    def migrate(self) -> None:
        conn = self.conn
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)"
        )
        applied = {row["version"] for row in conn.execute("SELECT version FROM schema_migrations")}
        for version, name, sql in MIGRATIONS:
            if version in applied:
                continue
            with self.transaction():
                for statement in _statements(sql):
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (version, name, now_ns()),
                )

    def schema_version(self) -> int:
        row = self.conn.execute("SELECT MAX(version) AS v FROM schema_migrations").fetchone()
        return int(row["v"] or 0)


def _statements(sql: str) -> list[str]:
    """Split a script into statements; a trigger body's own semicolons stay inside its statement."""
    statements: list[str] = []
    buffer = ""
    for part in sql.split(";"):
        buffer += part + ";"
        if sqlite3.complete_statement(buffer):
            if buffer.strip(" \n;"):
                statements.append(buffer.strip())
            buffer = ""
    if buffer.strip(" \n;"):
        statements.append(buffer.strip())
    return statements
