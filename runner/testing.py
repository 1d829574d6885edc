"""How handler tests are written: a real ``JobContext`` without a daemon, driven in process.

    from runner.testing import make_context, run_handler

    async def test_my_handler(tmp_path):
        run = await run_handler(MyHandler(), {"vars": {"x": 1}}, job_type="terraform-deploy",
                                operation="create-apply-plan", workspace=tmp_path)
        assert run.outputs == {...}
        assert "planned" in run.log.messages("info")

``make_context`` builds the context the executor would: the job, the decoded plan, a recording
job log (``RecordingLog``) that masks like the real one, the runner's own secret registry and
process runner (real children, own process group, SIGINT then SIGKILL), tool settings, family
settings from a mapping, and an exit stack. Its control-plane port defaults to ``NoAPI`` (every
call fails the test); pass ``api=`` a fake or the agent's adapter. ``run_handler`` drives
``prepare -> execute -> cleanup`` as the executor does (cleanup always, the exit stack closed
after it), and with ``cancel_after`` the graceful ``cancel`` and then the cancellation of the
job's scope. It is the public twin of the executor for tests; nothing here talks to a daemon.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from runner.api.models import ExecutionStatus, JobStatus, RunnerGroupSettings, RunnerJob, RunnerJobExecution
from runner.api.plans import BasePlan, decode_plan
from runner.process import JobProcessRunner
from runner.redact import Redactor
from runner.sdk.handler import Handler, JobContext, JobLog, ProcessRunner, RunnerControl, SecretRegistry
from runner.sdk.ports import APIReply, APIRequestFailed, HandlerAPI, ToolSettings
from runner.sdk.settings import SettingsSource

__all__ = [
    "HandlerRun",
    "NoAPI",
    "NoControl",
    "Record",
    "RecordingLog",
    "RecordingSecrets",
    "make_context",
    "run_handler",
]


class RecordingSecrets(Redactor):
    """The runner's secret registry (same masking), also keeping the raw values registered, so a
    test can assert what a handler registered (``values``)."""

    def __init__(self, *values: str | None) -> None:
        self.values: set[str] = set()
        super().__init__(*values)

    def register(self, *values: str | None) -> None:
        self.values.update(v for v in values if v)
        super().register(*values)


# --------------------------------------------------------------------------- the job log


@dataclass(eq=False)
class Record:
    """One job log record; unpacks as, and compares equal to, ``(level, message, attrs)``."""

    level: str
    message: str
    attrs: dict[str, Any]
    #: ``time.perf_counter()`` when it was logged (benches time steps with it).
    at: float = field(default_factory=time.perf_counter)

    def __iter__(self) -> Iterator[Any]:
        return iter((self.level, self.message, self.attrs))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Record | tuple):
            return tuple(self) == tuple(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]


class RecordingLog:
    """A ``JobLog`` that keeps masked records in a list, shared with its ``bind`` children.

    Levels are lower case (``info``, ``warning``...); string attributes are masked like the
    message, by the context's secret registry.
    """

    def __init__(
        self,
        secrets: SecretRegistry | None = None,
        records: list[Record] | None = None,
        attrs: dict[str, Any] | None = None,
    ) -> None:
        self.secrets: SecretRegistry = secrets if secrets is not None else Redactor()
        self.records: list[Record] = records if records is not None else []
        self._attrs = attrs or {}

    def log(self, level: str, message: str, **attrs: Any) -> None:
        masked = {k: self.secrets.mask(v) if isinstance(v, str) else v for k, v in attrs.items()}
        self.records.append(Record(level.lower(), self.secrets.mask(str(message)), {**self._attrs, **masked}))

    def debug(self, message: str, **attrs: Any) -> None:
        self.log("debug", message, **attrs)

    def info(self, message: str, **attrs: Any) -> None:
        self.log("info", message, **attrs)

    def warning(self, message: str, **attrs: Any) -> None:
        self.log("warning", message, **attrs)

    def error(self, message: str, **attrs: Any) -> None:
        self.log("error", message, **attrs)

    def bind(self, **attrs: Any) -> JobLog:
        return RecordingLog(self.secrets, self.records, {**self._attrs, **attrs})

    def messages(self, level: str | None = None) -> list[str]:
        return [r.message for r in self.records if level is None or r.level == level.lower()]

    def lines(self, stream: str) -> list[str]:
        """Child output of one stream (``stdout``/``stderr``), as the process runner logged it."""
        return [r.message for r in self.records if r.attrs.get("stream") == stream]

    def text(self) -> str:
        return "\n".join(f"{r.level} {r.message} {json.dumps(r.attrs, default=str)}" for r in self.records)


# --------------------------------------------------------------------------- stand-ins


class NoAPI:
    """A ``HandlerAPI`` for handlers that make no control-plane call: every call fails loudly."""

    def _refuse(self, what: str) -> APIRequestFailed:
        return APIRequestFailed(f"runner.testing.NoAPI: unexpected control-plane call {what}", status=599)

    async def app_config(self, app_id: str, app_config_id: str) -> dict[str, Any]:
        raise self._refuse("app_config")

    async def terraform_state(
        self, workspace_id: str, job_id: str, *, headers: Mapping[str, str] | None = None
    ) -> APIReply:
        raise self._refuse("terraform_state")

    async def put_terraform_state(
        self,
        workspace_id: str,
        job_id: str,
        state: bytes,
        *,
        lock_id: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> APIReply:
        raise self._refuse("put_terraform_state")

    async def lock_terraform_workspace(
        self, workspace_id: str, job_id: str, lock_info: bytes, *, headers: Mapping[str, str] | None = None
    ) -> APIReply:
        raise self._refuse("lock_terraform_workspace")

    async def unlock_terraform_workspace(
        self, workspace_id: str, job_id: str, lock_info: bytes, *, headers: Mapping[str, str] | None = None
    ) -> APIReply:
        raise self._refuse("unlock_terraform_workspace")

    async def post_terraform_state_json(self, workspace_id: str, job_id: str, state_json: bytes) -> None:
        raise self._refuse("post_terraform_state_json")

    async def action_workflow_run(self, install_id: str, run_id: str) -> dict[str, Any]:
        raise self._refuse("action_workflow_run")

    async def action_workflow_config(self, config_id: str) -> dict[str, Any]:
        raise self._refuse("action_workflow_config")

    async def update_action_workflow_step(
        self, install_id: str, workflow_run_id: str, step_id: str, *, status: str, execution_duration_ns: int
    ) -> dict[str, Any]:
        raise self._refuse("update_action_workflow_step")

    async def helm_releases(self, helm_chart_id: str, namespace: str) -> list[dict[str, Any]]:
        raise self._refuse("helm_releases")

    async def create_helm_release(
        self, helm_chart_id: str, namespace: str, key: str, release: Mapping[str, Any]
    ) -> None:
        raise self._refuse("create_helm_release")

    async def update_helm_release(
        self, helm_chart_id: str, namespace: str, key: str, release: Mapping[str, Any]
    ) -> None:
        raise self._refuse("update_helm_release")

    async def delete_helm_release(self, helm_chart_id: str, namespace: str, key: str) -> None:
        raise self._refuse("delete_helm_release")


class NoControl:
    """A ``RunnerControl`` that records shutdown requests instead of stopping anything."""

    def __init__(self) -> None:
        self.shutdowns: list[dict[str, Any]] = []

    def request_shutdown(self, *, graceful: bool, exit_code: int = 0, reason: str = "") -> None:
        self.shutdowns.append({"graceful": graceful, "exit_code": exit_code, "reason": reason})

    def loop_ages_ns(self) -> dict[str, int]:
        return {}


# --------------------------------------------------------------------------- the context


def make_context(
    job_type: str,
    plan: BasePlan | Mapping[str, Any] | str | None = None,
    *,
    workspace: Path,
    operation: str = "",
    owner_id: str = "",
    metadata: Mapping[str, str] | None = None,
    job_id: str = "job1",
    execution_id: str = "exe1",
    api: HandlerAPI | None = None,
    tools: ToolSettings | None = None,
    env: Mapping[str, Any] | SettingsSource | None = None,
    secrets: SecretRegistry | None = None,
    log: JobLog | None = None,
    processes: ProcessRunner | None = None,
    control: RunnerControl | None = None,
    settings: RunnerGroupSettings | None = None,
    deadline: float = float("inf"),
) -> JobContext:
    """A ``JobContext`` as the executor builds it, for a handler driven by a test.

    ``plan`` may be a plan model, a mapping or JSON text (decoded with the job type's model, as
    the executor does); ``env`` holds family settings by variable name
    (``{"RUNNER_TERRAFORM_SHORTCUTS": "false"}``). ``ctx.log`` is a ``RecordingLog`` unless
    ``log`` is given; ``ctx.secrets`` a ``RecordingSecrets`` unless ``secrets`` is given.
    """
    if isinstance(plan, BasePlan):
        parsed: BasePlan = plan
        text = json.dumps(plan.to_wire())
    else:
        text = plan if isinstance(plan, str) else json.dumps(dict(plan or {}))
        parsed = decode_plan(job_type, text)
    registry = secrets if secrets is not None else RecordingSecrets()
    job_log = log if log is not None else RecordingLog(registry)
    family = env if isinstance(env, SettingsSource) else SettingsSource(env or {})
    return JobContext(
        job=RunnerJob(
            id=job_id,
            type=job_type,
            operation=operation or None,
            owner_id=owner_id or None,
            metadata=dict(metadata or {}),
            status=JobStatus.IN_PROGRESS,
        ),
        execution=RunnerJobExecution(
            id=execution_id, runner_job_id=job_id, status=ExecutionStatus.IN_PROGRESS
        ),
        plan=parsed,
        plan_text=text,
        workspace=workspace,
        log=job_log,
        secrets=registry,
        processes=processes
        if processes is not None
        else JobProcessRunner(job_log, workspace=workspace, default_grace=5.0, secrets=registry),
        api=api if api is not None else NoAPI(),
        tools=tools if tools is not None else ToolSettings(tools_dir=workspace / ".tools", child_grace=5.0),
        settings=settings if settings is not None else RunnerGroupSettings(),
        control=control if control is not None else NoControl(),
        deadline=deadline,
        family_settings=family,
    )


# --------------------------------------------------------------------------- driving a handler


@dataclass
class HandlerRun:
    """What a handler did: its context (outputs, result, log) and how it ended."""

    ctx: JobContext
    #: The first exception of prepare, execute or cleanup (None when it finished or was cancelled).
    error: BaseException | None = None
    #: The step that raised or was running when the cancel came.
    step: str = ""
    cancelled: bool = False

    @property
    def log(self) -> RecordingLog:
        assert isinstance(self.ctx.log, RecordingLog), "make_context(log=...) replaced the recording log"
        return self.ctx.log

    @property
    def outputs(self) -> dict[str, Any] | None:
        return self.ctx.outputs

    @property
    def result(self) -> Any:
        return self.ctx.result


async def run_handler(
    handler: Handler,
    plan: BasePlan | Mapping[str, Any] | str | None = None,
    *,
    ctx: JobContext | None = None,
    cancel_after: float | None = None,
    raise_errors: bool = True,
    **context: Any,
) -> HandlerRun:
    """``prepare -> execute``, then ``cleanup`` whatever happened and the exit stack closed, as
    the executor runs a job.

    Pass ``ctx`` (from ``make_context``), or the plan plus ``make_context``'s keywords
    (``job_type`` and ``workspace`` at least). With ``cancel_after`` seconds the run is cancelled
    then as the executor cancels it: ``handler.cancel(ctx)`` first, then the scope, so child
    processes get SIGINT, the grace period, then SIGKILL. A handler's exception is re-raised
    after cleanup unless ``raise_errors`` is false (then it is in ``HandlerRun.error``).
    """
    if ctx is None:
        job_type = context.pop("job_type")
        ctx = make_context(job_type, plan, **context)
    elif context or plan is not None:
        raise TypeError("run_handler: pass either ctx or a plan with make_context's keywords")
    run = HandlerRun(ctx)
    try:
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                if cancel_after is not None:
                    tg.start_soon(_cancel_later, handler, run, scope, cancel_after)
                try:
                    for step in ("prepare", "execute"):
                        run.step = step
                        await getattr(handler, step)(ctx)
                except Exception as exc:  # reported after cleanup, as the executor does
                    run.error = exc
                tg.cancel_scope.cancel()
        run.cancelled = scope.cancelled_caught
    finally:  # also when the test cancels the task running the handler
        with anyio.CancelScope(shield=True):
            try:
                await handler.cleanup(ctx)
            except Exception as exc:
                if run.error is None:  # else the first failure is the job's, as in the executor
                    run.error, run.step = exc, "cleanup"
                else:
                    ctx.log.warning(f"cleanup failed: {type(exc).__name__}: {exc}")
            finally:
                await ctx.resources.aclose()
    if run.error is not None and raise_errors:
        raise run.error
    return run


async def _cancel_later(handler: Handler, run: HandlerRun, scope: anyio.CancelScope, delay: float) -> None:
    await anyio.sleep(delay)
    await handler.cancel(run.ctx)
    scope.cancel()
