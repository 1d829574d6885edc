"""The handler plug-in interface: what a job type implements, and what it is given.

Import it as ``runner.sdk``: this package is the only part of the agent a handler may import
(tests/unit/test_import_contracts.py holds that).

A handler is a class registered under the entry-point group ``byoc_runner.handlers`` with the
job type as the entry-point name. The executor makes **one fresh instance per job** (so no
state leaks between jobs, unlike the reference runner's singletons) and drives it through
``prepare -> execute -> cleanup``; ``cancel`` is called first when the job is aborted, for a
graceful stop, before the job's scope is cancelled.

Handlers see the world only through ``JobContext``: the job, its typed plan, a private
workspace, a job logger whose records reach the control plane, a process runner that streams
child output into that logger and kills whole process groups, a secret registry whose values
are masked in every log record, the narrow ``HandlerAPI`` port to the control plane, the tool
settings, the family settings, and an exit stack for what the handler opens.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

from runner.api.jobtypes import spec_for
from runner.api.models import ResultRequest, RunnerGroupSettings, RunnerJob, RunnerJobExecution
from runner.api.plans import BasePlan, PlanError, SandboxMode
from runner.sdk.errors import ChildProcessFailed as ChildProcessFailed  # re-exported
from runner.sdk.errors import HandlerError as HandlerError  # re-exported
from runner.sdk.ports import HandlerAPI, ToolSettings
from runner.sdk.sandbox import fake_plan_result
from runner.sdk.settings import HandlerSettings, SettingsSource

ENTRY_POINT_GROUP = "byoc_runner.handlers"

P = TypeVar("P", bound=BasePlan)
S = TypeVar("S", bound=HandlerSettings)


# --------------------------------------------------------------------------- collaborators


@runtime_checkable
class JobLog(Protocol):
    """The job logger. Records are masked, then shipped as OTLP to the job's log stream.

    Calls never block and never raise: a log line must not be able to fail a job.
    """

    def log(self, level: str, message: str, **attrs: Any) -> None: ...
    def debug(self, message: str, **attrs: Any) -> None: ...
    def info(self, message: str, **attrs: Any) -> None: ...
    def warning(self, message: str, **attrs: Any) -> None: ...
    def error(self, message: str, **attrs: Any) -> None: ...
    def bind(self, **attrs: Any) -> JobLog: ...


class SecretRegistry(Protocol):
    """Values registered here are replaced by ``***`` in every log record of the job, in plain,
    base64 and URL-encoded forms."""

    def register(self, *values: str | None) -> None: ...
    def mask(self, text: str) -> str: ...


@dataclass(frozen=True)
class ProcessResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: bytes | None = None
    stderr_tail: tuple[str, ...] = ()


class LineHandler(Protocol):
    """Turns one line of child output into a log call; ``stream`` is "stdout" or "stderr"."""

    def __call__(self, log: JobLog, stream: str, line: str) -> None: ...


class ProcessRunner(Protocol):
    """Runs child processes for a job.

    Each child gets its own process group and **only** the environment passed in ``env`` (on
    top of a minimal base: PATH, HOME, LANG, TMPDIR); never the runner's own environment. Its
    stdout/stderr become log records line by line unless ``capture_stdout`` is set (then stdout
    is returned and not logged). When the job is cancelled the group gets SIGINT, a grace
    period, then SIGKILL, and ``run`` re-raises the cancellation once the group is gone.
    """

    async def run(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        stdin: bytes | None = None,
        capture_stdout: bool = False,
        check: bool = True,
        line_handler: LineHandler | None = None,
        grace_period: float | None = None,
    ) -> ProcessResult: ...


#: The exit code that asks the supervisor (ECS, Kubernetes, systemd) to start the runner again,
#: on the new image after ``update-version``.
EXIT_RESTART = 75


class RunnerControl(Protocol):
    """What a handler may ask of the runner process as a whole (operations jobs)."""

    def request_shutdown(self, *, graceful: bool, exit_code: int = 0, reason: str = "") -> None: ...
    def loop_ages_ns(self) -> dict[str, int]: ...


# --------------------------------------------------------------------------- the context


@dataclass
class JobContext:
    job: RunnerJob
    execution: RunnerJobExecution
    plan: BasePlan
    plan_text: str
    workspace: Path
    log: JobLog
    secrets: SecretRegistry
    processes: ProcessRunner
    #: The control-plane calls a handler may make (never the runner's client or token).
    api: HandlerAPI
    #: Tools dir, child grace, insecure registries, runner version.
    tools: ToolSettings
    #: The control plane's settings for this runner (read-only).
    settings: RunnerGroupSettings
    control: RunnerControl
    #: Absolute deadline of the job on ``anyio.current_time()``'s clock.
    deadline: float
    #: The raw ``RUNNER_<FAMILY>_*`` values; read them with ``handler_settings``.
    family_settings: SettingsSource = field(default_factory=SettingsSource)
    #: What the handler opens (clients, proxies' lock releases, temporary kubeconfigs): the
    #: executor closes it after ``cleanup``, also after a failure, a cancel or a timeout, in the
    #: job's task but outside its cancelled scope. Register plain resources and callbacks; a
    #: service that holds a task group must run inside one step (``async with`` in ``execute``).
    resources: AsyncExitStack = field(default_factory=AsyncExitStack)
    outputs: dict[str, Any] | None = None
    result: ResultRequest | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def handler_settings(self, model: type[S]) -> S:
        """The family's settings (e.g. ``TerraformSettings``), parsed from its own prefix."""
        return self.family_settings.get(model)

    @property
    def job_type(self) -> str:
        return self.job.type

    @property
    def operation(self) -> str:
        return self.job.operation or ""

    def plan_as(self, model: type[P]) -> P:
        if not isinstance(self.plan, model):
            have = type(self.plan).__name__
            raise PlanError(f"job type {self.job.type} carries a {have}, not a {model.__name__}")
        return self.plan

    def set_outputs(self, outputs: Mapping[str, Any]) -> None:
        self.outputs = dict(outputs)

    def set_result(self, result: ResultRequest) -> None:
        self.result = result


