"""Operations jobs: ``health-check``, ``shut-down`` and ``update-version``.

They act on the runner itself, through ``ctx.control``. Shutdowns are requested during
``execute`` but carried out by the daemon only after this job's final status is reported, so
the control plane always learns that the job finished before the runner goes away.
"""

from __future__ import annotations

from typing import ClassVar

from runner.sdk import EXIT_RESTART, Handler, JobContext


class HealthCheckHandler(Handler):
    """Outputs ``{"job_loops": {group: ns since that loop last polled}}``: a stuck loop shows."""

    needs_plan: ClassVar[bool | None] = False

    async def execute(self, ctx: JobContext) -> None:
        ages = ctx.control.loop_ages_ns()
        ctx.log.info(
            "job loops: " + ", ".join(f"{group} polled {ns / 1e9:.1f}s ago" for group, ns in ages.items())
        )
        ctx.set_outputs({"job_loops": ages})


class ShutDownHandler(Handler):
    """Graceful (drain running jobs) or forced (cancel them) per ``metadata.shutdown_type``."""

    needs_plan: ClassVar[bool | None] = False

    async def execute(self, ctx: JobContext) -> None:
        kind = ((ctx.job.metadata or {}).get("shutdown_type") or "graceful").lower()
        graceful = kind != "force"
        ctx.log.info(f"shut-down ({'graceful' if graceful else 'force'}): the runner exits after this job")
        ctx.control.request_shutdown(
            graceful=graceful, exit_code=0, reason=f"shut-down job {ctx.job.id} ({kind})"
        )
        ctx.set_outputs({"shutdown_type": kind})


class UpdateVersionHandler(Handler):
    """Report finished, drain, exit: the supervisor (ECS, Kubernetes, systemd) starts the new image."""

    needs_plan: ClassVar[bool | None] = False

    async def execute(self, ctx: JobContext) -> None:
        image = ctx.settings.container_image_url or ""
        tag = ctx.settings.container_image_tag or ""
        target = f"{image}:{tag}" if image and tag else (tag or "the configured image")
        ctx.log.info(
            f"update-version: running {ctx.tools.runner_version}; exiting so the supervisor starts {target}"
        )
        ctx.control.request_shutdown(
            graceful=True, exit_code=EXIT_RESTART, reason=f"update-version job {ctx.job.id}"
        )
        ctx.set_outputs({"current_version": ctx.tools.runner_version, "requested": target})
