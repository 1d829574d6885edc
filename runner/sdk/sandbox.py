"""What sandbox mode reports in place of real work: plan contents from the plan's sandbox block.

Sandbox mode (the reference's ``bins/runner/internal/pkg/jobloop/sandbox.go``) runs a job
through the real pipeline with its work faked; ``Handler.sandbox`` decides what the fake run
reports, and these helpers build it.
"""

from __future__ import annotations

import base64
import binascii
import gzip

from runner.api.models import ResultRequest
from runner.api.plans import SandboxModePlanContents, SandboxModeTerraform, b64url


def sandbox_bytes(value: str) -> bytes:
    """Plan contents in sandbox blocks are base64 (Go []byte) or plain text; accept both."""
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return value.encode()


def fake_plan_result(block: SandboxModePlanContents | SandboxModeTerraform) -> ResultRequest:
    """A successful plan result carrying the block's plan and display contents."""
    raw = sandbox_bytes(block.plan_contents or "")
    display = sandbox_bytes(block.plan_display_contents or "")
    return ResultRequest(
        success=True,
        contents_compressed=b64url(gzip.compress(raw, mtime=0)),
        contents_display_compressed=b64url(gzip.compress(display, mtime=0)),
    )