# --------------------------------------------------------------------------- the handler


class Handler:
    """Base class of every handler; override what the job type needs.

    ``prepare`` validates the plan and fetches inputs (clone, pull); ``execute`` does the work and
    sets outputs and the result on the context; ``cleanup`` always runs (also after a failure or a
    cancellation) and must be idempotent; ``cancel`` asks running work to stop gracefully.
    """

    #: The plan model; None means "the contract's model for this job type" (the job-type table).
    plan_model: ClassVar[type[BasePlan] | None] = None
    #: Whether the executor fetches the plan at all (noop, health-check… have none); None means
    #: "as the job-type table says" (a type whose plan model is ``EmptyPlan`` has none).
    needs_plan: ClassVar[bool | None] = None
    #: Operations this handler supports; empty means "any".
    operations: ClassVar[frozenset[str]] = frozenset()
    #: The family settings this handler reads, checked when the runner starts.
    settings_model: ClassVar[type[HandlerSettings] | None] = None

    async def prepare(self, ctx: JobContext) -> None:
        return None

    async def execute(self, ctx: JobContext) -> None:
        return None

    async def cleanup(self, ctx: JobContext) -> None:
        return None

    async def cancel(self, ctx: JobContext) -> None:
        return None

    async def sandbox(self, ctx: JobContext, block: SandboxMode) -> None:
        """Sandbox mode's stand-in for ``execute``: report what a real run would, from the plan's
        enabled ``sandbox_mode`` block, touching nothing.

        The default sets the block's outputs and, for a plan job, the fake plan contents of its
        terraform, helm or kubernetes_manifest part. Override it to add what the family's real
        run leaves on the control plane (terraform: the state and its JSON form).
        """
        ctx.set_outputs(block.outputs or {})
        parts = (block.terraform, block.helm, block.kubernetes_manifest)
        part = next((p for p in parts if p is not None), None)
        if part is not None:
            ctx.set_result(fake_plan_result(part))

    @classmethod
    def plan_model_for(cls, job_type: str) -> type[BasePlan]:
        return cls.plan_model or spec_for(job_type).plan_model

    @classmethod
    def fetches_plan(cls, job_type: str) -> bool:
        if cls.needs_plan is not None:
            return cls.needs_plan
        return cls.plan_model is not None or spec_for(job_type).needs_plan


# --------------------------------------------------------------------------- registry


