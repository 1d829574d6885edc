"""Sandbox mode: a job whose type the job-type table marks ``fake`` runs through the real
pipeline with its work faked (the reference's ``bins/runner/internal/pkg/jobloop/sandbox.go``).

A vendor's sandbox org exercises the whole install flow without touching a cloud: statuses,
logs, outputs and results are real, but each step is a timed sleep with filler log lines, and
what the job reports comes from the job type's own handler, through its ``sandbox`` hook
(``Handler.sandbox``: outputs and plan contents from the plan's ``sandbox_mode`` block;
terraform adds the fake state). Unlike the reference, a fault injected in any step fails the
job, and the fault probability is a setting rather than a fixed 10 %.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import ClassVar

import anyio

from runner.sdk import Handler, HandlerError, JobContext
from runner.sdk.plans import SandboxMode

FAULT_MESSAGE = "sandbox mode fault injected"


@dataclass(frozen=True)
class SandboxTiming:
    """``RUNNER_SANDBOX_JOB_DURATION`` (split over three steps) and ``RUNNER_SANDBOX_FAULTS``."""

    duration: float = 5.0
    faults: float = 0.0


class SandboxHandler(Handler):
    """Stands in for ``real`` (the job type's handler) while settings say ``sandbox_mode``.

    It reads the plan whatever the job type (the sandbox block is in every plan), takes any
    operation, and asks ``real`` only what its fake run reports.
    """

    #: Every plan may carry the ``sandbox_mode`` block, whatever the job type's model.
    needs_plan: ClassVar[bool | None] = True

    def __init__(self, real: Handler | None = None, timing: SandboxTiming | None = None) -> None:
        self.real = real or Handler()
        self.timing = timing or SandboxTiming()

    async def _fake_step(self, ctx: JobContext, step: str, share: float) -> None:
        duration = max(0.0, self.timing.duration * share)
        ctx.log.info(f"sandbox mode: faking {step} of {ctx.job.type} for {duration:.2f}s")
        end = anyio.current_time() + duration
        while anyio.current_time() < end:
            await anyio.sleep(min(0.25, end - anyio.current_time()))
            ctx.log.debug("sandbox job log")
        if self.timing.faults and random.random() < self.timing.faults:
            raise HandlerError(f"{FAULT_MESSAGE} in {step}")

    async def prepare(self, ctx: JobContext) -> None:
        await self._fake_step(ctx, "prepare", 1 / 3)

    async def execute(self, ctx: JobContext) -> None:
        await self._fake_step(ctx, "execute", 1 / 3)
        block = ctx.plan.sandbox_mode
        if block is None or not block.enabled:
            # Nothing to report, but the family's hook still runs: an actions workflow PUTs its
            # steps finished whatever the plan's block says, as the reference does.
            block = SandboxMode()
        await self.real.sandbox(ctx, block)

    async def cleanup(self, ctx: JobContext) -> None:
        await self._fake_step(ctx, "cleanup", 1 / 3)
