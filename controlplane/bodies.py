"""Request bodies, validated with pydantic (wrong types answer 400, never 500).

Durations are integer nanoseconds as on the wire. The same models feed the OpenAPI document's
request schemas (``controlplane.openapi``), so the document cannot drift from what is accepted.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from runner.api.models import ExecutionStatus, JobStatus

#: Longest duration accepted: ten years, so deadlines stay far inside SQLite's 64-bit integers.
MAX_DURATION_NS = 10 * 365 * 24 * 3600 * 1_000_000_000

NsInt = Annotated[StrictInt, Field(ge=0, le=MAX_DURATION_NS, description="a duration in nanoseconds")]
PositiveNs = Annotated[StrictInt, Field(gt=0, le=MAX_DURATION_NS, description="a duration in nanoseconds")]
Hstore = dict[str, StrictStr | None]
Name = Annotated[StrictStr, Field(max_length=256)]


class Body(BaseModel):
    # Schemas are built on first use: the server starts faster and most bodies are rare.
    model_config = ConfigDict(extra="ignore", defer_build=True)


class HeartBeatBody(Body):
    alive_time: NsInt = Field(description="runner process uptime in nanoseconds")
    version: Name = ""
    process: Name = ""
    instance_id: Name = Field(
        default="",
        description="ours: a random id per runner process; a heartbeat from another process while"
        " this one is alive answers 409 (the reference server ignores the field)",
    )


class HealthCheckBody(Body):
    process: Name = ""


class JobStatusBody(Body):
    status: JobStatus


class ExecutionStatusBody(Body):
    status: ExecutionStatus


class ResultBody(Body):
    success: StrictBool = False
    error_code: Annotated[StrictInt, Field(ge=-(2**31), le=2**31 - 1)] = 0
    error_metadata: Hstore | None = None
    contents: StrictStr | None = None
    contents_display: dict[str, Any] | None = None
    contents_compressed: StrictStr | None = Field(default=None, description="base64url of the raw bytes")
    contents_display_compressed: StrictStr | None = Field(default=None, description="base64url of gzip(JSON)")


class OutputsBody(Body):
    outputs: dict[str, Any] | None = None


class SubmitJobBody(Body):
    """Operator API: submit a job to a runner (ours; DESIGN.md §4)."""

    type: Annotated[StrictStr, Field(min_length=1, max_length=64)]
    group: Annotated[StrictStr, Field(max_length=64)] | None = None
    operation: Annotated[StrictStr, Field(max_length=64)] | None = None
    plan: dict[str, Any] | None = None
    execution_timeout: PositiveNs | None = None
    available_timeout: PositiveNs | None = None
    queue_timeout: PositiveNs | None = None
    overall_timeout: PositiveNs | None = None
    max_executions: Annotated[StrictInt, Field(ge=1, le=100)] | None = None
    metadata: Hstore | None = None
    owner_id: Annotated[StrictStr, Field(min_length=1, max_length=128)] | None = None
    owner_type: Annotated[StrictStr, Field(min_length=1, max_length=128)] | None = None


class SettingsPatchBody(BaseModel):
    """Operator API: change a runner's settings live. Unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    container_image_url: StrictStr | None = None
    container_image_tag: StrictStr | None = None
    sandbox_mode: StrictBool | None = None
    heart_beat_timeout: PositiveNs | None = None
    otel_collector_config: StrictStr | None = None
    enable_sentry: StrictBool | None = None
    enable_metrics: StrictBool | None = None
    enable_logging: StrictBool | None = None
    logging_level: (
        Annotated[StrictStr, Field(pattern=r"^(?i:debug|info|warn|warning|error)([+-]\d+)?$")] | None
    ) = None
    groups: Annotated[list[Annotated[StrictStr, Field(max_length=64)]], Field(max_length=32)] | None = None
    metadata: Hstore | None = None
    long_poll_jobs: StrictBool | None = None
    job_group_parallelism: dict[str, StrictStr | StrictInt] | None = None
    aws_instance_type: StrictStr | None = None
    aws_max_instance_lifetime: Annotated[StrictInt, Field(ge=0)] | None = None


class CreateWorkspaceBody(Body):
    id: Annotated[StrictStr, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")] | None = None
    owner_id: Annotated[StrictStr, Field(max_length=128)] = ""
    owner_type: Annotated[StrictStr, Field(max_length=128)] = ""


class CreateRunnerBody(Body):
    name: Annotated[StrictStr, Field(min_length=1, max_length=64)] = "runner"
