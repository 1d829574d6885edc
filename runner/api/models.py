"""Wire models and enums of the runner API (docs/runner-api.md §1.2, §3.1, §4).

Both the agent and the embedded control plane import this module and nothing else of each
other, so the contract lives in exactly one place: JSON names, nanosecond durations, the
job-type -> group table and the table of legal execution transitions.

Conventions that come from the Go server and matter on the wire:
* every ``time.Duration`` is an integer number of nanoseconds (``NsDuration``);
* the server leaves zero values out (``omitzero``), so every field has a zero default and
  ``to_wire`` drops ``None``;
* unknown keys are ignored, because newer servers add fields (docs/runner-api.md §1.2).
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer

from runner.api.codes import ErrorCode as ErrorCode  # the codes live apart, without pydantic

NS_PER_SECOND = 1_000_000_000


def ns_to_timedelta(value: Any) -> Any:
    """Accept integer nanoseconds (the wire form) as well as a timedelta (Python callers)."""
    if value is None or isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("a duration must be an integer number of nanoseconds")
    if isinstance(value, int | float):
        return timedelta(microseconds=value / 1000)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return timedelta(microseconds=int(value) / 1000)
    raise ValueError("a duration must be an integer number of nanoseconds")


def timedelta_to_ns(value: timedelta) -> int:
    return (value.days * 86_400 + value.seconds) * NS_PER_SECOND + value.microseconds * 1000


NsDuration = Annotated[
    timedelta,
    BeforeValidator(ns_to_timedelta),
    PlainSerializer(timedelta_to_ns, return_type=int, when_used="always"),
]


def utcnow() -> datetime:
    return datetime.now(UTC)


class WireModel(BaseModel):
    """Base of every wire model: tolerant on input, compact on output.

    ``defer_build``: a model's validator and serializer are built at its first use, not when
    the module is imported (pydantic built all of them at import: 28 ms of ``runner.api.models``
    alone, most of them unused by a given process such as ``runner exec`` or the OCI worker)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, use_enum_values=False, defer_build=True)

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True, by_alias=True)


# --------------------------------------------------------------------------- enums


StrEnum = enum.StrEnum


class JobStatus(StrEnum):
    QUEUED = "queued"
    AVAILABLE = "available"
    IN_PROGRESS = "in-progress"
    FINISHED = "finished"
    FAILED = "failed"
    TIMED_OUT = "timed-out"
    NOT_ATTEMPTED = "not-attempted"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_JOB_STATUSES


TERMINAL_JOB_STATUSES = frozenset(
    {
        JobStatus.FINISHED,
        JobStatus.FAILED,
        JobStatus.TIMED_OUT,
        JobStatus.NOT_ATTEMPTED,
        JobStatus.CANCELLED,
    }
)

#: Job statuses that make a runner abort the execution it is running (docs/runner-api.md §3.2, §14.4).
ABORT_JOB_STATUSES = frozenset({JobStatus.CANCELLED, JobStatus.TIMED_OUT, JobStatus.FAILED})


class ExecutionStatus(StrEnum):
    PENDING = "pending"
    INITIALIZING = "initializing"
    IN_PROGRESS = "in-progress"
    CLEANING_UP = "cleaning-up"
    FINISHED = "finished"
    FAILED = "failed"
    TIMED_OUT = "timed-out"
    NOT_ATTEMPTED = "not-attempted"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"

    @property
    def is_running(self) -> bool:
        return self in RUNNING_EXECUTION_STATUSES

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_EXECUTION_STATUSES


RUNNING_EXECUTION_STATUSES = frozenset(
    {
        ExecutionStatus.PENDING,
        ExecutionStatus.INITIALIZING,
        ExecutionStatus.IN_PROGRESS,
        ExecutionStatus.CLEANING_UP,
    }
)
TERMINAL_EXECUTION_STATUSES = frozenset(
    {
        ExecutionStatus.FINISHED,
        ExecutionStatus.FAILED,
        ExecutionStatus.TIMED_OUT,
        ExecutionStatus.NOT_ATTEMPTED,
        ExecutionStatus.CANCELLED,
    }
)

