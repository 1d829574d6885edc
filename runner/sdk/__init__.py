"""THE handler SDK: everything a handler imports from the runner, and nothing more.

A handler (``handlers/...`` or a third-party package) imports ``runner.sdk`` (and
``runner.sdk.plans`` for the plan models) plus shared handler libraries under ``handlers/``;
never ``runner.api.client``, ``runner.config`` or any other agent module. The import contracts
are checked by tests/unit/test_import_contracts.py. How to write and test a handler: README.md,
"Writing a handler", and ``runner.testing``.
"""

from __future__ import annotations

from runner.api.models import ErrorCode, ResultRequest, RunnerGroupSettings, RunnerJob, RunnerJobExecution
from runner.api.plans import BasePlan, PlanError
from runner.backoff import backoff_delay
from runner.sdk.handler import (
    ENTRY_POINT_GROUP,
    EXIT_RESTART,
    ChildProcessFailed,
    Handler,
    HandlerError,
    HandlerRegistry,
    JobContext,
    JobLog,
    LineHandler,
    ProcessResult,
    ProcessRunner,
    RunnerControl,
    SecretRegistry,
)
from runner.sdk.ports import (
    ActionWorkflowAPI,
    APIReply,
    APIRequestFailed,
    APIUnreachable,
    AppConfigAPI,
    HandlerAPI,
    TerraformBackendAPI,
    ToolSettings,
)
from runner.sdk.sandbox import fake_plan_result, sandbox_bytes
from runner.sdk.settings import (
    BUILTIN_FAMILIES,
    HandlerSettings,
    SettingsError,
    SettingsSource,
    TerraformSettings,
)

__all__ = [
    "BUILTIN_FAMILIES",
    "ENTRY_POINT_GROUP",
    "EXIT_RESTART",
    "APIReply",
    "APIRequestFailed",
    "APIUnreachable",
    "ActionWorkflowAPI",
    "AppConfigAPI",
    "BasePlan",
    "ChildProcessFailed",
    "ErrorCode",
    "Handler",
    "HandlerAPI",
    "HandlerError",
    "HandlerRegistry",
    "HandlerSettings",
    "JobContext",
    "JobLog",
    "LineHandler",
    "PlanError",
    "ProcessResult",
    "ProcessRunner",
    "ResultRequest",
    "RunnerControl",
    "RunnerGroupSettings",
    "RunnerJob",
    "RunnerJobExecution",
    "SecretRegistry",
    "SettingsError",
    "SettingsSource",
    "TerraformBackendAPI",
    "TerraformSettings",
    "ToolSettings",
    "backoff_delay",
    "fake_plan_result",
    "sandbox_bytes",
]
