"""``noop``, ``noop-build``, ``noop-sync``, ``noop-deploy``: succeed, say so, touch nothing.

The control plane uses them for component types with nothing to build or sync, and as a cheap
end-to-end probe of a runner. They read no plan.
"""

from __future__ import annotations

from typing import ClassVar

from runner.sdk import Handler, JobContext


class NoopHandler(Handler):
    needs_plan: ClassVar[bool | None] = False

    async def execute(self, ctx: JobContext) -> None:
        ctx.log.info(f"{ctx.job.type}: nothing to do")
        ctx.set_outputs({})
