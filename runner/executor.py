"""THE job pipeline: one claimed execution, from ``pending`` to a terminal status.

The state machine, in one place::

    pending --fetching/prepare--> initializing --execute/outputs--> in-progress
            --cleanup--> cleaning-up --> finished
    any running status --> failed | timed-out | cancelled

``PIPELINE`` lists the steps and the execution status each one runs under; ``StatusReporter``
PATCHes a status only when it changes and only along ``EXECUTION_TRANSITIONS`` (the table the
control plane enforces too). ``classify`` turns "what went wrong" into the terminal status,
error code and message; it is a plain function so every path is unit-testable.

Guarantees, each one a bug of the reference runner fixed:
* ``cleanup`` always runs, after a failure in any step and after a cancellation;
* outputs and the result are written before ``finished``; a failure writes a result the server
  keeps (``contents`` is set) with the error code, step, handler and message;
* the job's records are flushed before the final status (losses are counted in the result);
* the final report runs in a shielded scope with its own deadline and retries, so a cancelled
  or timed-out job still reports ``cancelled`` / ``timed-out``;
* what the handler registered on ``ctx.resources`` is closed after ``cleanup``, whatever happened.

What differs by job type (default timeout, sandbox behaviour, whether the job itself is PATCHed
``finished``) is read from the job-type table, ``runner.api.jobtypes``.
"""

from __future__ import annotations

import enum
import json
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import structlog

from runner.api.client import (
    APIError,
    Conflict,
    NotFound,
    RetryPolicy,
    RunnerClient,
    TransportError,
    Unauthorized,
    with_retries,
)
from runner.api.jobtypes import SandboxBehaviour, spec_for
from runner.api.models import (
    EXECUTION_TRANSITIONS,
    ErrorCode,
    ExecutionStatus,
    JobStatus,
    ResultRequest,
    RunnerGroupSettings,
    RunnerJob,
    RunnerJobExecution,
    is_legal_transition,
)
from runner.api.plans import BasePlan, PlanError, decode_plan
from runner.config import Config
from runner.journal import Journal, JournalEntry
from runner.logs import DeliveryReport, JobLogStream, LogPipeline
from runner.metrics import RunnerMetrics
from runner.process import JobProcessRunner
from runner.redact import Redactor
from runner.sandbox import SandboxHandler, SandboxTiming
from runner.sdk.handler import Handler, HandlerError, HandlerRegistry, JobContext, RunnerControl
from runner.sdk.ports import HandlerAPI, ToolSettings
from runner.sdk.settings import SettingsSource
from runner.workspace import Workspaces

log = structlog.get_logger("runner.executor")

STEP_ATTR = "runner_job_execution_step.name"

#: The steps of a job and the execution status each one runs under.
PIPELINE: tuple[tuple[str, ExecutionStatus], ...] = (
    ("fetching", ExecutionStatus.INITIALIZING),
    ("prepare", ExecutionStatus.INITIALIZING),
    ("execute", ExecutionStatus.IN_PROGRESS),
    ("outputs", ExecutionStatus.IN_PROGRESS),
    ("cleanup", ExecutionStatus.CLEANING_UP),
)

#: How long the finalisation (cleanup after an abort, log flush, result, final status) may take.
FINAL_REPORT_SECONDS = 120.0
#: Status changes and outputs are retried across an outage until the job's own deadline (the
#: cancel scope they run in), not for a fixed time: an outage must not fail a running job.
UNTIL_THE_JOB_DEADLINE = float("inf")
CLEANUP_AFTER_ABORT_SECONDS = 60.0
#: How long closing the handler's resources (``ctx.resources``) may take.
RESOURCES_CLOSE_SECONDS = 30.0
#: How long the PATCH that marks a job ``finished`` (job types that finish their job) may take.
FINISH_JOB_SECONDS = 10.0
LOG_FLUSH_SECONDS = 30.0
#: While records keep reaching the server, the flush before the final status waits for them;
#: this long without progress ends the wait.
LOG_STALL_SECONDS = 15.0
LOG_BACKLOG_WAIT_ABOVE = 5_000


