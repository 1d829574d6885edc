"""The ``ctx.control`` of a job under ``runner mng``: the daemon's ``RunnerControl`` plus the
SDK's ``WorkloadSupervisor`` port, bound to one execution (a shutdown it asks for spares it, so
its final status is reported before mng exits)."""

from __future__ import annotations

from runner.daemon import Daemon
from runner.mng.supervisor import Supervisor
from runner.sdk.ports import WorkloadStatus


class MngJobControl:
    def __init__(self, daemon: Daemon, execution_id: str, supervisor: Supervisor) -> None:
        self._daemon = daemon
        self._execution_id = execution_id
        self._supervisor = supervisor

    # RunnerControl
    def request_shutdown(self, *, graceful: bool, exit_code: int = 0, reason: str = "") -> None:
        self._daemon.request_shutdown(
            graceful=graceful, exit_code=exit_code, reason=reason, requested_by=self._execution_id
        )

    def loop_ages_ns(self) -> dict[str, int]:
        return self._daemon.loop_ages_ns()

    # WorkloadSupervisor
    def workload_status(self) -> WorkloadStatus:
        return self._supervisor.status()

    async def desired_version(self) -> str | None:
        read = self._supervisor.desired_version
        return await read() if read is not None else None

    async def restart_workload(self, *, reason: str) -> WorkloadStatus:
        return await self._supervisor.restart(reason)

    async def stop_workload(self, *, reason: str) -> WorkloadStatus:
        return await self._supervisor.stop(reason)

    async def update_workload(self, version: str, *, reason: str) -> WorkloadStatus:
        return await self._supervisor.update(version, reason)

    def exit_after_job(self, *, reason: str, power_off: bool = False) -> None:
        if power_off:
            self._supervisor.power_off_requested = True
        self.request_shutdown(graceful=True, exit_code=0, reason=reason)
