"""The monitor's transaction: available, execution and overall timeouts and runner liveness."""

from __future__ import annotations

from controlplane.store_base import (
    _RUNNING_SQL,
    HEARTBEAT_RETENTION_NS,
    MonitorReport,
    StoreBase,
)
from controlplane.wire import NS, now_ns


class MonitorStore(StoreBase):
    # ================================================================ monitor

    async def monitor_tick(self, offline_after_ns: int, listening_since_ns: int = 0) -> MonitorReport:
        """Enforce available, execution and overall timeouts and runner liveness, once.

        ``listening_since_ns`` is when this control plane last began to hear runners again (its
        start, or the end of a stall or pause): a runner's silence is only counted from then,
        since heartbeats sent while nobody listened were lost through no fault of the runner.
        """
        return await self._run(self._monitor_tick, offline_after_ns, listening_since_ns)

    def _monitor_tick(self, offline_after_ns: int, listening_since_ns: int = 0) -> MonitorReport:
        now = now_ns()
        conn = self.conn
        report = MonitorReport()
        expired_available = self._all(
            "SELECT * FROM runner_jobs WHERE status = 'available' AND available_deadline < ?", (now,)
        )
        expired_executions = self._all(
            f"SELECT id, job_id FROM runner_job_executions WHERE status IN {_RUNNING_SQL} AND deadline < ?",  # noqa: S608 - _RUNNING_SQL is a constant
            (now,),
        )
        expired_overall = self._all(
            "SELECT id, current_execution_id FROM runner_jobs"
            " WHERE status IN ('queued', 'available', 'in-progress') AND overall_deadline < ?",
            (now,),
        )
        cutoff = now - offline_after_ns
        silent_runners = (
            self._all(
                "SELECT id, last_heartbeat_at FROM runners WHERE status = 'active' AND last_heartbeat_at < ?",
                (cutoff,),
            )
            if listening_since_ns <= cutoff
            else []
        )
        if not (expired_available or expired_executions or expired_overall or silent_runners):
            return report
        with self.db.transaction():
            for job in expired_overall:
                if job["current_execution_id"]:
                    conn.execute(
                        f"UPDATE runner_job_executions SET status = 'timed-out', updated_at = ?"  # noqa: S608 - _RUNNING_SQL is a constant
                        f" WHERE id = ? AND status IN {_RUNNING_SQL}",
                        (now, job["current_execution_id"]),
                    )
                self._finish_job(job["id"], "timed-out", "overall timeout", now)
                report.overall_timeouts += 1
            overall_ids = {job["id"] for job in expired_overall}
            for job in expired_available:
                if job["id"] in overall_ids:
                    continue
                if job["attempts"] < job["max_executions"]:
                    self._make_available(
                        job, f"no runner picked up the job in time (attempt {job['attempts']})", now
                    )
                    report.retried += 1
                else:
                    self._finish_job(job["id"], "timed-out", "timeout waiting for runner to pick up job", now)
                    report.available_timeouts += 1
            for execution in expired_executions:
                if execution["job_id"] in overall_ids:
                    continue
                self._end_execution(
                    execution["id"], execution["job_id"], "timed-out", "timed-out", "execution timeout", now
                )
                report.execution_timeouts += 1
            for runner in silent_runners:
                silent_for = (now - int(runner["last_heartbeat_at"])) / NS
                description = f"runner went offline: no heartbeat for {silent_for:.1f}s"
                conn.execute(
                    "UPDATE runners SET status = 'offline', status_description = ?, updated_at = ?"
                    " WHERE id = ?",
                    (description, now, runner["id"]),
                )
                running = self._all(
                    "SELECT id, job_id FROM runner_job_executions WHERE runner_id = ? AND status IN"  # noqa: S608 - _RUNNING_SQL is a constant
                    f" {_RUNNING_SQL}",
                    (runner["id"],),
                )
                for execution in running:
                    self._end_execution(
                        execution["id"], execution["job_id"], "failed", "failed", description, now
                    )
                report.offline_runners.append(runner["id"])
        return report

    async def prune(self) -> None:
        """Housekeeping: drop heartbeats nobody reads any more."""

        def prune() -> None:
            with self.db.transaction() as conn:
                conn.execute(
                    "DELETE FROM heartbeats WHERE created_at < ?", (now_ns() - HEARTBEAT_RETENTION_NS,)
                )

        await self._run_offloaded(prune)

    async def job_status_counts(self) -> dict[str, int]:
        def query() -> dict[str, int]:
            rows = self._all("SELECT status, COUNT(*) AS n FROM runner_jobs GROUP BY status")
            return {row["status"]: int(row["n"]) for row in rows}

        return await self._run(query)