class AbortReason(enum.StrEnum):
    """Why the work scope of a job was cancelled from outside the handler."""

    SERVER_CANCELLED = "cancelled"  # the job was cancelled on the control plane
    SERVER_TIMED_OUT = "timed-out"  # the control plane timed the job out
    SERVER_FAILED = "failed"  # the control plane failed the job (e.g. runner offline)
    SHUTDOWN = "shutdown"  # the runner is shutting down (drain grace over)


@dataclass(frozen=True)
class Failure:
    status: ExecutionStatus
    code: ErrorCode
    step: str
    message: str
    details: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    status: ExecutionStatus
    failure: Failure | None = None
    logs: DeliveryReport | None = None
    reported: bool = True


def classify(
    *,
    step: str,
    error: BaseException | None,
    abort: AbortReason | None,
    deadline_hit: bool,
    handler_name: str,
) -> Failure:
    """The terminal status, code and message for a job that did not finish."""
    if deadline_hit:
        return Failure(ExecutionStatus.TIMED_OUT, ErrorCode.TIMED_OUT, step, "execution timeout reached")
    if abort is AbortReason.SERVER_CANCELLED:
        return Failure(ExecutionStatus.CANCELLED, ErrorCode.CANCELLED, step, "job was cancelled")
    if abort is AbortReason.SERVER_TIMED_OUT:
        return Failure(
            ExecutionStatus.TIMED_OUT, ErrorCode.TIMED_OUT, step, "job timed out on the control plane"
        )
    if abort is AbortReason.SERVER_FAILED:
        return Failure(
            ExecutionStatus.FAILED, ErrorCode.CANCELLED, step, "job was failed by the control plane"
        )
    if abort is AbortReason.SHUTDOWN:
        return Failure(
            ExecutionStatus.FAILED, ErrorCode.CANCELLED, step, "runner shut down before the job finished"
        )
    if isinstance(error, PlanError):
        return Failure(ExecutionStatus.FAILED, ErrorCode.INVALID_PLAN, step, f"invalid plan: {error}")
    if isinstance(error, HandlerError):
        return Failure(ExecutionStatus.FAILED, error.code, step, str(error), dict(error.details))
    if error is not None:
        summary = f"{type(error).__name__}: {error}"
        tb = "".join(traceback.format_exception(error, limit=-8))
        return Failure(
            ExecutionStatus.FAILED,
            ErrorCode.INTERNAL,
            step,
            f"{handler_name} raised {summary}",
            {"traceback": tb[-4000:]},
        )
    return Failure(ExecutionStatus.FAILED, ErrorCode.INTERNAL, step, "job ended without an outcome")


