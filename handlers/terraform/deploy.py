"""``terraform-deploy``: the module comes from the OCI artifact a build pushed (and a sync
copied) to ``src_registry:src_tag``; the rest is the shared plan/apply pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from handlers.oci.artifacts import pull_directory
from handlers.oci.registry import open_registry
from handlers.terraform.operations import TerraformRunHandler
from handlers.terraform.workspace import InvalidInput, TerraformInputs
from runner.sdk import JobContext
from runner.sdk.plans import BasePlan, DeployPlan


class TerraformDeployHandler(TerraformRunHandler):
    plan_model: ClassVar[type[BasePlan] | None] = DeployPlan
    sandbox_version_key: ClassVar[bool] = False

    def read_inputs(self, ctx: JobContext) -> TerraformInputs:
        return TerraformInputs.from_deploy(ctx.plan_as(DeployPlan))

    def version_hints(self, ctx: JobContext) -> tuple[str, str, str]:
        plan = ctx.plan_as(DeployPlan)
        return plan.app_id, plan.app_config_id, plan.component_id

    async def fetch_module(self, ctx: JobContext) -> Path:
        plan = ctx.plan_as(DeployPlan)
        if not plan.src_tag:
            raise InvalidInput("the deploy plan has no src_tag: which module artifact to deploy?")
        dest = ctx.workspace / "module"
        target = await open_registry(plan.src_registry, config=ctx.tools, secrets=ctx.secrets, log=ctx.log)
        try:
            files = await pull_directory(target, plan.src_tag, dest, log=ctx.log)
        finally:
            await target.aclose()
        ctx.log.info("module pulled", artifact=target.display(plan.src_tag), files=len(files))
        return dest
