"""Jobs and executions: submission, the oldest-first queue, the atomic claim, checked execution
transitions with the job following them, results and outputs.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from typing import Any

from controlplane.auth import LOG_STREAM, token_hash
from controlplane.errors import BadRequest, Conflict, NotFound
from controlplane.ids import new_id
from controlplane.store_base import (
    _JOB_AFTER_EXECUTION,
    _RUNNING_SQL,
    TERMINAL_JOB,
    JobSpec,
    Row,
    StoreBase,
    _loads,
)
from controlplane.wire import NS, now_ns
from runner.api.models import (
    ExecutionStatus,
    is_legal_transition,
)

#: The computed default overall timeout is capped (a century) to stay inside 64-bit integers.
MAX_OVERALL_NS = 100 * 365 * 24 * 3600 * NS

#: Results bigger than this are written from a worker thread, off the event loop.
OFFLOAD_BYTES = 256 * 1024


class JobStore(StoreBase):
    # ================================================================ jobs

    _JOB_SQL = (
        "SELECT j.*, s.write_token AS ls_write_token, s.open AS ls_open, s.owner_id AS ls_owner_id,"
        " s.owner_type AS ls_owner_type, s.created_at AS ls_created_at, s.updated_at AS ls_updated_at"
        " FROM runner_jobs j JOIN log_streams s ON s.id = j.log_stream_id"
    )

    async def submit_job(self, runner_id: str, spec: JobSpec, *, auto_create_workspaces: bool) -> Row:
        return await self._run(self._submit_job, runner_id, spec, auto_create_workspaces)

    def _submit_job(self, runner_id: str, spec: JobSpec, auto_create_workspaces: bool) -> Row:
        now = now_ns()
        job_id, stream_id, write_token = new_id("job"), new_id("log"), new_id("tok")
        overall = spec.overall_timeout
        if overall is None:
            overall = spec.queue_timeout + spec.max_executions * (
                spec.available_timeout + spec.execution_timeout
            )
            overall = min(overall, MAX_OVERALL_NS)
        with self.db.transaction() as conn:
            runner = self._one("SELECT org_id FROM runners WHERE id = ?", (runner_id,))
            if runner is None:
                raise NotFound(f"runner {runner_id} not found")
            org_id = runner["org_id"]
            conn.execute(
                "INSERT INTO log_streams (id, org_id, runner_id, owner_id, owner_type, open, attrs,"
                " write_token,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, ?, 1, ?, ?, ?, ?)",
                (
                    stream_id,
                    org_id,
                    runner_id,
                    spec.owner_id,
                    spec.owner_type,
                    json.dumps({"runner_job.id": job_id}),
                    write_token,
                    now,
                    now,
                ),
            )
            conn.execute(
                "INSERT INTO tokens (token, id, kind, org_id, runner_id, log_stream_id, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (token_hash(write_token), new_id("tok"), LOG_STREAM, org_id, runner_id, stream_id, now),
            )
            # Queued and made available in one transaction: this control plane has no serial
            # per-runner event loop (docs/runner-api.md §14.1), any number of jobs may be available.
            conn.execute(
                "INSERT INTO runner_jobs (id, org_id, runner_id, owner_id, owner_type, log_stream_id,"
                " queue_timeout, available_timeout, execution_timeout, overall_timeout, max_executions,"
                " status, status_description, type, grp, operation, metadata, attempts, available_deadline,"
                " overall_deadline, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'available', 'waiting for runner to reserve job',"
                " ?, ?, ?, ?, 1, ?, ?, ?, ?)",
                (
                    job_id,
                    org_id,
                    runner_id,
                    spec.owner_id,
                    spec.owner_type,
                    stream_id,
                    spec.queue_timeout,
                    spec.available_timeout,
                    spec.execution_timeout,
                    overall,
                    spec.max_executions,
                    spec.type,
                    spec.group,
                    spec.operation,
                    None if spec.metadata is None else json.dumps(spec.metadata),
                    now + spec.available_timeout,
                    now + overall,
                    now,
                    now,
                ),
            )
            if spec.plan_json is not None:
                conn.execute(
                    "INSERT INTO runner_job_plans (job_id, plan_json, created_at) VALUES (?, ?, ?)",
                    (job_id, spec.plan_json, now),
                )
            if spec.workspace_id and auto_create_workspaces:
                conn.execute(
                    "INSERT OR IGNORE INTO terraform_workspaces (id, org_id, owner_id, owner_type,"
                    " created_at,"
                    " updated_at) VALUES (?, ?, ?, 'install_components', ?, ?)",
                    (spec.workspace_id, org_id, spec.owner_id, now, now),
                )
        self._announce(runner_id, spec.group)
        return self._job_detail(job_id, None)

    async def list_jobs(
        self,
        runner_id: str,
        *,
        status: str | None,
        group: str | None,
        limit: int,
        offset: int,
    ) -> tuple[list[Row], bool]:
        """Jobs of a runner, oldest first; returns the page and whether more follow."""

        def query() -> tuple[list[Row], bool]:
            sql = self._JOB_SQL + " WHERE j.runner_id = ?"
            args: list[Any] = [runner_id]
            if status is not None:
                sql += " AND j.status = ?"
                args.append(status)
            if group is not None:
                sql += " AND j.grp = ?"
                args.append(group)
            sql += " ORDER BY j.created_at, j.rowid LIMIT ? OFFSET ?"
            args += [limit + 1, offset]
            rows = self._all(sql, args)
            if not rows:
                self._require_runner(runner_id)  # an unknown runner is a 404, not an empty queue
            return rows[:limit], len(rows) > limit

        return await self._run(query)

    def _job_row(self, job_id: str, runner_scope: str | None) -> Row:
        row = self._one(self._JOB_SQL + " WHERE j.id = ?", (job_id,))
        if row is None or (runner_scope is not None and row["runner_id"] != runner_scope):
            raise NotFound(f"runner job {job_id} not found")
        return row

    def _job_detail(self, job_id: str, runner_scope: str | None) -> Row:
        """The job as a single read shows it: latest execution, count and latest outputs."""
        row = self._job_row(job_id, runner_scope)
        latest = self._one(
            "SELECT * FROM runner_job_executions WHERE job_id = ? ORDER BY created_at DESC, rowid"
            " DESC LIMIT 1",
            (job_id,),
        )
        row["executions"] = [latest] if latest else []
        # Outputs of the LATEST finished execution (the reference reads the first, §12.5).
        outputs = self._one(
            "SELECT e.id, o.outputs_json FROM runner_job_executions e"
            " JOIN execution_outputs o ON o.execution_id = e.id"
            " WHERE e.job_id = ? AND e.status = 'finished' ORDER BY e.created_at DESC, e.rowid DESC LIMIT 1",
            (job_id,),
        )
        row["final_execution"] = outputs
        return row

    async def get_job(self, job_id: str, *, runner_scope: str | None, runner_id: str | None = None) -> Row:
        def query() -> Row:
            if runner_id is not None:
                self._require_runner(runner_id)
            return self._job_detail(job_id, runner_scope if runner_id is None else runner_id)

        return await self._run(query)

    async def get_plan(self, job_id: str, *, runner_scope: str | None, runner_id: str | None = None) -> str:
        def query() -> str:
            if runner_id is not None:
                self._require_runner(runner_id)
            scope = runner_scope if runner_id is None else runner_id
            row = self._one(
                "SELECT j.runner_id, p.plan_json FROM runner_jobs j"
                " LEFT JOIN runner_job_plans p ON p.job_id = j.id WHERE j.id = ?",
                (job_id,),
            )
            if row is None or (scope is not None and row["runner_id"] != scope):
                raise NotFound(f"runner job {job_id} not found")
            if row["plan_json"] is None:
                raise NotFound(f"runner job {job_id} has no plan")
            return str(row["plan_json"])

        return await self._run(query)

    async def update_job_status(self, job_id: str, status: str, *, runner_scope: str | None) -> None:
        """The deprecated ``PATCH /v1/runner-jobs/{id}`` (shut-down jobs finish themselves)."""

        def update() -> None:
            now = now_ns()
            with self.db.transaction():
                job = self._job_row(job_id, runner_scope)
                if job["status"] == status:
                    return
                if job["status"] in TERMINAL_JOB:
                    raise Conflict(f"runner job {job_id} is already {job['status']}")
                if status in TERMINAL_JOB:
                    self._finish_job(job_id, status, f"set to {status} by the runner", now)
                elif status == "available":
                    self._make_available(job, "made available again by the runner", now)
                else:
                    self.conn.execute(
                        "UPDATE runner_jobs SET status = ?, status_description = ?, updated_at = ?"
                        " WHERE id = ?",
                        (status, f"set to {status} by the runner", now, job_id),
                    )

        await self._run(update)

    async def cancel_job(self, job_id: str) -> Row:
        def cancel() -> Row:
            now = now_ns()
            with self.db.transaction() as conn:
                job = self._job_row(job_id, None)
                if job["status"] in TERMINAL_JOB:
                    raise Conflict(f"runner job {job_id} is already {job['status']}")
                if job["current_execution_id"]:
                    conn.execute(
                        f"UPDATE runner_job_executions SET status = 'cancelled', updated_at = ?"  # noqa: S608 - _RUNNING_SQL is a constant
                        f" WHERE id = ? AND status IN {_RUNNING_SQL}",
                        (now, job["current_execution_id"]),
                    )
                self._finish_job(job_id, "cancelled", "cancelled by operator", now)
            return self._job_detail(job_id, None)

        return await self._run(cancel)

    # ================================================================ executions

    async def claim(self, job_id: str, client_version: str | None, *, runner_scope: str | None) -> Row:
        """Create an execution: the claim. Atomic: exactly one caller wins an available job."""
        return await self._run(self._claim, job_id, client_version, runner_scope)

    def _claim(self, job_id: str, client_version: str | None, runner_scope: str | None) -> Row:
        now = now_ns()
        execution_id = new_id("run")
        with self.db.transaction() as conn:
            job = self._one(
                "SELECT id, org_id, runner_id, status, execution_count, max_executions, execution_timeout"
                " FROM runner_jobs WHERE id = ?",
                (job_id,),
            )
            if job is None or (runner_scope is not None and job["runner_id"] != runner_scope):
                raise NotFound(f"runner job {job_id} not found")
            claimed = conn.execute(
                "UPDATE runner_jobs SET status = 'in-progress', status_description = 'in-progress',"
                " current_execution_id = ?, execution_count = execution_count + 1,"
                " started_at = COALESCE(started_at, ?), available_deadline = NULL, updated_at = ?"
                " WHERE id = ? AND status = 'available' AND execution_count < max_executions",
                (execution_id, now, now, job_id),
            ).rowcount
            if claimed != 1:
                if job["status"] == "available":
                    raise Conflict(
                        f"runner job {job_id} has reached its max executions ({job['max_executions']})",
                        error="runner job has exceeded max executions",
                    )
                raise Conflict(
                    f"runner job {job_id} is {job['status']}, not available", error="runner job not available"
                )
            metadata = {"client.version": client_version} if client_version else None
            conn.execute(
                "INSERT INTO runner_job_executions (id, job_id, org_id, runner_id, status, metadata,"
                " deadline,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?)",
                (
                    execution_id,
                    job_id,
                    job["org_id"],
                    job["runner_id"],
                    None if metadata is None else json.dumps(metadata),
                    now + job["execution_timeout"],
                    now,
                    now,
                ),
            )
        return self._execution(job_id, execution_id, None)

    def _execution(self, job_id: str, execution_id: str, runner_scope: str | None) -> Row:
        row = self._one(
            "SELECT * FROM runner_job_executions WHERE id = ? AND job_id = ?", (execution_id, job_id)
        )
        if row is None or (runner_scope is not None and row["runner_id"] != runner_scope):
            raise NotFound(f"execution {execution_id} of runner job {job_id} not found")
        return row

    def _status_history(self, execution_id: str) -> list[Row]:
        """Every status the execution had, in order (recorded by triggers, whoever changed it)."""
        return self._all(
            "SELECT status, at FROM execution_status_events WHERE execution_id = ? ORDER BY rowid",
            (execution_id,),
        )

    async def list_executions(self, job_id: str, *, runner_scope: str | None) -> list[Row]:
        def query() -> list[Row]:
            self._job_row(job_id, runner_scope)
            rows = self._all(
                "SELECT * FROM runner_job_executions WHERE job_id = ? ORDER BY created_at DESC, rowid DESC"
                " LIMIT 1000",
                (job_id,),
            )
            for row in rows:
                row["status_history"] = self._status_history(row["id"])
            return rows

        return await self._run(query)

    async def get_execution(self, job_id: str, execution_id: str, *, runner_scope: str | None) -> Row:
        def query() -> Row:
            row = self._execution(job_id, execution_id, runner_scope)
            row["status_history"] = self._status_history(execution_id)
            row["result"] = self._result(execution_id)
            row["outputs"] = self._one(
                "SELECT * FROM execution_outputs WHERE execution_id = ?", (execution_id,)
            )
            return row

        return await self._run(query)

    async def update_execution(
        self, job_id: str, execution_id: str, status: str, *, runner_scope: str | None
    ) -> Row:
        return await self._run(self._update_execution, job_id, execution_id, status, runner_scope)

    def _update_execution(self, job_id: str, execution_id: str, status: str, runner_scope: str | None) -> Row:
        now = now_ns()
        with self.db.transaction() as conn:
            row = self._execution(job_id, execution_id, runner_scope)
            current, new = ExecutionStatus(row["status"]), ExecutionStatus(status)
            if not is_legal_transition(current, new):
                raise Conflict(
                    f"illegal execution status transition {current.value} -> {new.value}",
                    error="illegal status transition",
                )
            if new == current:
                return row
            conn.execute(
                "UPDATE runner_job_executions SET status = ?, updated_at = ? WHERE id = ?",
                (new.value, now, execution_id),
            )
            row["status"], row["updated_at"] = new.value, now
            follow = _JOB_AFTER_EXECUTION.get(new.value)
            if follow is not None:
                job = self._one("SELECT * FROM runner_jobs WHERE id = ?", (job_id,))
                if (
                    job is not None
                    and job["current_execution_id"] == execution_id
                    and job["status"] == "in-progress"
                ):
                    if new == ExecutionStatus.FAILED and job["attempts"] < job["max_executions"]:
                        self._make_available(
                            job, f"retrying: execution {execution_id} failed (attempt {job['attempts']})", now
                        )
                    else:
                        self._finish_job(job_id, follow[0], follow[1], now)
        return row

    def _result(self, execution_id: str) -> Row | None:
        row = self._one("SELECT * FROM execution_results WHERE execution_id = ?", (execution_id,))
        if row is not None:
            row["error_metadata"] = _loads(row["error_metadata"])
        return row

    async def put_result(
        self,
        job_id: str,
        execution_id: str,
        *,
        success: bool,
        error_code: int,
        error_metadata: Mapping[str, str | None] | None,
        contents: str | None,
        contents_display: bytes | None,
        contents_gzip: bytes | None,
        contents_display_gzip: bytes | None,
        runner_scope: str | None,
    ) -> None:
        """Store a result, with or without contents; a second result replaces the first."""

        def put() -> None:
            now = now_ns()
            with self.db.transaction() as conn:
                execution = self._execution(job_id, execution_id, runner_scope)
                conn.execute(
                    "INSERT INTO execution_results (id, execution_id, org_id, success, error_code,"
                    " error_metadata,"
                    " contents, contents_display, contents_gzip, contents_display_gzip, created_at,"
                    " updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (execution_id) DO UPDATE SET"
                    " success = excluded.success, error_code = excluded.error_code,"
                    " error_metadata = excluded.error_metadata, contents = excluded.contents,"
                    " contents_display = excluded.contents_display, contents_gzip = excluded.contents_gzip,"
                    " contents_display_gzip = excluded.contents_display_gzip, updated_at ="
                    " excluded.updated_at",
                    (
                        new_id("run"),
                        execution_id,
                        execution["org_id"],
                        int(success),
                        error_code,
                        None if error_metadata is None else json.dumps(dict(error_metadata)),
                        contents,
                        contents_display,
                        contents_gzip,
                        contents_display_gzip,
                        now,
                        now,
                    ),
                )

        size = sum(len(part or b"") for part in (contents_display, contents_gzip, contents_display_gzip))
        if size + len(contents or "") > OFFLOAD_BYTES:
            await self._run_offloaded(put)
        else:
            await self._run(put)

    async def get_result(self, job_id: str, execution_id: str, *, runner_scope: str | None) -> Row:
        def query() -> Row:
            self._execution(job_id, execution_id, runner_scope)
            row = self._result(execution_id)
            if row is None:
                raise NotFound(f"execution {execution_id} has no result")
            return row

        return await self._run(query)

    async def put_outputs(
        self, job_id: str, execution_id: str, outputs_json: bytes, *, runner_scope: str | None
    ) -> Row:
        def put() -> Row:
            now = now_ns()
            with self.db.transaction() as conn:
                execution = self._execution(job_id, execution_id, runner_scope)
                row = {
                    "id": new_id("run"),
                    "execution_id": execution_id,
                    "org_id": execution["org_id"],
                    "outputs_json": outputs_json,
                    "created_at": now,
                    "updated_at": now,
                }
                try:
                    conn.execute(
                        "INSERT INTO execution_outputs (id, execution_id, org_id, outputs_json,"
                        " created_at, updated_at)"
                        " VALUES (:id, :execution_id, :org_id, :outputs_json, :created_at, :updated_at)",
                        row,
                    )
                except sqlite3.IntegrityError:
                    # Like the reference (a unique index, §3.9); the agent treats it as success.
                    raise BadRequest(
                        f"outputs of execution {execution_id} already exist", error="duplicate key"
                    ) from None
            return row

        return await self._run(put)