def unwrap(exc: BaseException) -> BaseException:
    """The handler's own exception out of the task group's ExceptionGroup wrapping."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def failure_result(failure: Failure, *, job: RunnerJob, handler_name: str, logs_lost: int) -> ResultRequest:
    """A failure result the server keeps: the reference server drops results without contents."""
    metadata: dict[str, str | None] = {
        "step": failure.step,
        "handler": handler_name,
        "job_type": job.type,
        "message": failure.message,
        "status": failure.status.value,
    }
    metadata.update(failure.details)
    if logs_lost:
        metadata["logs_lost"] = str(logs_lost)
    return ResultRequest(
        success=False,
        error_code=int(failure.code),
        error_metadata=metadata,
        contents=json.dumps({"error": failure.message, "error_code": int(failure.code), **metadata}),
    )


class StatusReporter:
    """PATCHes the execution status on transitions only, along the legal transition table."""

    def __init__(self, api: RunnerClient, job_id: str, execution_id: str, journal: Journal) -> None:
        self.api = api
        self.job_id = job_id
        self.execution_id = execution_id
        self.journal = journal
        self.current = ExecutionStatus.PENDING

    async def move_to(self, status: ExecutionStatus) -> None:
        if status == self.current:
            return
        if not is_legal_transition(self.current, status):
            allowed = ", ".join(sorted(s.value for s in EXECUTION_TRANSITIONS[self.current]))
            raise RuntimeError(
                f"illegal execution transition {self.current} -> {status} (allowed: {allowed})"
            )
        # Across an outage of the control plane: bounded by the job's own deadline (its scope).
        await with_retries(
            lambda: self.api.update_execution(
                self.job_id, self.execution_id, status, retry=RetryPolicy(attempts=1)
            ),
            deadline=UNTIL_THE_JOB_DEADLINE,
        )
        self.current = status
        if status == ExecutionStatus.IN_PROGRESS:
            # The one status worth a journal write: an orphan was past its set-up.
            await self.journal.update_status_async(self.execution_id, status.value)

    async def final(self, status: ExecutionStatus, *, deadline: float) -> bool:
        """Report a terminal status, retrying until ``deadline``; True when the server has it.

        A 409 means the server already holds a terminal status for this execution (it cancelled
        or timed it out itself): that is an answer too, not a failure to report.
        """
        if status == self.current:
            return True

        async def send() -> None:
            await self.api.update_execution(
                self.job_id, self.execution_id, status, retry=RetryPolicy(attempts=1), timeout=10.0
            )

        try:
            await with_retries(send, deadline=deadline)
        except Conflict:
            log.info("execution already terminal on the server", execution_id=self.execution_id)
            self.current = status
            return True
        except (APIError, Unauthorized, Exception) as exc:  # noqa: BLE001 - reported, journal keeps it
            log.error(
                "could not report final status",
                execution_id=self.execution_id,
                status=status.value,
                error=str(exc),
            )
            return False
        self.current = status
        return True


@dataclass
class ExecutorDeps:
    """Everything long-lived a job run needs, owned by the daemon."""

    config: Config
    api: RunnerClient
    registry: HandlerRegistry
    logs: LogPipeline
    workspaces: Workspaces
    journal: Journal
    metrics: RunnerMetrics
    runner_secrets: Redactor
    settings: Callable[[], RunnerGroupSettings]
    control_for: Callable[[str], RunnerControl]
    #: The handlers' ports: the control-plane calls they may make, tool and family settings.
    handler_api: HandlerAPI
    tools: ToolSettings
    family_settings: SettingsSource
    #: None: sandbox mode is off for this runner whatever the settings say.
    sandbox: SandboxTiming | None = None


class JobRun:
    """One claimed execution, run through ``PIPELINE``."""

    def __init__(self, deps: ExecutorDeps, job: RunnerJob, execution: RunnerJobExecution, group: str) -> None:
        self.deps = deps
        self.job = job
        self.execution = execution
        self.group = group
        self.abort_reason: AbortReason | None = None
        self._work_scope: anyio.CancelScope | None = None
        self._handler: Handler | None = None
        self._ctx: JobContext | None = None
        self.reporter = StatusReporter(deps.api, job.id, execution.id, deps.journal)
        self.step = "claimed"
        self.done = anyio.Event()
        self.outcome: Outcome | None = None

    @property
    def execution_id(self) -> str:
        return self.execution.id

    # ------------------------------------------------------------------ control from outside
    def abort(self, reason: AbortReason) -> None:
        """Stop the job: the first reason wins; the handler gets a graceful ``cancel`` first."""
        if self.abort_reason is None:
            self.abort_reason = reason
        if self._work_scope is not None:
            self._work_scope.cancel()

    def _choose_handler(self) -> Handler:
        """A fresh instance of the job type's handler; sandbox mode wraps it (job-type table)."""
        handler_cls = self.deps.registry.get(self.job.type)
        timing = self.deps.sandbox
        faked = spec_for(self.job.type).sandbox is SandboxBehaviour.FAKE
        if timing is not None and faked and self.deps.settings().sandbox_mode:
            return SandboxHandler(handler_cls() if handler_cls is not None else None, timing)
        if handler_cls is None:  # the poller never claims these; a registry change could race it
            raise HandlerError(f"no handler for job type {self.job.type!r}", code=ErrorCode.UNSUPPORTED_JOB)
        return handler_cls()

    # ------------------------------------------------------------------ the run
    async def run(self) -> Outcome:
        deps = self.deps
        job = self.job
        started = time.monotonic()
        spool_key = self.execution_id
        secrets = deps.runner_secrets.child()
        write_token = job.log_stream.write_token if job.log_stream else None
        if write_token:
            secrets.register(write_token)
        stream: JobLogStream = deps.logs.open_job(
            log_stream_id=job.log_stream_id,
            write_token=write_token,
            attrs={
                "runner_job.id": job.id,
                "runner_job.type": job.type,
                "log_stream.id": job.log_stream_id or "",
                "runner_job_execution.id": self.execution_id,
            },
            redactor=secrets,
            spool_key=spool_key,
        )
        job_log = stream.logger
        handler_name = job.type
        failure: Failure | None = None
        timeout = job.execution_timeout.total_seconds() if job.execution_timeout else 0.0
        if timeout <= 0:  # the contract's default for the job type (docs/runner-api.md §6.2)
            timeout = spec_for(job.type).default_timeout.total_seconds()
        deadline = anyio.current_time() + timeout
        processes: JobProcessRunner | None = None
        ctx: JobContext | None = None
        handler: Handler | None = None
        cleanup_done = False
        deps.metrics.jobs_running.inc(1, self.group)
        try:
            try:
                processes, handler = await self._set_up(job_log, secrets, spool_key)
                handler_name = type(handler).__name__
            except Exception as exc:  # disk full, a broken handler class, a journal that cannot write
                failure = classify(
                    step="claimed", error=exc, abort=None, deadline_hit=False, handler_name=handler_name
                )
            if failure is None and handler is not None and processes is not None:
                ctx = JobContext(
                    job=job,
                    execution=self.execution,
                    plan=BasePlan(),
                    plan_text="",
                    workspace=deps.workspaces.path(self.execution_id),
                    log=job_log,
                    secrets=secrets,
                    processes=processes,
                    api=deps.handler_api,
                    tools=deps.tools,
                    settings=deps.settings(),
                    control=deps.control_for(self.execution_id),
                    deadline=deadline,
                    family_settings=deps.family_settings,
                )
                self._ctx = ctx
                failure = await self._run_scoped(ctx, handler, job_log, deadline)
                cleanup_done = failure is None
        finally:
            with anyio.CancelScope(shield=True):
                outcome = await self._finalise(
                    ctx=ctx,
                    handler=handler,
                    handler_name=handler_name,
                    processes=processes,
                    stream=stream,
                    failure=failure,
                    cleanup_done=cleanup_done,
                )
                deps.metrics.jobs_running.inc(-1, self.group)
                deps.metrics.jobs.inc(1, job.type, outcome.status.value)
                log.info(
                    "job done",
                    job_id=job.id,
                    execution_id=self.execution_id,
                    type=job.type,
                    status=outcome.status.value,
                    seconds=round(time.monotonic() - started, 3),
                    error=outcome.failure.message if outcome.failure else None,
                )
                self.outcome = outcome
                self.done.set()
        return outcome

    async def _set_up(
        self, job_log: Any, secrets: Redactor, spool_key: str
    ) -> tuple[JobProcessRunner, Handler]:
        """Journal the claim, make the workspace, pick and build the handler."""
        deps, job = self.deps, self.job
        await deps.journal.record_claim_async(
            JournalEntry(
                execution_id=self.execution_id,
                job_id=job.id,
                job_type=job.type,
                group=self.group,
                log_stream_id=job.log_stream_id,
                claimed_at=time.time(),
                pid=os.getpid(),
                last_status=ExecutionStatus.PENDING.value,
                spool_key=spool_key,
            )
        )
        workspace = deps.workspaces.create(self.execution_id)
        processes = JobProcessRunner(
            job_log, workspace=workspace, default_grace=deps.config.child_grace, secrets=secrets
        )
        handler = self._choose_handler()
        self._handler = handler
        job_log.info(
            f"runner {deps.config.runner_id} picked up job {job.id} ({job.type}"
            + (f", {job.operation}" if job.operation else "")
            + f"), execution {self.execution_id}, handler {type(handler).__name__}",
        )
        return processes, handler

    async def _run_scoped(
        self, ctx: JobContext, handler: Handler, job_log: Any, deadline: float
    ) -> Failure | None:
        """``PIPELINE`` inside the job's cancel scope (deadline, aborts) with its status watcher."""
        error: BaseException | None = None
        with anyio.CancelScope(deadline=deadline) as scope:
            self._work_scope = scope
            if self.abort_reason is not None:
                scope.cancel()
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._watch_job, scope)
                    try:
                        await self._pipeline(ctx, handler, job_log)
                    finally:
                        tg.cancel_scope.cancel()
            except Exception as exc:
                error = unwrap(exc)
        self._work_scope = None
        if not scope.cancelled_caught and error is None:
            return None
        return classify(
            step=self.step,
            error=error,
            abort=self.abort_reason if scope.cancelled_caught else None,
            deadline_hit=scope.cancelled_caught and self.abort_reason is None,
            handler_name=type(handler).__name__,
        )

    async def _pipeline(self, ctx: JobContext, handler: Handler, job_log: Any) -> None:
        """Run every step of ``PIPELINE`` under its execution status."""
        metrics = self.deps.metrics
        for step, status in PIPELINE:
            self.step = step
            ctx.log = job_log.bind(**{STEP_ATTR: step})
            await self.reporter.move_to(status)
            began = time.monotonic()
            if step == "fetching":
                await self._fetch_plan(ctx, handler)
            elif step == "prepare":
                await handler.prepare(ctx)
            elif step == "execute":
                await handler.execute(ctx)
            elif step == "outputs":
                await self._post_outputs(ctx.outputs or {})
            elif step == "cleanup":
                await handler.cleanup(ctx)
            metrics.step_seconds.observe(time.monotonic() - began, self.job.type, step)

    async def _post_outputs(self, outputs: dict[str, Any]) -> None:
        """Across an outage of the control plane, bounded by the job's deadline (its scope)."""
        await with_retries(
            lambda: self.deps.api.post_outputs(
                self.job.id, self.execution_id, outputs, retry=RetryPolicy(attempts=1)
            ),
            deadline=UNTIL_THE_JOB_DEADLINE,
        )

    async def _fetch_plan(self, ctx: JobContext, handler: Handler) -> None:
        model_owner = type(handler)
        if not model_owner.fetches_plan(self.job.type):
            ctx.plan = model_owner.plan_model_for(self.job.type)()
            return
        try:
            text = await self.deps.api.get_plan(self.job.id)
        except NotFound:
            # The contract answers 404 for a job created without a plan: an empty plan, and the
            # handler says what it misses.
            ctx.log.info("the job has no plan")
            text = ""
        ctx.plan_text = text
        ctx.plan = decode_plan(self.job.type, text, model_owner.plan_model_for(self.job.type))
        ops = model_owner.operations
        if ops and (self.job.operation or "") not in ops:
            raise HandlerError(
                f"operation {self.job.operation or '(none)'!r} is not supported by {self.job.type} "
                f"(supported: {', '.join(sorted(ops))})",
                code=ErrorCode.INVALID_PLAN,
            )

    async def _watch_job(self, scope: anyio.CancelScope) -> None:
        """Read the job about once a second; abort the work when the server gave up on it."""
        interval = self.deps.config.cancel_poll_interval
        while True:
            await anyio.sleep(interval)
            try:
                job = await self.deps.api.get_job(self.job.id, timeout=5.0)
            except Exception as exc:  # noqa: BLE001 - a missed read is retried next tick
                log.debug("job status read failed", job_id=self.job.id, error=str(exc))
                continue
            reason = {
                "cancelled": AbortReason.SERVER_CANCELLED,
                "timed-out": AbortReason.SERVER_TIMED_OUT,
                "failed": AbortReason.SERVER_FAILED,
            }.get(job.status.value)
            if reason is None:
                continue
            if self.abort_reason is None:
                self.abort_reason = reason
            await self._graceful_cancel()
            scope.cancel()
            return

    async def _graceful_cancel(self) -> None:
        if self._handler is None or self._ctx is None:
            return
        with anyio.move_on_after(self.deps.config.child_grace):
            try:
                await self._handler.cancel(self._ctx)
            except Exception as exc:  # noqa: BLE001 - best effort; the scope is cancelled next
                log.warning("handler cancel failed", job_id=self.job.id, error=str(exc))

    async def _finalise(
        self,
        *,
        ctx: JobContext | None,
        handler: Handler | None,
        handler_name: str,
        processes: JobProcessRunner | None,
        stream: JobLogStream,
        failure: Failure | None,
        cleanup_done: bool,
    ) -> Outcome:
        """Cleanup (if it did not run), logs, result, final status; shielded, own deadlines."""
        deps = self.deps
        final_deadline = anyio.current_time() + FINAL_REPORT_SECONDS
        job_log = stream.logger
        if failure is not None:
            job_log.bind(**{STEP_ATTR: failure.step}).error(
                f"job {failure.status.value}: {failure.message}", error_code=int(failure.code)
            )
        if ctx is not None and handler is not None and not cleanup_done:
            ctx.log = job_log.bind(**{STEP_ATTR: "cleanup"})
            with anyio.move_on_after(CLEANUP_AFTER_ABORT_SECONDS):
                try:
                    await handler.cleanup(ctx)
                except Exception as exc:  # noqa: BLE001 - cleanup failures are logged, not fatal
                    ctx.log.warning(f"cleanup failed: {type(exc).__name__}: {exc}")
        if processes is not None:
            with anyio.move_on_after(deps.config.child_grace + 5):
                await processes.terminate_all()
        if ctx is not None:
            await _close_resources(ctx)

        await _wait_while_logs_flow(stream)
        report = await stream.close(deadline=anyio.current_time() + LOG_FLUSH_SECONDS)
        deps.metrics.log_records.inc(report.delivered, "shipped")
        deps.metrics.log_records.inc(report.spooled, "spooled")
        deps.metrics.log_records.inc(report.lost, "lost")  # spooled ones are delivered later
        undelivered = report.lost + report.spooled

        status = failure.status if failure else ExecutionStatus.FINISHED
        if failure is not None:
            result = failure_result(failure, job=self.job, handler_name=handler_name, logs_lost=undelivered)
        else:
            result = (ctx.result if ctx is not None else None) or ResultRequest(success=True)
            if undelivered:
                meta = dict(result.error_metadata or {})
                meta["logs_lost"] = str(undelivered)
                result = result.model_copy(update={"error_metadata": meta})
        try:
            await with_retries(
                lambda: deps.api.post_result(
                    self.job.id, self.execution_id, result, retry=RetryPolicy(attempts=1)
                ),
                deadline=final_deadline,
            )
        except Exception as exc:  # noqa: BLE001 - the status report below is what matters most
            log.error("could not post result", execution_id=self.execution_id, error=str(exc))

        reported = await self.reporter.final(status, deadline=final_deadline)
        if reported and status == ExecutionStatus.FINISHED:
            await self._finish_job_if_its_type_does()
        if reported:
            await deps.journal.close_async(self.execution_id)
            try:
                deps.workspaces.remove(self.execution_id)
            except OSError as exc:
                log.warning("could not remove workspace", execution_id=self.execution_id, error=str(exc))
        return Outcome(status=status, failure=failure, logs=report, reported=reported)

    async def _finish_job_if_its_type_does(self) -> None:
        """PATCH the *job* ``finished`` where the job-type table says the reference does (a
        shutdown nobody is left to report, ``mng-*`` shut-downs): after the execution's own
        ``finished``, with its own short deadline; a failure is logged, never fatal."""
        if not spec_for(self.job.type).finishes_job_for(self.job.metadata):
            return
        with anyio.move_on_after(FINISH_JOB_SECONDS):
            try:
                await self.deps.api.update_job(self.job.id, JobStatus.FINISHED)
                return
            except (APIError, TransportError) as exc:
                log.warning("could not mark the job finished", job_id=self.job.id, error=str(exc))
                return
        log.warning("timed out marking the job finished", job_id=self.job.id)