_ABORTS = frozenset(
    {
        ExecutionStatus.FAILED,
        ExecutionStatus.TIMED_OUT,
        ExecutionStatus.CANCELLED,
        ExecutionStatus.NOT_ATTEMPTED,
    }
)

#: THE table of legal execution transitions. The agent's executor only ever asks for these,
#: and the control plane refuses anything else with 409. Re-sending the current status is
#: allowed (an idempotent retry of a PATCH whose answer was lost).
EXECUTION_TRANSITIONS: dict[ExecutionStatus, frozenset[ExecutionStatus]] = {
    ExecutionStatus.PENDING: frozenset({ExecutionStatus.INITIALIZING, ExecutionStatus.IN_PROGRESS} | _ABORTS),
    ExecutionStatus.INITIALIZING: frozenset(
        {ExecutionStatus.IN_PROGRESS, ExecutionStatus.CLEANING_UP, ExecutionStatus.FINISHED} | _ABORTS
    ),
    ExecutionStatus.IN_PROGRESS: frozenset({ExecutionStatus.CLEANING_UP, ExecutionStatus.FINISHED} | _ABORTS),
    ExecutionStatus.CLEANING_UP: frozenset({ExecutionStatus.FINISHED} | _ABORTS),
    ExecutionStatus.FINISHED: frozenset(),
    ExecutionStatus.FAILED: frozenset(),
    ExecutionStatus.TIMED_OUT: frozenset(),
    ExecutionStatus.NOT_ATTEMPTED: frozenset(),
    ExecutionStatus.CANCELLED: frozenset(),
    ExecutionStatus.UNKNOWN: frozenset(RUNNING_EXECUTION_STATUSES | TERMINAL_EXECUTION_STATUSES),
}


def is_legal_transition(current: ExecutionStatus, new: ExecutionStatus) -> bool:
    return new == current or new in EXECUTION_TRANSITIONS[current]


class JobGroup(StrEnum):
    HEALTH_CHECKS = "health-checks"
    SYNC = "sync"
    BUILD = "build"
    DEPLOY = "deploy"
    SANDBOX = "sandbox"
    RUNNER = "runner"
    OPERATIONS = "operations"
    MANAGEMENT = "management"
    ACTIONS = "actions"
    NONE = ""
    ANY = "any"


#: The groups a runner polls by default (docs/runner-api.md §2.2: the reference's ``runner run``
#: groups, plus management).
DEFAULT_POLLED_GROUPS: tuple[str, ...] = ("operations", "build", "sync", "deploy", "sandbox", "actions")


class JobType(StrEnum):
    HEALTH_CHECK = "health-check"
    DOCKER_BUILD = "docker-build"
    CONTAINER_IMAGE_BUILD = "container-image-build"
    TERRAFORM_MODULE_BUILD = "terraform-module-build"
    HELM_CHART_BUILD = "helm-chart-build"
    NOOP_BUILD = "noop-build"
    OCI_SYNC = "oci-sync"
    NOOP_SYNC = "noop-sync"
    TERRAFORM_DEPLOY = "terraform-deploy"
    HELM_CHART_DEPLOY = "helm-chart-deploy"
    JOB_DEPLOY = "job-deploy"
    KUBERNETES_MANIFEST_DEPLOY = "kubernetes-manifest-deploy"
    #: Named by the newer API without a definition; ours: docs/kubernetes.md.
    KUBERNETES_MANIFEST_BUILD = "kubernetes-manifest-build"
    NOOP_DEPLOY = "noop-deploy"
    SHUT_DOWN = "shut-down"
    UPDATE_VERSION = "update-version"
    NOOP = "noop"
    MNG_VM_SHUT_DOWN = "mng-vm-shut-down"
    MNG_SHUT_DOWN = "mng-shut-down"
    MNG_RUNNER_UPDATE_VERSION = "mng-runner-update-version"
    MNG_RUNNER_RESTART = "mng-runner-restart"
    SANDBOX_TERRAFORM = "sandbox-terraform"
    SANDBOX_TERRAFORM_PLAN = "sandbox-terraform-plan"
    SANDBOX_SYNC_SECRETS = "sandbox-sync-secrets"
    RUNNER_HELM = "runner-helm"
    RUNNER_TERRAFORM = "runner-terraform"
    RUNNER_LOCAL = "runner-local"
    ACTIONS_WORKFLOW = "actions-workflow"
    #: Named by the newer API without a definition; ours: docs/docker-build.md.
    FETCH_IMAGE_METADATA = "fetch-image-metadata"
    UNKNOWN = "unknown"


