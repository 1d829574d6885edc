"""The four management handlers.

Nothing here can end the mng process before the job's final status is reported: a restart or an
update runs in ``execute`` and ends with the workload up (or rolled back, failing the job); the
two shut-downs stop the workload in ``execute`` and ask for mng's own exit (and the power-off)
through ``exit_after_job``, which the daemon carries out only after this job reported
``finished``, and the job-type table has the executor PATCH the job ``finished`` as the
reference does.
"""

from __future__ import annotations

from typing import ClassVar

from handlers.mng.version import VersionError, resolve_version
from runner.sdk import Handler, HandlerError, JobContext
from runner.sdk.ports import WorkloadError, WorkloadStatus, WorkloadSupervisor


def supervisor(ctx: JobContext) -> WorkloadSupervisor:
    control = ctx.control
    if not isinstance(control, WorkloadSupervisor):
        raise HandlerError(
            f"{ctx.job_type} needs a supervisor: management jobs run under `runner mng`, not `runner run`"
        )
    return control


def _failed(exc: WorkloadError) -> HandlerError:
    error = HandlerError(str(exc))
    error.details.update(exc.details)  # version, rolled_back_to: into the result's error_metadata
    return error


def _report(ctx: JobContext, status: WorkloadStatus, **extra: str) -> None:
    ctx.log.info(
        f"workload ({status.mode}): version {status.version or '-'}, "
        f"{'running' if status.running else 'stopped'}{' (held)' if status.held else ''}"
        + (f"; {status.detail}" if status.detail else "")
    )
    ctx.set_outputs(
        {
            "mode": status.mode,
            "version": status.version,
            "running": status.running,
            "held": status.held,
            **extra,
        }
    )


class MngRestartHandler(Handler):
    """``mng-runner-restart``: drain the workload, start it again, wait until it is ready."""

    needs_plan: ClassVar[bool] = False

    async def execute(self, ctx: JobContext) -> None:
        port = supervisor(ctx)
        ctx.log.info("restarting the runner workload")
        try:
            status = await port.restart_workload(reason=f"mng-runner-restart job {ctx.job.id}")
        except WorkloadError as exc:
            raise _failed(exc) from None
        _report(ctx, status)


class MngUpdateVersionHandler(Handler):
    """``mng-runner-update-version``: to the version of the job's metadata or of settings
    ``container_image_tag``; rolled back, failing the job, when it is not ready in time."""

    needs_plan: ClassVar[bool] = False

    async def execute(self, ctx: JobContext) -> None:
        port = supervisor(ctx)
        fresh = await port.desired_version()
        try:
            version = resolve_version(fresh or ctx.settings.container_image_tag, ctx.job.metadata)
        except VersionError as exc:
            raise HandlerError(str(exc)) from None
        before = port.workload_status().version
        ctx.log.info(f"updating the runner workload from {before or '-'} to {version}")
        try:
            status = await port.update_workload(version, reason=f"mng-runner-update-version job {ctx.job.id}")
        except WorkloadError as exc:
            ctx.log.error(str(exc))
            raise _failed(exc) from None
        _report(ctx, status, previous_version=before)


class MngShutDownHandler(Handler):
    """``mng-shut-down``: drain the workload and hold it stopped, then mng exits (0) once this
    job is reported; the job is PATCHed ``finished`` (job-type table)."""

    needs_plan: ClassVar[bool] = False

    async def execute(self, ctx: JobContext) -> None:
        port = supervisor(ctx)
        ctx.log.info("stopping the runner workload (its SIGTERM drain); mng exits after this job")
        status = await port.stop_workload(reason=f"mng-shut-down job {ctx.job.id}")
        port.exit_after_job(reason=f"mng-shut-down job {ctx.job.id}")
        _report(ctx, status)


class MngVmShutDownHandler(Handler):
    """``mng-vm-shut-down``: drain the workload; with ``metadata.shutdown_type`` ``vm`` (as the
    reference), mng then exits and runs the power-off command once this job is reported."""

    needs_plan: ClassVar[bool] = False

    async def execute(self, ctx: JobContext) -> None:
        port = supervisor(ctx)
        kind = str((ctx.job.metadata or {}).get("shutdown_type") or "").lower()
        ctx.log.info("stopping the runner workload (its SIGTERM drain)")
        status = await port.stop_workload(reason=f"mng-vm-shut-down job {ctx.job.id}")
        if kind == "vm":
            ctx.log.info("powering the VM off after this job is reported")
            port.exit_after_job(reason=f"mng-vm-shut-down job {ctx.job.id}", power_off=True)
        else:
            ctx.log.info(
                f"shutdown_type is {kind or 'not set'}, not vm: the workload is stopped, the VM stays up"
            )
        _report(ctx, status, shutdown_type=kind)
