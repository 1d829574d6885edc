"""The ``actions-workflow`` handler: fetch the run and its config, run each step, PUT its status.

``prepare`` reads the run (``plan.install_id``, ``plan.id``) and its config and matches the
steps by id (``handlers.actions.steps``): a mismatch fails the job before any step runs.
``execute`` resolves what every step shares once (kubeconfig, cloud credentials), then for each
step in the run's order: PUT ``in-progress``; clone its repository on first use; write its
outputs file; run its command (``handlers.actions.command``) with its layered environment
(``handlers.actions.env``) under its deadline (``handlers.actions.timeouts``); read its outputs
(``handlers.actions.outputs``); PUT ``finished``, ``error`` or ``timed-out`` with the
``execution_duration`` in nanoseconds. After a failure, a timeout or a cancel, the steps not run
are PUT ``error`` and the job log says why. Status PUTs made after a step started are shielded
from the job's cancellation, with their own bound, so a cancelled job still reports its steps.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, ClassVar

import anyio

from handlers.actions.command import (
    CommandChoice,
    choose_command,
    inline_argv,
    resolve_program,
    split_command,
)
from handlers.actions.env import builtins, layer_env
from handlers.actions.outputs import MAX_OUTPUTS_BYTES, OutputsError, job_outputs, parse_outputs
from handlers.actions.repos import RepoCache
from handlers.actions.steps import (
    WorkflowConfig,
    WorkflowMismatch,
    WorkflowRun,
    WorkflowStep,
    match_steps,
    parse_config,
    parse_run,
)
from handlers.actions.timeouts import NS, describe_seconds, step_deadline, workflow_deadline
from handlers.common.aws import resolve_aws
from handlers.common.azure import azure_env
from handlers.common.kubeconfig import kubeconfig_file, resolve_kubeconfig
from handlers.common.masking import register_env_secrets
from runner.sdk import (
    APIRequestFailed,
    APIUnreachable,
    ChildProcessFailed,
    ErrorCode,
    Handler,
    HandlerError,
    JobContext,
    JobLog,
)
from runner.sdk.plans import ActionWorkflowRunPlan, SandboxMode

IN_PROGRESS = "in-progress"
FINISHED = "finished"
ERROR = "error"
TIMED_OUT = "timed-out"
#: What sandbox mode reports for every step, as the reference does.
SANDBOX_STEP_NS = 5 * NS
#: The bound of the status PUTs made after a step started (shielded from the job's cancel).
REPORT_SECONDS = 15.0


class StepFailed(HandlerError):
    """A step ended ``error`` or ``timed-out``; the job fails with its name and why."""


class ActionsWorkflowHandler(Handler):
    plan_model: ClassVar[type[ActionWorkflowRunPlan] | None] = ActionWorkflowRunPlan

    def __init__(self) -> None:
        self._plan = ActionWorkflowRunPlan()
        self._run: WorkflowRun | None = None
        self._config: WorkflowConfig | None = None
        self._steps: list[WorkflowStep] = []
        self._cancelled = False

    # ------------------------------------------------------------------ the control plane
    async def _load(self, ctx: JobContext) -> list[WorkflowStep]:
        plan = self._plan = ctx.plan_as(ActionWorkflowRunPlan)
        if not plan.id or not plan.install_id:
            raise WorkflowMismatch("the plan names no action workflow run (id and install_id are required)")
        ctx.log.info("fetching the action workflow run", run_id=plan.id, install_id=plan.install_id)
        try:
            run = self._run = parse_run(await ctx.api.action_workflow_run(plan.install_id, plan.id))
            if not run.config_id:
                raise WorkflowMismatch(f"action workflow run {plan.id} names no action_workflow_config_id")
            ctx.log.info("fetching the action workflow config", config_id=run.config_id)
            config = self._config = parse_config(await ctx.api.action_workflow_config(run.config_id))
        except (APIRequestFailed, APIUnreachable) as exc:
            raise HandlerError(f"cannot read the action workflow run or its config: {exc}") from exc
        try:
            return match_steps(plan.steps or [], run, config)
        except WorkflowMismatch:
            # Nothing runs; the run's steps say so rather than stay pending forever.
            for step in run.steps:
                if step.id:
                    await self._put(ctx, step.id, ERROR, 0, must=False)
            raise

    async def _put(
        self, ctx: JobContext, step_id: str, status: str, duration_ns: int, *, must: bool = True
    ) -> None:
        """One step status; shielded and bounded, so it lands even while the job is cancelled."""
        failure: Exception | None = None
        with anyio.CancelScope(shield=True), anyio.move_on_after(REPORT_SECONDS) as bound:
            try:
                await ctx.api.update_action_workflow_step(
                    self._plan.install_id,
                    self._plan.id,
                    step_id,
                    status=status,
                    execution_duration_ns=duration_ns,
                )
            except (APIRequestFailed, APIUnreachable) as exc:
                failure = exc
        if bound.cancelled_caught:
            failure = TimeoutError(f"no answer within {REPORT_SECONDS:.0f}s")
        if failure is None:
            return
        message = f"cannot set step {step_id} {status}: {failure}"
        if must:
            raise HandlerError(message)
        ctx.log.warning(message)

    async def _mark_rest(self, ctx: JobContext, start: int, reason: str) -> None:
        for step in self._steps[start:]:
            ctx.log.bind(workflow_step_name=step.name, step_run_id=step.run_step_id).error(
                f"step {step.name} not attempted: {reason}"
            )
            await self._put(ctx, step.run_step_id, ERROR, 0, must=False)

    # ------------------------------------------------------------------ the pipeline
    async def prepare(self, ctx: JobContext) -> None:
        self._steps = await self._load(ctx)
        config = self._config
        assert config is not None
        names = ", ".join(step.name for step in self._steps)
        timeout = f"{config.timeout_ns / NS:g}s" if config.timeout_ns else "the job's deadline"
        ctx.log.info(f"action workflow: {len(self._steps)} steps ({names}); timeout {timeout}")

    async def cancel(self, ctx: JobContext) -> None:
        self._cancelled = True

    async def execute(self, ctx: JobContext) -> None:
        plan, run = self._plan, self._run
        assert run is not None
        assert self._config is not None
        end = workflow_deadline(anyio.current_time(), self._config.timeout_ns, ctx.deadline)
        root = ctx.workspace
        try:
            kubeconfig, cloud_env = await self._shared_env(ctx, plan, root)
        except Exception as exc:
            await self._mark_rest(ctx, 0, f"the workflow's environment could not be made: {exc}")
            raise
        for layer in (plan.builtin_env_vars, run.run_env_vars, plan.override_env_vars):
            register_env_secrets(layer or {}, ctx.secrets)
        repos = RepoCache(root)
        results: list[tuple[str, dict[str, Any]]] = []
        for step in self._steps:
            try:
                outputs = await self._run_step(ctx, step, root, repos, kubeconfig, cloud_env, end)
            except Exception:
                await self._mark_rest(ctx, step.position + 1, f"step {step.name} failed before it")
                raise
            results.append((step.name, outputs))
        ctx.set_outputs(job_outputs(results))

    async def _shared_env(
        self, ctx: JobContext, plan: ActionWorkflowRunPlan, root: Path
    ) -> tuple[Path | None, dict[str, str]]:
        """The kubeconfig and the cloud credentials every step gets (made once per job)."""
        session = f"byoc-runner-{ctx.job.id}"[:64]
        kubeconfig: Path | None = None
        if plan.cluster_info is not None:
            config = await resolve_kubeconfig(
                plan.cluster_info, secrets=ctx.secrets, log=ctx.log, session_name=session
            )
            kubeconfig = ctx.resources.enter_context(kubeconfig_file(config, root))
        cloud: dict[str, str] = {}
        if plan.aws_auth is not None:
            identity = await resolve_aws(
                plan.aws_auth, secrets=ctx.secrets, log=ctx.log, session_name=session
            )
            cloud.update(identity.env())
        cloud.update(azure_env(plan.azure_auth, secrets=ctx.secrets))
        return kubeconfig, cloud

    async def _run_step(
        self,
        ctx: JobContext,
        step: WorkflowStep,
        root: Path,
        repos: RepoCache,
        kubeconfig: Path | None,
        cloud_env: dict[str, str],
        workflow_end: float,
    ) -> dict[str, Any]:
        log = ctx.log.bind(workflow_step_name=step.name, step_run_id=step.run_step_id)
        started = time.monotonic_ns()

        def elapsed() -> int:
            return time.monotonic_ns() - started

        log.info(f"executing step {step.name} ({step.position + 1} of {len(self._steps)})")
        await self._put(ctx, step.run_step_id, IN_PROGRESS, 0)
        now = anyio.current_time()
        deadline = step_deadline(now, step.config.timeout_ns, workflow_end)
        outputs_file = root / f"{step.position}.nuon-outputs.json"
        try:
            with anyio.CancelScope(deadline=deadline) as scope:
                await self._execute_step(ctx, log, step, root, repos, outputs_file, kubeconfig, cloud_env)
            if scope.cancelled_caught:
                own = step.config.timeout_ns and now + step.config.timeout_ns / NS <= workflow_end
                limit = describe_seconds(deadline - now)
                which = "its timeout" if own else "the workflow's timeout"
                log.error(f"step {step.name} timed out after {limit} ({which}); its processes were killed")
                await self._put(ctx, step.run_step_id, TIMED_OUT, elapsed(), must=False)
                raise StepFailed(
                    f"step {step.name} timed out after {limit} ({which})",
                    code=ErrorCode.TIMED_OUT,
                    step=step.name,
                    step_status=TIMED_OUT,
                )
            outputs = await anyio.to_thread.run_sync(_read_outputs, outputs_file)
        except anyio.get_cancelled_exc_class():
            timed_out = not self._cancelled and anyio.current_time() >= ctx.deadline
            status = TIMED_OUT if timed_out else ERROR
            why = "the job's deadline passed" if timed_out else "the job was cancelled"
            log.error(f"step {step.name} stopped: {why}; its processes were killed")
            await self._put(ctx, step.run_step_id, status, elapsed(), must=False)
            await self._mark_rest(ctx, step.position + 1, why)
            raise
        except StepFailed:
            raise
        except Exception as exc:
            await self._put(ctx, step.run_step_id, ERROR, elapsed(), must=False)
            raise _step_failure(step, exc) from exc
        log.info(f"step {step.name} finished", outputs=sorted(outputs))
        await self._put(ctx, step.run_step_id, FINISHED, elapsed())
        return outputs

    async def _execute_step(
        self,
        ctx: JobContext,
        log: JobLog,
        step: WorkflowStep,
        root: Path,
        repos: RepoCache,
        outputs_file: Path,
        kubeconfig: Path | None,
        cloud_env: dict[str, str],
    ) -> None:
        cwd, source_dir = root, None
        source = step.git_source
        if source is not None:
            cwd, source_dir = await repos.checkout(
                source, processes=ctx.processes, secrets=ctx.secrets, log=log
            )
        await anyio.to_thread.run_sync(_fresh_file, outputs_file, 0o600)
        register_env_secrets(step.plan.interpolated_env_vars or {}, ctx.secrets)
        env = layer_env(
            builtin_env_vars=self._plan.builtin_env_vars,
            builtins=builtins(
                outputs_file=outputs_file, root=root, kubeconfig=kubeconfig, cloud_env=cloud_env
            ),
            step_env_vars=step.plan.interpolated_env_vars,
            run_env_vars=self._run.run_env_vars if self._run is not None else None,
            override_env_vars=self._plan.override_env_vars,
        )
        log.debug("step environment (names only)", variables=" ".join(sorted(env)))
        choice = choose_command(step.plan, step.config)
        argv = await self._argv(root, step, choice, source_dir, env)
        log.info(f"running the {choice.origin}'s {'inline script' if choice.kind == 'inline' else 'command'}")

        def line(log: JobLog, stream: str, line: str) -> None:  # the step's attributes on each line
            if stream == "stderr":
                step_log.warning(line, stream=stream)
            else:
                step_log.info(line, stream=stream)

        step_log = log

        await ctx.processes.run(argv, env=env, cwd=cwd, line_handler=line)

    async def _argv(
        self,
        root: Path,
        step: WorkflowStep,
        choice: CommandChoice,
        source_dir: Path | None,
        env: dict[str, str],
    ) -> list[str]:
        if choice.kind == "inline":
            script = root / f".inline-contents-step-{step.position}"
            await anyio.to_thread.run_sync(_write_script, script, choice.text)
            return inline_argv(script, choice.text)
        words = split_command(choice.text)
        path_env = env.get("PATH") or os.environ.get("PATH") or os.defpath
        program = resolve_program(words[0], source_dir, path_env)
        return [program, *words[1:]]

    # ------------------------------------------------------------------ sandbox mode
    async def sandbox(self, ctx: JobContext, block: SandboxMode) -> None:
        """Every step ``finished`` in 5 s, as the reference reports a sandbox run; no command runs."""
        self._steps = await self._load(ctx)
        for step in self._steps:
            ctx.log.info(f"sandbox mode: step {step.name} finished without running")
            await self._put(ctx, step.run_step_id, FINISHED, SANDBOX_STEP_NS)
        await super().sandbox(ctx, block)


def _step_failure(step: WorkflowStep, exc: Exception) -> StepFailed:
    details: dict[str, Any] = {"step": step.name, "step_status": ERROR}
    code = exc.code if isinstance(exc, HandlerError) else ErrorCode.HANDLER_ERROR
    if isinstance(exc, ChildProcessFailed):
        details["exit_code"] = exc.exit_code
        details["stderr_tail"] = "\n".join(exc.stderr_tail[-20:])
    elif isinstance(exc, HandlerError):
        details.update({k: v for k, v in exc.details.items() if k not in details})
    what = str(exc) if isinstance(exc, HandlerError) else f"{type(exc).__name__}: {exc}"
    return StepFailed(f"step {step.name} failed: {what}", code=code, **details)


def _fresh_file(path: Path, mode: int) -> None:
    """An empty file of ``mode``, whatever was there."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def _write_script(path: Path, contents: str) -> None:
    _fresh_file(path, 0o700)
    path.write_text(contents if contents.endswith("\n") else contents + "\n", encoding="utf-8")


def _read_outputs(path: Path) -> dict[str, Any]:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return {}
    if size > MAX_OUTPUTS_BYTES:
        raise OutputsError(f"the outputs file holds {size} bytes, more than {MAX_OUTPUTS_BYTES}")
    return parse_outputs(path.read_text(encoding="utf-8", errors="replace"))
