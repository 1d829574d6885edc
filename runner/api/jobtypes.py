"""THE job-type table: every job type of the contract once, with what the runner must know of it.

The client, the pollers, the executor, sandbox mode, ``runner exec`` and the embedded control
plane all read this table (the control plane may import only ``runner.api``, so it lives here).
Anything that differs by job type is a column here, not an ``if job.type == ...`` elsewhere.

Sources: the groups are ``RunnerJobType.Group()`` of the contract, except that ``health-check``
jobs are created in ``operations`` (docs/runner-api.md §5: the creation function overrides the
group); the plan models are docs/runner-api.md §9; the default timeouts §6.2 (5 minutes for the
rest); which jobs PATCH the *job* to ``finished`` themselves is the reference runner's
``finishJob`` (``bins/runner/internal/jobs/operations/shutdown/exec.go`` and
``bins/runner/internal/jobs/management/{shutdown,vm_shutdown}/exec.go``).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from runner.api.models import JobGroup, JobType
from runner.api.plans import (
    ActionWorkflowRunPlan,
    BasePlan,
    BuildPlan,
    DeployPlan,
    EmptyPlan,
    FetchImageMetadataPlan,
    SandboxRunPlan,
    SyncOCIPlan,
    SyncSecretsPlan,
)

_MIN = timedelta(minutes=1)
DEFAULT_EXECUTION_TIMEOUT = 5 * _MIN


class SandboxBehaviour(enum.StrEnum):
    """What sandbox mode (settings ``sandbox_mode``) does with a job type."""

    #: Faked: timed steps with filler logs, outputs and plan results from the plan's sandbox block.
    FAKE = "fake"
    #: Run for real even in sandbox mode (a sandbox runner must still be able to shut down).
    REAL = "real"


@dataclass(frozen=True)
class FinishesJob:
    """Whether the runner PATCHes the *job* ``{"status": "finished"}`` after its execution finished.

    The reference does it for jobs after which nobody (or no runner) is left to report: always for
    ``mng-shut-down``; for ``mng-vm-shut-down`` when ``metadata.shutdown_type`` is ``vm``; for
    ``shut-down`` when it is ``force``. ``when`` is that (key, value) condition, or None for always.
    """

    when: tuple[str, str] | None = None

    def applies(self, metadata: Mapping[str, str | None] | None) -> bool:
        if self.when is None:
            return True
        key, value = self.when
        return str((metadata or {}).get(key) or "").lower() == value


@dataclass(frozen=True)
class JobTypeSpec:
    """One row of the table."""

    job_type: str
    group: str
    plan_model: type[BasePlan] = EmptyPlan
    default_timeout: timedelta = DEFAULT_EXECUTION_TIMEOUT
    sandbox: SandboxBehaviour = SandboxBehaviour.FAKE
    #: None: the execution's status is all the runner reports (every job type but a few).
    finishes_job: FinishesJob | None = None

    @property
    def needs_plan(self) -> bool:
        """Whether the job carries a plan worth fetching (jobs without one decode ``EmptyPlan``)."""
        return self.plan_model is not EmptyPlan

    def finishes_job_for(self, metadata: Mapping[str, str | None] | None) -> bool:
        return self.finishes_job is not None and self.finishes_job.applies(metadata)


def _row(
    job_type: JobType,
    group: JobGroup,
    plan_model: type[BasePlan] = EmptyPlan,
    timeout_minutes: int = 5,
    *,
    sandbox: SandboxBehaviour = SandboxBehaviour.FAKE,
    finishes_job: FinishesJob | None = None,
) -> JobTypeSpec:
    return JobTypeSpec(
        job_type.value,
        group.value,
        plan_model,
        timeout_minutes * _MIN,
        sandbox,
        finishes_job,
    )


_G = JobGroup
_T = JobType

#: Every job type a runner may meet, in the contract's order. (``runner-local`` is not one: the
#: contract's ``Group()`` gives it no group, so no runner ever polls for it.)
JOB_TYPES: Mapping[str, JobTypeSpec] = {
    spec.job_type: spec
    for spec in (
        _row(_T.DOCKER_BUILD, _G.BUILD, BuildPlan, 60),
        _row(_T.CONTAINER_IMAGE_BUILD, _G.BUILD, BuildPlan, 15),
        _row(_T.TERRAFORM_MODULE_BUILD, _G.BUILD, BuildPlan, 5),
        _row(_T.HELM_CHART_BUILD, _G.BUILD, BuildPlan, 5),
        _row(_T.KUBERNETES_MANIFEST_BUILD, _G.BUILD, BuildPlan, 5),
        _row(_T.NOOP_BUILD, _G.BUILD, BuildPlan),
        _row(_T.OCI_SYNC, _G.SYNC, SyncOCIPlan, 15),
        _row(_T.NOOP_SYNC, _G.SYNC, SyncOCIPlan),
        _row(_T.FETCH_IMAGE_METADATA, _G.SYNC, FetchImageMetadataPlan, 5),
        _row(_T.TERRAFORM_DEPLOY, _G.DEPLOY, DeployPlan, 60),
        _row(_T.HELM_CHART_DEPLOY, _G.DEPLOY, DeployPlan, 15),
        _row(_T.JOB_DEPLOY, _G.DEPLOY, DeployPlan, 15),
        _row(_T.KUBERNETES_MANIFEST_DEPLOY, _G.DEPLOY, DeployPlan, 15),
        _row(_T.NOOP_DEPLOY, _G.DEPLOY, DeployPlan),
        _row(_T.RUNNER_HELM, _G.RUNNER, EmptyPlan, 5),
        _row(_T.RUNNER_TERRAFORM, _G.RUNNER, EmptyPlan, 15),
        _row(_T.SANDBOX_TERRAFORM, _G.SANDBOX, SandboxRunPlan, 60),
        _row(_T.SANDBOX_TERRAFORM_PLAN, _G.SANDBOX),
        _row(_T.SANDBOX_SYNC_SECRETS, _G.SANDBOX, SyncSecretsPlan),
        _row(_T.HEALTH_CHECK, _G.OPERATIONS),
        _row(_T.NOOP, _G.OPERATIONS),
        _row(
            _T.SHUT_DOWN,
            _G.OPERATIONS,
            sandbox=SandboxBehaviour.REAL,
            finishes_job=FinishesJob(("shutdown_type", "force")),
        ),
        _row(_T.UPDATE_VERSION, _G.OPERATIONS),
        _row(_T.MNG_VM_SHUT_DOWN, _G.MANAGEMENT, finishes_job=FinishesJob(("shutdown_type", "vm"))),
        _row(_T.MNG_SHUT_DOWN, _G.MANAGEMENT, finishes_job=FinishesJob()),
        _row(_T.MNG_RUNNER_UPDATE_VERSION, _G.MANAGEMENT),
        _row(_T.MNG_RUNNER_RESTART, _G.MANAGEMENT),
        _row(_T.ACTIONS_WORKFLOW, _G.ACTIONS, ActionWorkflowRunPlan),
    )
}

#: A type the table does not know: no group (never polled), no plan, the default timeout.
UNKNOWN = JobTypeSpec(job_type="", group="")


def spec_for(job_type: str) -> JobTypeSpec:
    """The row of ``job_type``; unknown types get ``UNKNOWN`` (named after the type)."""
    spec = JOB_TYPES.get(job_type)
    if spec is None:
        return JobTypeSpec(job_type=job_type, group="")
    return spec


def known(job_type: str) -> bool:
    return job_type in JOB_TYPES


def group_for_type(job_type: str) -> str | None:
    spec = JOB_TYPES.get(job_type)
    return spec.group if spec is not None else None


def default_execution_timeout(job_type: str) -> timedelta:
    return spec_for(job_type).default_timeout


def plan_model_for(job_type: str) -> type[BasePlan]:
    return spec_for(job_type).plan_model


def job_types_in(group: str) -> list[str]:
    return [t for t, spec in JOB_TYPES.items() if spec.group == group]