async def _close_resources(ctx: JobContext) -> None:
    """Close what the handler registered on ``ctx.resources``: after cleanup, whatever happened.

    Runs in the finalisation's shielded scope with its own deadline; a failure is logged.
    """
    with anyio.move_on_after(RESOURCES_CLOSE_SECONDS) as scope:
        try:
            await ctx.resources.aclose()
        except Exception as exc:  # noqa: BLE001 - a resource that fails to close must not lose the report
            ctx.log.warning(f"closing the job's resources failed: {type(exc).__name__}: {exc}")
    if scope.cancelled_caught:
        ctx.log.warning("closing the job's resources timed out")


async def _wait_while_logs_flow(stream: JobLogStream) -> None:
    """Give a big backlog of records the time it needs, as long as the server keeps taking them.

    A job that printed a million lines in a second must not lose the tail to a fixed flush
    deadline; a control plane that stopped accepting must not hold the final status forever.
    """
    last, last_progress = stream.delivered, anyio.current_time()
    # A small backlog is close()'s job (it ships at once); only a big one is waited for here.
    while stream.backlog > LOG_BACKLOG_WAIT_ABOVE:
        await anyio.sleep(0.1)
        now = anyio.current_time()
        if stream.delivered != last:
            last, last_progress = stream.delivered, now
        elif now - last_progress > LOG_STALL_SECONDS:
            return
