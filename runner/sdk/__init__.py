"""THE handler SDK: everything a handler imports from the runner, and nothing more.

A handler (``handlers/...`` or a third-party package) imports ``runner.sdk`` (and
``runner.sdk.plans`` for the plan models) plus shared handler libraries under ``handlers/``;
never ``runner.api.client``, ``runner.config`` or any other agent module. The import contracts
are checked by tests/unit/test_import_contracts.py. How to write and test a handler: README.md,
"Writing a handler", and ``runner.testing``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runner.api.codes import ErrorCode
    from runner.api.models import ResultRequest, RunnerGroupSettings, RunnerJob, RunnerJobExecution
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
        HelmReleaseAPI,
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

#: Where each name of the SDK lives. Importing ``runner.sdk`` loads none of them: a name loads
#: its module at first use (the module ``__getattr__`` below), so a shared handler library that
#: needs only ``HandlerError`` (``handlers.oci.errors``) does not import the wire and plan
#: models, pydantic and the job-type table with it (the OCI worker's start-up, issue 17).
_WHERE: dict[str, str] = {
    "APIReply": "runner.sdk.ports",
    "APIRequestFailed": "runner.sdk.ports",
    "APIUnreachable": "runner.sdk.ports",
    "ActionWorkflowAPI": "runner.sdk.ports",
    "AppConfigAPI": "runner.sdk.ports",
    "BUILTIN_FAMILIES": "runner.sdk.settings",
    "BasePlan": "runner.api.plans",
    "ChildProcessFailed": "runner.sdk.errors",
    "ENTRY_POINT_GROUP": "runner.sdk.handler",
    "EXIT_RESTART": "runner.sdk.handler",
    "ErrorCode": "runner.api.codes",
    "Handler": "runner.sdk.handler",
    "HandlerAPI": "runner.sdk.ports",
    "HandlerError": "runner.sdk.errors",
    "HandlerRegistry": "runner.sdk.handler",
    "HandlerSettings": "runner.sdk.settings",
    "HelmReleaseAPI": "runner.sdk.ports",
    "JobContext": "runner.sdk.handler",
    "JobLog": "runner.sdk.handler",
    "LineHandler": "runner.sdk.handler",
    "PlanError": "runner.api.plans",
    "ProcessResult": "runner.sdk.handler",
    "ProcessRunner": "runner.sdk.handler",
    "ResultRequest": "runner.api.models",
    "RunnerControl": "runner.sdk.handler",
    "RunnerGroupSettings": "runner.api.models",
    "RunnerJob": "runner.api.models",
    "RunnerJobExecution": "runner.api.models",
    "SecretRegistry": "runner.sdk.handler",
    "SettingsError": "runner.sdk.settings",
    "SettingsSource": "runner.sdk.settings",
    "TerraformBackendAPI": "runner.sdk.ports",
    "TerraformSettings": "runner.sdk.settings",
    "ToolSettings": "runner.sdk.ports",
    "backoff_delay": "runner.backoff",
    "fake_plan_result": "runner.sdk.sandbox",
    "sandbox_bytes": "runner.sdk.sandbox",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


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
    "HelmReleaseAPI",
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
