"""A scriptable handler for the runner's own tests, loaded with ``RUNNER_HANDLERS``.

Its plan says what to do: log lines (over time), register secrets, run a child process, set
outputs, fail. Tests map it to a job type the runner has no built-in handler for
(``actions-workflow``), so every scenario runs through the real daemon, executor, log pipeline
and control plane.
"""

from __future__ import annotations

from typing import Any, ClassVar

import anyio

from runner.sdk import BasePlan, Handler, HandlerError, JobContext, ResultRequest, TerraformSettings

SCRIPT_TYPE = "actions-workflow"
HANDLER_TARGET = f"{SCRIPT_TYPE}=tests.support.handlers:ScriptHandler"


class ScriptPlan(BasePlan):
    lines: list[str] = []
    line_count: int = 0
    line_interval: float = 0.0
    secrets: list[str] = []
    argv: list[str] = []
    env: dict[str, str] = {}
    outputs: dict[str, Any] = {}
    result_contents: str = ""
    fail: str = ""
    fail_in: str = "execute"
    crash: str = ""
    sleep: float = 0.0


class ScriptHandler(Handler):
    plan_model: ClassVar[type[BasePlan] | None] = ScriptPlan

    async def prepare(self, ctx: JobContext) -> None:
        plan = ctx.plan_as(ScriptPlan)
        ctx.secrets.register(*plan.secrets)
        if plan.fail and plan.fail_in == "prepare":
            raise HandlerError(plan.fail, where="prepare")

    async def execute(self, ctx: JobContext) -> None:
        plan = ctx.plan_as(ScriptPlan)
        for line in plan.lines:
            ctx.log.info(line)
        for i in range(plan.line_count):
            ctx.log.info(f"line {i:07d}")
            if plan.line_interval:
                await anyio.sleep(plan.line_interval)
        if plan.argv:
            await ctx.processes.run(plan.argv, env=plan.env)
        if plan.sleep:
            await anyio.sleep(plan.sleep)
        if plan.crash:
            raise RuntimeError(plan.crash)
        if plan.fail and plan.fail_in == "execute":
            raise HandlerError(plan.fail, where="execute")
        ctx.set_outputs(plan.outputs)
        if plan.result_contents:
            ctx.set_result(ResultRequest(success=True, contents=plan.result_contents))


class SettingsEchoHandler(Handler):
    """Outputs the settings a handler sees (``runner exec`` reads them as ``runner run`` does)."""

    needs_plan: ClassVar[bool | None] = False

    async def execute(self, ctx: JobContext) -> None:
        terraform = ctx.handler_settings(TerraformSettings)
        ctx.set_outputs(
            {
                "terraform_shortcuts": terraform.shortcuts,
                "terraform_version": terraform.version,
                "insecure_registries": list(ctx.tools.insecure_registries),
                "child_grace": ctx.tools.child_grace,
            }
        )
