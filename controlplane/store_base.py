"""Shared ground of the store modules: the serialised runner, row types and the job state
helpers every part needs (finish a job, make it available again, end an execution).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar, cast

from controlplane.auth import Principal
from controlplane.db import Database
from controlplane.errors import NotFound
from controlplane.notify import JobNotifier
from controlplane.wire import NS
from runner.api.models import (
    DEFAULT_POLLED_GROUPS,
    RUNNING_EXECUTION_STATUSES,
    TERMINAL_JOB_STATUSES,
)

P = ParamSpec("P")
T = TypeVar("T")
Row = dict[str, Any]

RUNNING = tuple(sorted(s.value for s in RUNNING_EXECUTION_STATUSES))
#: The running execution statuses as an SQL list; a constant, safe to format into queries.
_RUNNING_SQL = "(" + ",".join(f"'{s}'" for s in RUNNING) + ")"
TERMINAL_JOB = frozenset(s.value for s in TERMINAL_JOB_STATUSES)
OPEN_JOB = ("queued", "available", "in-progress")

#: How many terraform state revisions a workspace keeps (the reference keeps all, §12.9).
STATE_HISTORY = 100
#: Heartbeats older than this are pruned by the monitor; only the newest one matters.
HEARTBEAT_RETENTION_NS = 24 * 3600 * NS

#: What each terminal execution status makes of the job (docs/runner-api.md §14.1, with our fixes:
#: cancelled and timed-out are terminal for the job too).
_JOB_AFTER_EXECUTION: dict[str, tuple[str, str]] = {
    "finished": ("finished", "finished"),
    "failed": ("failed", "execution failed"),
    "timed-out": ("timed-out", "execution timed out"),
    "cancelled": ("cancelled", "execution cancelled"),
    "not-attempted": ("failed", "execution not attempted"),
}


@dataclass
class JobSpec:
    """A validated job submission (operator API)."""

    type: str
    group: str
    operation: str
    plan_json: str | None
    execution_timeout: int
    available_timeout: int
    queue_timeout: int
    overall_timeout: int | None
    max_executions: int
    metadata: dict[str, str | None] | None
    owner_id: str
    owner_type: str
    workspace_id: str | None = None


@dataclass
class LogRecord:
    time_unix_nano: int
    observed_time_unix_nano: int
    severity_text: str
    severity_number: int
    body: str
    attributes: str
    resource_attributes: str
    scope_name: str
    trace_id: str
    span_id: str


@dataclass
class MonitorReport:
    available_timeouts: int = 0
    retried: int = 0
    execution_timeouts: int = 0
    overall_timeouts: int = 0
    offline_runners: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(
            self.available_timeouts
            or self.retried
            or self.execution_timeouts
            or self.overall_timeouts
            or self.offline_runners
        )


def default_settings(
    org_id: str, group_id: str, runner_id: str, heart_beat_timeout_ns: int
) -> dict[str, Any]:
    return {
        "sandbox_mode": False,
        "heart_beat_timeout": heart_beat_timeout_ns,
        "enable_sentry": False,
        "enable_metrics": False,
        "enable_logging": True,
        "logging_level": "INFO",
        "groups": list(DEFAULT_POLLED_GROUPS),
        "metadata": {
            "org.id": org_id,
            "runner.id": runner_id,
            "runner_group.id": group_id,
            "runner.type": "local",
            "runner.platform": "local",
            "env": "local",
        },
        "aws_max_instance_lifetime": 604800,
        "platform": "",
        "long_poll_jobs": True,
        # Ours (docs/runner-api.md §5.2): this log endpoint decompresses gzip bodies.
        "log_accept_encodings": ["gzip"],
    }


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


class StoreBase:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.notifier = JobNotifier()
        self._pending: list[tuple[str, str]] = []
        self._tokens: dict[str, Principal] = {}

    async def _run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run one store function alone on the connection, then wake polls it made jobs for."""
        return await self._call(lambda: fn(*args, **kwargs), offload=False)

    async def _run_offloaded(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Like ``_run``, in a worker thread: for calls that may take long."""
        return await self._call(lambda: fn(*args, **kwargs), offload=True)

    async def _call(self, fn: Callable[[], T], *, offload: bool) -> T:
        def call() -> tuple[T, list[tuple[str, str]]]:
            try:
                result = fn()
            finally:
                pending, self._pending = self._pending, []
            return result, pending

        result, pending = await self.db.run(call, offload=offload)
        for runner_id, group in pending:
            self.notifier.notify(runner_id, group)
        return result

    def _announce(self, runner_id: str, group: str) -> None:
        self._pending.append((runner_id, group))

    @property
    def conn(self) -> sqlite3.Connection:
        return self.db.conn

    def _one(self, sql: str, args: Sequence[Any] = ()) -> Row | None:
        return cast("Row | None", self.db.conn.execute(sql, args).fetchone())

    def _all(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        return cast("list[Row]", self.db.conn.execute(sql, args).fetchall())

    def _require_runner(self, runner_id: str) -> None:
        if self._one("SELECT 1 FROM runners WHERE id = ?", (runner_id,)) is None:
            raise NotFound(f"runner {runner_id} not found")

    def _finish_job(self, job_id: str, status: str, description: str, now: int) -> None:
        conn = self.conn
        conn.execute(
            "UPDATE runner_jobs SET status = ?, status_description = ?, updated_at = ?,"
            " finished_at = COALESCE(finished_at, ?) WHERE id = ?",
            (status, description, now, now, job_id),
        )
        conn.execute(
            "UPDATE log_streams SET open = 0, updated_at = ? WHERE id = (SELECT log_stream_id FROM"
            " runner_jobs"
            " WHERE id = ?)",
            (now, job_id),
        )

    def _make_available(self, job: Row, description: str, now: int) -> None:
        self.conn.execute(
            "UPDATE runner_jobs SET status = 'available', status_description = ?, attempts = attempts + 1,"
            " available_deadline = ?, current_execution_id = NULL, updated_at = ? WHERE id = ?",
            (description, now + job["available_timeout"], now, job["id"]),
        )
        self._announce(job["runner_id"], job["grp"])

    def _end_execution(
        self, execution_id: str, job_id: str, exec_status: str, job_status: str, description: str, now: int
    ) -> None:
        """Terminal status on a running execution, and on its job when it is the job's current one."""
        conn = self.conn
        conn.execute(
            "UPDATE runner_job_executions SET status = ?, updated_at = ? WHERE id = ?",
            (exec_status, now, execution_id),
        )
        job = self._one("SELECT status, current_execution_id FROM runner_jobs WHERE id = ?", (job_id,))
        if job and job["current_execution_id"] == execution_id and job["status"] not in TERMINAL_JOB:
            self._finish_job(job_id, job_status, description, now)