#: The package of the handlers this distribution ships. Their entry points load on first use
#: (a job of their type seen by a poller, or ``runner exec --type``): importing all of them
#: costs about 0.7 s and 50 MB (kubernetes_asyncio alone), which an idle runner would carry
#: for its whole life. Their settings families are ``BUILTIN_FAMILIES``, which ``load_config``
#: checks at start-up; a built-in family outside them (its settings model in its own room) is
#: parsed when its handler loads, through ``validate``, and a bad value leaves that job type
#: unclaimed with the error logged. Entry points of other packages (third-party handlers) load
#: at start-up, where their settings are checked as before.
BUILTIN_HANDLER_PACKAGE = "handlers"


class HandlerRegistry:
    """Job type -> handler class, loaded from entry points (and overridable in tests).

    A built-in handler's module is imported the first time ``get`` or ``supports`` asks for its
    job type; a handler that fails to load then, or that ``validate`` rejects, is recorded in
    ``load_errors`` (and reported through ``on_load_error``) and its job type is not supported,
    as at start-up.
    """

    def __init__(self, handlers: Mapping[str, type[Handler]] | None = None) -> None:
        self._handlers: dict[str, type[Handler]] = dict(handlers or {})
        self._pending: dict[str, importlib.metadata.EntryPoint] = {}
        self.load_errors: dict[str, str] = {}
        #: Called with each deferred handler class once loaded; an exception rejects it.
        self.validate: Callable[[type[Handler]], None] | None = None
        #: Called with (job type, error) when a deferred handler fails to load.
        self.on_load_error: Callable[[str, str], None] | None = None

    @classmethod
    def from_entry_points(
        cls, group: str = ENTRY_POINT_GROUP, *, defer_builtin: bool = True
    ) -> HandlerRegistry:
        registry = cls()
        for ep in importlib.metadata.entry_points(group=group):
            if defer_builtin and ep.module.partition(".")[0] == BUILTIN_HANDLER_PACKAGE:
                registry._pending[ep.name] = ep
                continue
            registry._load_entry_point(ep.name, ep)
        return registry

    def _load_entry_point(self, job_type: str, ep: importlib.metadata.EntryPoint) -> type[Handler] | None:
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plug-in must not take the runner down
            error = f"{type(exc).__name__}: {exc}"
        else:
            if isinstance(obj, type) and issubclass(obj, Handler):
                self._handlers[job_type] = obj
                return obj
            error = f"{ep.value} is not a Handler subclass"
        self.load_errors[job_type] = error
        return None

    def load_all(self) -> None:
        """Import every deferred handler now (what start-up did before they were deferred)."""
        for job_type in list(self._pending):
            self.get(job_type)

    def loaded(self) -> dict[str, type[Handler]]:
        """The handler classes imported so far (deferred built-ins not yet asked for excluded)."""
        return dict(self._handlers)

    def load_overrides(self, targets: Mapping[str, str]) -> None:
        """Add or replace handlers from ``{"job-type": "module:Class"}`` (config ``handlers``)."""
        import importlib

        for job_type, target in targets.items():
            self._pending.pop(job_type, None)
            module_name, _, attr = target.partition(":")
            try:
                obj = getattr(importlib.import_module(module_name), attr)
            except Exception as exc:  # reported like a broken entry point
                self.load_errors[job_type] = f"{target}: {type(exc).__name__}: {exc}"
                continue
            if isinstance(obj, type) and issubclass(obj, Handler):
                self._handlers[job_type] = obj
                self.load_errors.pop(job_type, None)
            else:
                self.load_errors[job_type] = f"{target} is not a Handler subclass"

    def register(self, job_type: str, handler: type[Handler]) -> None:
        self._pending.pop(job_type, None)
        self._handlers[job_type] = handler

    def supports(self, job_type: str) -> bool:
        return self.get(job_type) is not None

    def get(self, job_type: str) -> type[Handler] | None:
        found = self._handlers.get(job_type)
        if found is None:
            ep = self._pending.pop(job_type, None)
            if ep is not None:
                found = self._load_entry_point(job_type, ep)
                if found is not None and self.validate is not None:
                    try:
                        self.validate(found)
                    except Exception as exc:
                        self.load_errors[job_type] = f"{type(exc).__name__}: {exc}"
                        del self._handlers[job_type]
                        found = None
                if found is None and self.on_load_error is not None:
                    self.on_load_error(job_type, self.load_errors[job_type])
        return found

    def job_types(self) -> list[str]:
        """Every installed job type: loaded, and deferred built-ins not yet imported."""
        return sorted({*self._handlers, *self._pending})
