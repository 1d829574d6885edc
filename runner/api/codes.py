"""Error codes of execution results, apart from the wire models: an IntEnum without pydantic, so
the handler SDK's errors (``runner.sdk.errors``) import without building or even importing the
models (the OCI worker's start-up, issue 17). ``runner.api.models`` re-exports it."""

from __future__ import annotations

import enum


class ErrorCode(enum.IntEnum):
    """Machine-readable error codes we put in ``error_code`` (the reference always sends 0)."""

    NONE = 0
    HANDLER_ERROR = 1
    INVALID_PLAN = 2
    UNSUPPORTED_JOB = 3
    TIMED_OUT = 4
    CANCELLED = 5
    RUNNER_RESTARTED = 6
    INTERNAL = 7
    CHILD_PROCESS = 8
