"""The errors a handler raises to fail its job with a clear message and code.

Apart from ``runner.sdk.handler`` so that shared handler libraries (``handlers.oci.errors``) can
import them without the wire and plan models behind the rest of the SDK; ``runner.sdk`` and
``runner.sdk.handler`` re-export them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from runner.api.codes import ErrorCode


class HandlerError(Exception):
    """A failure a handler wants reported as is: a clear message, a code, optional details.

    ``details`` end up in the result's ``error_metadata`` (strings only), so keep them small and
    free of secrets (they are masked anyway).
    """

    code: ErrorCode = ErrorCode.HANDLER_ERROR

    def __init__(self, message: str, *, code: ErrorCode | None = None, **details: Any) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.details = {k: str(v) for k, v in details.items() if v is not None}


class ChildProcessFailed(HandlerError):
    """A child process exited non-zero; carries the exit code and the tail of its stderr."""

    code = ErrorCode.CHILD_PROCESS

    def __init__(self, argv0: str, exit_code: int, stderr_tail: Sequence[str]) -> None:
        tail = "\n".join(stderr_tail[-20:])
        summary = stderr_tail[-1] if stderr_tail else ""
        super().__init__(
            f"{argv0} exited with code {exit_code}" + (f": {summary}" if summary else ""),
            exit_code=exit_code,
            stderr_tail=tail,
        )
        self.exit_code = exit_code
        self.stderr_tail = list(stderr_tail)
