"""Restart recovery: executions a previous runner process claimed and never finished.

At start the journal may hold executions of a process that crashed or was killed (``kill -9``,
OOM, a node lost). Each is reported ``failed`` with a result that says the runner restarted
(built by the executor's own ``failure_result``, so an orphan's result has the same shape as any
failure's), its spooled log records are delivered first, then its workspace and journal entry
go. An orphan the control plane cannot hear about yet stays in the journal and is retried.

Terraform state locks the orphan held (journaled by ``runner.adapters`` when the lock call
succeeded) are released first, through the control plane's unlock endpoint and with the lock's
own ID, so the next plan of that workspace is not refused with "Error acquiring the state lock"
for ever (issue 11). A lock that is already gone, or now someone else's, is left alone.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Collection

import anyio
import structlog

from runner.api.client import APIError, RetryPolicy, RunnerClient, TransportError, with_retries
from runner.api.models import ErrorCode, ExecutionStatus, RunnerJob
from runner.backoff import backoff_delay
from runner.executor import Failure, failure_result
from runner.journal import Journal, JournalEntry
from runner.logs import LogPipeline
from runner.workspace import Workspaces

log = structlog.get_logger("runner.orphans")

ORPHAN_MESSAGE = "runner restarted while the job was running"
#: Each orphan's report (logs, result, status) gets this long before it is retried later.
REPORT_SECONDS = 60.0


def orphan_failure(entry: JournalEntry) -> Failure:
    """What an orphaned execution became: failed, in the step the journal last saw."""
    return Failure(ExecutionStatus.FAILED, ErrorCode.RUNNER_RESTARTED, entry.last_status, ORPHAN_MESSAGE)


class OrphanRecovery:
    """Reports the journal's orphans; ``running`` names executions this process runs itself."""

    def __init__(
        self,
        *,
        api: RunnerClient,
        journal: Journal,
        workspaces: Workspaces,
        logs: Callable[[], LogPipeline],
        running: Callable[[], Collection[str]],
    ) -> None:
        self.api = api
        self.journal = journal
        self.workspaces = workspaces
        self.logs = logs
        self.running = running

    async def recover(self) -> set[str]:
        """Report every orphan once; returns those not reported yet (control plane unreachable)."""
        pending: set[str] = set()
        for entry in self.journal.entries():
            # Not the pid: in a container the restarted runner often has the same one (1).
            if entry.execution_id in self.running():
                continue
            if not await self.recover_one(entry):
                pending.add(entry.execution_id)
        removed = self.workspaces.sweep(keep=pending | set(self.running()))
        if removed:
            log.info("removed stale workspaces", count=len(removed))
        return pending

    async def retry_until_done(self) -> None:
        """Keep trying to report orphans until the control plane has them all."""
        attempt = 0
        while True:
            await anyio.sleep(backoff_delay(attempt, base=5.0, cap=120.0, jitter="none"))
            if not await self.recover():
                return
            attempt += 1

    async def release_locks(self, entry: JournalEntry, deadline: float) -> bool:
        """Unlock each state lock the orphan held; False when the control plane is unreachable."""
        for lock in entry.held_locks:
            workspace_id, lock_id = lock.get("workspace_id", ""), lock.get("lock_id", "")
            body = (lock.get("info") or json.dumps({"ID": lock_id})).encode()
            unlock = functools.partial(
                self.api.request,
                "POST",
                f"/v1/terraform-workspaces/{workspace_id}/unlock",
                params={"job_id": entry.job_id},
                content=body,
                headers={"Content-Type": "application/json"},
                retry=RetryPolicy(attempts=1),
            )
            try:
                await with_retries(unlock, deadline=deadline)
            except TransportError as exc:
                log.warning("could not release the orphan's state lock yet", lock_id=lock_id, error=str(exc))
                return False
            except APIError as exc:
                # 404/409/423: not locked any more, or locked by someone else now: not ours to touch.
                log.warning(
                    "the orphan's state lock was not released",
                    workspace_id=workspace_id,
                    lock_id=lock_id,
                    status=exc.status,
                    error=str(exc),
                )
            else:
                log.warning(
                    "released the state lock an orphaned execution held",
                    workspace_id=workspace_id,
                    lock_id=lock_id,
                    execution_id=entry.execution_id,
                )
            await self.journal.forget_lock_async(entry.job_id, workspace_id, lock_id)
        return True

    async def recover_one(self, entry: JournalEntry) -> bool:
        log.warning(
            "reporting an execution orphaned by a previous runner process",
            job_id=entry.job_id,
            execution_id=entry.execution_id,
            last_status=entry.last_status,
        )
        deadline = anyio.current_time() + REPORT_SECONDS
        if not await self.release_locks(entry, deadline):
            return False
        report = await self.logs().deliver_spooled(entry.spool_key, deadline=deadline)
        result = failure_result(
            orphan_failure(entry),
            job=RunnerJob(id=entry.job_id, type=entry.job_type),
            handler_name=entry.job_type,
            logs_lost=report.lost + report.spooled,
        )
        try:
            await with_retries(
                lambda: self.api.post_result(
                    entry.job_id, entry.execution_id, result, retry=RetryPolicy(attempts=1)
                ),
                deadline=deadline,
            )
        except APIError as exc:
            log.warning("could not post the orphan's result", execution_id=entry.execution_id, error=str(exc))
        except TransportError as exc:
            log.warning("could not post the orphan's result", execution_id=entry.execution_id, error=str(exc))
            return False
        try:
            await with_retries(
                lambda: self.api.update_execution(
                    entry.job_id, entry.execution_id, ExecutionStatus.FAILED, retry=RetryPolicy(attempts=1)
                ),
                deadline=deadline,
            )
        except APIError as exc:
            if exc.status not in (404, 409):  # 409: the server already ended it (e.g. cancelled)
                log.warning("could not report the orphan", execution_id=entry.execution_id, error=str(exc))
                return False
        except TransportError as exc:
            log.warning("could not report the orphan", execution_id=entry.execution_id, error=str(exc))
            return False
        self.workspaces.remove(entry.execution_id)
        await self.journal.close_async(entry.execution_id)
        return True
