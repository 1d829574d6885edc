"""Compatibility: the handler interface moved to the SDK package, ``runner.sdk``.

Kept so that plug-ins written against ``runner.handler`` keep loading; new code imports
``runner.sdk``.
"""

from __future__ import annotations

from runner.sdk.handler import (
    ENTRY_POINT_GROUP,
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

__all__ = [
    "ENTRY_POINT_GROUP",
    "ChildProcessFailed",
    "Handler",
    "HandlerError",
    "HandlerRegistry",
    "JobContext",
    "JobLog",
    "LineHandler",
    "ProcessResult",
    "ProcessRunner",
    "RunnerControl",
    "SecretRegistry",
]
