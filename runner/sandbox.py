"""Sandbox mode: every job except ``shut-down`` is faked (reference-runner.md §4.19).

A vendor's sandbox org exercises the whole install flow without touching a cloud: the job runs
through the real pipeline (statuses, logs, outputs, results), but its work is a timed sleep with
filler log lines, outputs come from ``plan.sandbox_mode.outputs``, and plan jobs return the fake
plan contents the control plane put in the plan. Unlike the reference, a fault injected in any
step fails the job, and the fault probability is a setting rather than a fixed 10 %.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import random
from typing import Any

import anyio

from runner.api.models import ResultRequest
from runner.api.plans import SandboxMode, SandboxModePlanContents, b64url
from runner.handler import Handler, HandlerError, JobContext

FAULT_MESSAGE = "sandbox mode fault injected"


def _as_bytes(value: str) -> bytes:
    """Plan contents in sandbox blocks are base64 (Go []byte) or plain text; accept both."""
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return value.encode()


def fake_plan_result(block: SandboxModePlanContents | Any) -> ResultRequest:
    raw = _as_bytes(getattr(block, "plan_contents", "") or "")
    display = _as_bytes(getattr(block, "plan_display_contents", "") or "")
    return ResultRequest(
        success=True,
        contents_compressed=b64url(gzip.compress(raw, mtime=0)),
        contents_display_compressed=b64url(gzip.compress(display, mtime=0)),
    )


class SandboxHandler(Handler):
    """Stands in for the real handler of any job type while settings say ``sandbox_mode``."""

    async def _fake_step(self, ctx: JobContext, step: str, share: float) -> None:
        duration = max(0.0, ctx.config.sandbox_job_duration * share)
        ctx.log.info(f"sandbox mode: faking {step} of {ctx.job.type} for {duration:.2f}s")
        end = anyio.current_time() + duration
        while anyio.current_time() < end:
            await anyio.sleep(min(0.25, end - anyio.current_time()))
            ctx.log.debug("sandbox job log")
        if ctx.config.sandbox_faults and random.random() < ctx.config.sandbox_faults:
            raise HandlerError(f"{FAULT_MESSAGE} in {step}")

    def _sandbox(self, ctx: JobContext) -> SandboxMode | None:
        return getattr(ctx.plan, "sandbox_mode", None)

    async def prepare(self, ctx: JobContext) -> None:
        await self._fake_step(ctx, "prepare", 1 / 3)

    async def execute(self, ctx: JobContext) -> None:
        await self._fake_step(ctx, "execute", 1 / 3)
        sandbox = self._sandbox(ctx)
        if sandbox is None or not sandbox.enabled:
            ctx.set_outputs({})
            return
        ctx.set_outputs(sandbox.outputs or {})
        if sandbox.terraform is not None:
            tf = sandbox.terraform
            workspace_id = tf.workspace_id or _plan_workspace_id(ctx)
            if tf.state_json and workspace_id:
                state = _as_bytes(tf.state_json)
                await ctx.api.request(
                    "POST",
                    "/v1/terraform-backend",
                    params={"workspace_id": workspace_id, "job_id": ctx.job.id},
                    content=state,
                    headers={"Content-Type": "application/json"},
                )
                await ctx.api.post_state_json(workspace_id, ctx.job.id, state)
            ctx.set_result(fake_plan_result(tf))
        elif sandbox.helm is not None:
            ctx.set_result(fake_plan_result(sandbox.helm))
        elif sandbox.kubernetes_manifest is not None:
            ctx.set_result(fake_plan_result(sandbox.kubernetes_manifest))

    async def cleanup(self, ctx: JobContext) -> None:
        await self._fake_step(ctx, "cleanup", 1 / 3)


def _plan_workspace_id(ctx: JobContext) -> str:
    backend = getattr(ctx.plan, "terraform_backend", None)
    if backend is None:
        terraform = getattr(ctx.plan, "terraform", None)
        backend = getattr(terraform, "terraform_backend", None)
    return str(getattr(backend, "workspace_id", "") or "")