def group_for_type(job_type: str) -> str | None:
    """The job type's group, from the one job-type table (``runner.api.jobtypes``)."""
    from runner.api.jobtypes import group_for_type as from_table

    return from_table(job_type)


DEFAULT_AVAILABLE_TIMEOUT = timedelta(seconds=30)
DEFAULT_QUEUE_TIMEOUT = timedelta(hours=24)


def default_execution_timeout(job_type: str) -> timedelta:
    """The job type's default execution timeout, from the one job-type table."""
    from runner.api.jobtypes import default_execution_timeout as from_table

    return from_table(job_type)


class JobOperation(StrEnum):
    EXEC = "exec"
    BUILD = "build"
    CREATE_APPLY_PLAN = "create-apply-plan"
    CREATE_TEARDOWN_PLAN = "create-teardown-plan"
    APPLY_PLAN = "apply-plan"
    UNKNOWN = "unknown"


class RunnerStatus(StrEnum):
    ERROR = "error"
    ACTIVE = "active"
    PENDING = "pending"
    PROVISIONING = "provisioning"
    DEPROVISIONING = "deprovisioning"
    DEPROVISIONED = "deprovisioned"
    REPROVISIONING = "reprovisioning"
    OFFLINE = "offline"
    AWAITING_INSTALL_STACK_RUN = "awaiting-install-stack-run"
    UNKNOWN = "unknown"


# --------------------------------------------------------------------------- models


Hstore = dict[str, str | None]


class Timestamps(WireModel):
    id: str = ""
    created_by_id: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    org_id: str | None = None


class RunnerGroupSettings(Timestamps):
    runner_group_id: str | None = None
    container_image_url: str | None = None
    container_image_tag: str | None = None
    runner_api_url: str | None = None
    sandbox_mode: bool = False
    heart_beat_timeout: NsDuration = timedelta(seconds=5)
    otel_collector_config: str | None = None
    enable_sentry: bool = False
    enable_metrics: bool = False
    enable_logging: bool = True
    logging_level: str = "INFO"
    groups: list[str] = Field(default_factory=list)
    metadata: Hstore = Field(default_factory=dict)
    org_aws_iam_role_arn: str | None = None
    org_k8s_service_account_name: str | None = None
    aws_instance_type: str | None = None
    aws_max_instance_lifetime: int = 604800
    aws_cloudformation_stack_type: str | None = None
    aws_tags: Hstore | None = None
    local_aws_iam_role_arn: str | None = None
    platform: str = ""
    #: Ours (docs/runner-api.md §2.2, §3.5): the jobs list accepts ``wait``.
    long_poll_jobs: bool = False
    #: Ours, like the newer API's ``job_group_parallelism``: {"build": "2"}.
    job_group_parallelism: dict[str, str] | None = None
    #: Ours (docs/runner-api.md §5.2): content encodings the log endpoint accepts, e.g.
    #: ["gzip"]. The real server never sends it and does not decompress log bodies.
    log_accept_encodings: list[str] = Field(default_factory=list)


class RunnerGroup(Timestamps):
    owner_id: str | None = None
    owner_type: str | None = None
    settings: RunnerGroupSettings | None = None
    type: str | None = None
    platform: str | None = None


