"""The steps of a workflow run, matched by id: the plan's step, the run's step, the config's step.

The reference zips ``run.steps[i]``, ``config.steps[i]`` and ``plan.steps[i]`` by index with no
length check, so a reordered or edited config runs the wrong command under the wrong step. The
ids say which belong together: a plan step's ``run_id`` is a run step's ``id`` (the
``InstallActionWorkflowRunStep``), and a run step's ``step_id`` is a config step's ``id``. Any
step that does not pair up is an error before the first step starts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from runner.sdk import ErrorCode, HandlerError
from runner.sdk.plans import ActionStep, GitSource


class WorkflowMismatch(HandlerError):
    """The plan, the run and the config do not describe the same steps."""

    code = ErrorCode.INVALID_PLAN


@dataclass(frozen=True)
class ConfigStep:
    """One step of ``ActionWorkflowConfig.steps`` (the raw, uninterpolated definition)."""

    id: str
    name: str
    idx: int
    command: str = ""
    inline_contents: str = ""
    #: Ours: the step's own timeout in nanoseconds (0: only the workflow's).
    timeout_ns: int = 0


@dataclass(frozen=True)
class WorkflowConfig:
    id: str
    action_workflow_id: str
    #: Nanoseconds; 0 means "the job's deadline".
    timeout_ns: int
    steps: tuple[ConfigStep, ...]


@dataclass(frozen=True)
class RunStep:
    """One ``InstallActionWorkflowRunStep``: ``id`` is what the status PUT names."""

    id: str
    step_id: str
    status: str = ""


@dataclass(frozen=True)
class WorkflowRun:
    id: str
    config_id: str
    steps: tuple[RunStep, ...]
    run_env_vars: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class WorkflowStep:
    """A step to run: its position in the run, its run step id (for the PUTs), its definition."""

    position: int
    run_step_id: str
    config: ConfigStep
    plan: ActionStep

    @property
    def name(self) -> str:
        return self.config.name or self.config.id

    @property
    def git_source(self) -> GitSource | None:
        source = self.plan.git_source
        return source if source is not None and source.url.strip() else None


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _int(value: Any, what: str) -> int:
    if value is None or value == "":
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise WorkflowMismatch(f"{what} must be a number of nanoseconds, not {type(value).__name__}")
    if value < 0:
        raise WorkflowMismatch(f"{what} must not be negative")
    return int(value)


def _env(value: Any, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise WorkflowMismatch(f"{what} must be an object of strings")
    return {str(k): "" if v is None else str(v) for k, v in value.items()}


def parse_config(data: Mapping[str, Any]) -> WorkflowConfig:
    """``GET /v1/action-workflows/configs/{id}`` as the handler needs it."""
    raw_steps = data.get("steps") or []
    if not isinstance(raw_steps, list):
        raise WorkflowMismatch("the action workflow config's steps is not a list")
    steps = []
    for idx, raw in enumerate(raw_steps):
        if not isinstance(raw, Mapping):
            raise WorkflowMismatch(f"config step {idx} is not an object")
        name = _str(raw.get("name"))
        steps.append(
            ConfigStep(
                id=_str(raw.get("id")),
                name=name,
                idx=raw["idx"] if isinstance(raw.get("idx"), int) else idx,
                command=_str(raw.get("command")),
                inline_contents=_str(raw.get("inline_contents")),
                timeout_ns=_int(raw.get("timeout"), f"config step {name or idx} timeout"),
            )
        )
    return WorkflowConfig(
        id=_str(data.get("id")),
        action_workflow_id=_str(data.get("action_workflow_id")),
        timeout_ns=_int(data.get("timeout"), "the action workflow config's timeout"),
        steps=tuple(steps),
    )


def parse_run(data: Mapping[str, Any]) -> WorkflowRun:
    """``GET /v1/installs/{install}/action-workflows/runs/{id}``: its steps in order, env vars."""
    raw_steps = data.get("steps") or []
    if not isinstance(raw_steps, list):
        raise WorkflowMismatch("the action workflow run's steps is not a list")
    steps = []
    for idx, raw in enumerate(raw_steps):
        if not isinstance(raw, Mapping):
            raise WorkflowMismatch(f"run step {idx} is not an object")
        steps.append(
            RunStep(id=_str(raw.get("id")), step_id=_str(raw.get("step_id")), status=_str(raw.get("status")))
        )
    return WorkflowRun(
        id=_str(data.get("id")),
        config_id=_str(data.get("action_workflow_config_id")),
        steps=tuple(steps),
        run_env_vars=_env(data.get("run_env_vars"), "the run's run_env_vars"),
    )


def _duplicates(ids: Sequence[str]) -> list[str]:
    return sorted(i for i, n in Counter(ids).items() if n > 1)


def match_steps(
    plan_steps: Sequence[ActionStep], run: WorkflowRun, config: WorkflowConfig
) -> list[WorkflowStep]:
    """The run's steps in the run's order, each with its plan step and config step.

    Raises ``WorkflowMismatch`` naming every id that does not pair up (nothing has run yet).
    """
    problems: list[str] = []
    if not run.steps:
        problems.append("the run has no steps")
    for what, ids in (
        ("run step", [s.id for s in run.steps]),
        ("plan step run_id", [s.run_id for s in plan_steps]),
        ("config step", [s.id for s in config.steps]),
    ):
        if any(not i for i in ids):
            problems.append(f"a {what} has no id")
        dup = _duplicates([i for i in ids if i])
        if dup:
            problems.append(f"{what} ids repeat: {', '.join(dup)}")
    by_run_id = {s.run_id: s for s in plan_steps if s.run_id}
    by_config_id = {s.id: s for s in config.steps if s.id}
    matched: list[WorkflowStep] = []
    used_config: set[str] = set()
    for position, step in enumerate(run.steps):
        plan_step = by_run_id.get(step.id)
        config_step = by_config_id.get(step.step_id)
        if plan_step is None:
            problems.append(
                f"run step {step.id or position} has no plan step (no plan step has run_id {step.id!r})"
            )
        if config_step is None:
            problems.append(
                f"run step {step.id or position} names config step {step.step_id!r}, which the config lacks"
            )
        if plan_step is not None and config_step is not None:
            used_config.add(config_step.id)
            matched.append(WorkflowStep(position, step.id, config_step, plan_step))
    run_ids = {s.id for s in run.steps}
    extra_plan = [s.run_id for s in plan_steps if s.run_id and s.run_id not in run_ids]
    if extra_plan:
        problems.append(f"plan steps not in the run: {', '.join(extra_plan)}")
    extra_config = [s.id for s in config.steps if s.id and s.id not in used_config]
    if extra_config:
        problems.append(f"config steps not in the run: {', '.join(extra_config)}")
    if problems:
        raise WorkflowMismatch(
            "the plan, the run and the config do not describe the same steps: " + "; ".join(problems)
        )
    return matched
