"""``sandbox-terraform``: the install's sandbox module, from git or a local archive, through
the shared plan/apply pipeline (policies and hooks included)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from handlers.sources import fetch_job_source
from handlers.terraform.operations import TerraformRunHandler
from handlers.terraform.workspace import TerraformInputs
from runner.sdk import JobContext
from runner.sdk.plans import BasePlan, SandboxRunPlan


class SandboxTerraformHandler(TerraformRunHandler):
    plan_model: ClassVar[type[BasePlan] | None] = SandboxRunPlan
    sandbox_version_key: ClassVar[bool] = True

    def read_inputs(self, ctx: JobContext) -> TerraformInputs:
        return TerraformInputs.from_sandbox(ctx.plan_as(SandboxRunPlan))

    def version_hints(self, ctx: JobContext) -> tuple[str, str, str]:
        plan = ctx.plan_as(SandboxRunPlan)
        return plan.app_id, plan.app_config_id, ""

    async def fetch_module(self, ctx: JobContext) -> Path:
        plan = ctx.plan_as(SandboxRunPlan)
        fetched = await fetch_job_source(ctx, plan.git_source, plan.local_archive)
        ctx.log.info("sandbox module ready", source=fetched.description)
        return fetched.directory