class Runner(Timestamps):
    status: str | None = None
    status_description: str | None = None
    runner_group_id: str | None = None
    runner_group: RunnerGroup | None = None
    name: str | None = None
    display_name: str | None = None


class HeartBeatRequest(WireModel):
    alive_time: NsDuration
    version: str = ""
    process: str = ""
    #: Ours: a random id per runner process, so the control plane can tell a second process
    #: with the same runner id from a restart (the reference server ignores unknown fields).
    instance_id: str | None = None


class RunnerHeartBeat(Timestamps):
    runner_id: str | None = None
    alive_time: NsDuration | None = None
    version: str | None = None
    started_at: datetime | None = None
    process: str = ""


class LogStream(Timestamps):
    owner_id: str | None = None
    owner_type: str | None = None
    open: bool = False
    attrs: Hstore | None = None
    write_token: str | None = None
    runner_api_url: str | None = None


class ExecutionResult(Timestamps):
    """A stored result, as read back (``contents_gzip`` is standard base64 of the raw bytes)."""

    runner_job_execution_id: str | None = None
    success: bool = False
    error_code: int = 0
    error_metadata: Hstore | None = None
    contents: str | None = None
    contents_display: str | None = None
    contents_gzip: str | None = None
    contents_display_gzip: str | None = None


class ExecutionOutputs(Timestamps):
    runner_job_execution_id: str | None = None
    outputs_json: str | None = None
    outputs: dict[str, Any] | None = None


class RunnerJobExecution(Timestamps):
    runner_job_id: str | None = None
    status: ExecutionStatus = ExecutionStatus.UNKNOWN
    result: ExecutionResult | None = None
    outputs: ExecutionOutputs | None = None
    metadata: Hstore | None = None


class RunnerJob(Timestamps):
    runner_id: str | None = None
    owner_id: str | None = None
    owner_type: str | None = None
    log_stream_id: str | None = None
    #: Ours (the seed API's model): the log stream, with a write token for this stream only.
    log_stream: LogStream | None = None
    queue_timeout: NsDuration | None = None
    available_timeout: NsDuration | None = None
    execution_timeout: NsDuration | None = None
    overall_timeout: NsDuration | None = None
    max_executions: int | None = None
    status: JobStatus = JobStatus.UNKNOWN
    status_description: str | None = None
    type: str = ""
    group: str = ""
    operation: str | None = None
    executions: list[RunnerJobExecution] | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    metadata: Hstore | None = None
    execution_count: int | None = None
    final_runner_job_execution_id: str | None = None
    outputs_json: str | None = None
    execution_time: NsDuration | None = None
    outputs: dict[str, Any] | None = None


class UpdateExecutionRequest(WireModel):
    status: ExecutionStatus


class UpdateJobRequest(WireModel):
    status: JobStatus


class ResultRequest(WireModel):
    """What the runner POSTs to ``…/result`` (docs/runner-api.md §4.3).

    ``contents_compressed`` and ``contents_display_compressed`` are base64-URL (padded).
    """

    success: bool
    error_code: int = 0
    error_metadata: Hstore | None = None
    contents: str | None = None
    contents_display: dict[str, Any] | None = None
    contents_compressed: str | None = None
    contents_display_compressed: str | None = None


class OutputsRequest(WireModel):
    outputs: dict[str, Any] | None = None


class ErrorResponse(WireModel):
    error: str = ""
    user_error: bool = False
    description: str = ""


# terraform backend models (docs/runner-api.md §6)


class TerraformLock(WireModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    id: str = Field(default="", alias="ID")
    operation: str = Field(default="", alias="Operation")
    info: str = Field(default="", alias="Info")
    who: str = Field(default="", alias="Who")
    version: Any = Field(default="", alias="Version")
    created: str = Field(default="", alias="Created")
    path: str = Field(default="", alias="Path")


class TerraformWorkspace(Timestamps):
    owner_id: str | None = None
    owner_type: str | None = None
    lock_history: list[dict[str, Any]] | None = None
