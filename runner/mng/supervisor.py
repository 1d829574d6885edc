"""Keeps the runner workload running, and carries out what management jobs ask of it.

One task (``run``) owns the workload: it adopts the incarnation a previous mng left running or
starts one, waits for it to exit, and decides (``policy``) what the exit means: exit 0 holds it
stopped, exit 75 restarts it at once on the desired version, anything else is a crash restarted
after a backoff, until the crash-loop limit stops the restarts and reports it (log, metrics).
The operations (restart, stop, update) take the same lock, mark the incarnation they stop as
intentional, and run shielded from the job's cancel with their own bound, so a workload is never
left half switched. Every change is written to the state file before the next step.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import structlog

from runner.metrics import Counter, Gauge, Histogram, RunnerMetrics
from runner.mng.policy import (
    ExitKind,
    ReadyResult,
    RestartPolicy,
    Verdict,
    VersionError,
    after_crash,
    after_update,
    check_version,
    classify_exit,
    describe_exit,
    rollback_message,
    update_on_restart,
)
from runner.mng.readiness import wait_ready
from runner.mng.state import WorkloadState
from runner.mng.workload import Handle, Workload
from runner.sdk.ports import WorkloadError, WorkloadStatus

log = structlog.get_logger("runner.mng")


class MngMetrics(RunnerMetrics):
    """The daemon's metrics plus the workload's (``byoc_runner_mng_*``)."""

    def __init__(self) -> None:
        super().__init__()
        self.workload_up = Gauge("byoc_runner_mng_workload_up", "1 while the runner workload runs.", ())
        self.workload_starts = Counter(
            "byoc_runner_mng_workload_starts_total", "Workload starts, by reason.", ("reason",)
        )
        self.workload_crashes = Counter(
            "byoc_runner_mng_workload_crashes_total", "Workload exits that were not asked for.", ()
        )
        self.crash_loops = Counter(
            "byoc_runner_mng_crash_loops_total", "Times the crash-loop limit stopped the restarts.", ()
        )
        self.updates = Counter("byoc_runner_mng_updates_total", "Version updates, by outcome.", ("outcome",))

    def all(self) -> list[Counter | Histogram]:
        return [
            *super().all(),
            self.workload_up,
            self.workload_starts,
            self.workload_crashes,
            self.crash_loops,
            self.updates,
        ]


@dataclass(frozen=True)
class SupervisorOptions:
    #: The version to install and start when neither the state file nor the host names one.
    initial_version: str
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    #: How long a (re)started version has to answer 200 on ``/readyz``.
    health_deadline: float = 120.0
    #: SIGTERM -> SIGKILL for the workload: longer than its drain grace (RUNNER_DRAIN_GRACE).
    stop_timeout: float = 90.0


class Supervisor:
    def __init__(
        self,
        workload: Workload,
        state_path: Path,
        options: SupervisorOptions,
        metrics: MngMetrics,
        *,
        desired_version: Callable[[], Awaitable[str | None]] | None = None,
    ) -> None:
        self.workload = workload
        self.state_path = state_path
        self.options = options
        self.metrics = metrics
        self.desired_version = desired_version
        self.state = WorkloadState.load(state_path)
        self.handle: Handle | None = None
        self.crash_times: list[float] = []
        self.power_off_requested = False
        self._lock = anyio.Lock()
        self._wake = anyio.Event()

    # ------------------------------------------------------------------ status
    @property
    def version(self) -> str:
        return self.state.version

    def status(self, detail: str = "") -> WorkloadStatus:
        running = self.handle is not None and not self.handle.exited()
        return WorkloadStatus(self.workload.mode, self.version, running, self.state.held, detail)

    # ------------------------------------------------------------------ the keep-alive task
    async def run(self) -> None:
        async with self._lock:
            retry = await self._bring_up()
        while True:
            if retry is not None:  # a crash (or a failed start) waits out its backoff first
                await self._pause(retry)
                async with self._lock:
                    retry = None
                    if self.handle is None and not self.state.held:
                        version = self.version or self.options.initial_version
                        retry = await self._start_or_count_crash(version, "restart after crash")
                continue
            handle = self.handle
            if handle is None:  # held, or between operations: a management job wakes us
                await self._pause(None)
                continue
            code = await handle.wait()
            retry = await self._after_exit(handle, code)

    async def _pause(self, seconds: float | None) -> None:
        """Sleep ``seconds`` (forever with None), or until an operation started a workload."""
        self._wake = anyio.Event()
        if self.handle is not None:
            return
        with anyio.move_on_after(seconds if seconds is not None else float("inf")):
            await self._wake.wait()

    async def _bring_up(self) -> float | None:
        handle = await self.workload.adopt(self.state)
        if handle is not None:
            self.handle = handle
            self.metrics.workload_up.set(1)
            log.info("adopted the running workload", workload=handle.describe(), version=self.version)
            return None
        if self.state.held:
            log.warning("the workload is held stopped; not starting it", reason=self.state.held_reason)
            return None
        if self.state.pid or self.state.container:
            log.warning("the workload mng started before is gone; starting it again", version=self.version)
        version = self.state.version or self.workload.installed_version() or self.options.initial_version
        return await self._start_or_count_crash(version, "start")

    async def _after_exit(self, handle: Handle, code: int | None) -> float | None:
        """Handle one exit; returns the pause before a crash restart, or None (nothing to wait for)."""
        async with self._lock:
            if self.handle is not handle or handle.intentional:
                return None
            self.handle = None
            self.metrics.workload_up.set(0)
            kind = classify_exit(code)
            if kind is ExitKind.STOPPED:
                self._hold(
                    "the runner exited 0 (a shut-down job or SIGTERM); start it with mng-runner-restart"
                )
                log.warning("the runner workload exited 0; holding it stopped", version=self.version)
                return None
            if kind is ExitKind.RESTART:
                return await self._restart_requested()
            return self._crashed(code)

    def _crashed(self, code: int | None, how: str | None = None) -> float | None:
        """Count a crash (``how`` describes it when it was not an exit) and decide what follows."""
        how = how or describe_exit(code)
        now = time.monotonic()
        self.crash_times.append(now)
        self.metrics.workload_crashes.inc()
        decision = after_crash(self.crash_times, now, self.options.policy)
        if decision.crash_loop:
            self.metrics.crash_loops.inc()
            message = (
                f"runner workload is crash-looping: {decision.recent_crashes} crashes within "
                f"{self.options.policy.window:g}s (last: {how}); not restarting it "
                "until a mng-runner-restart or mng-runner-update-version job"
            )
            log.error(message, version=self.version)
            self._hold(message)
            return None
        log.error(
            "runner workload crashed; restarting it",
            exit=how,
            version=self.version,
            restart_in_seconds=round(decision.delay, 2),
            recent_crashes=decision.recent_crashes,
        )
        return decision.delay

    async def _restart_requested(self) -> float | None:
        """Exit 75 (the runner's own update-version): up again at once, on the desired version."""
        desired: str | None = None
        if self.desired_version is not None:
            try:
                desired = await self.desired_version()
            except Exception as exc:  # noqa: BLE001 - settings unreachable: restart as is
                log.warning("could not read the desired version; restarting as is", error=str(exc))
        target = update_on_restart(self.version, desired)
        if target is None:
            log.info("the runner asked to be restarted (exit 75)", version=self.version)
            return await self._start_or_count_crash(self.version, "restart requested")
        log.info(
            "the runner asked to be restarted (exit 75) for a new version", version=self.version, to=target
        )
        try:
            await self._update_locked(target)
        except WorkloadError as exc:
            log.error("update on restart failed", error=str(exc))
        if self.handle is None and not self.state.held:  # not even the old version came back
            return self._crashed(None, "no version came back after the update")
        return None

    # ------------------------------------------------------------------ starting and stopping
    async def _start_or_count_crash(self, version: str, reason: str) -> float | None:
        """Start ``version``; a failed install or start counts as a crash (the returned backoff)."""
        try:
            await self._start(version, reason)
        except Exception as exc:  # noqa: BLE001 - an install or docker failure counts as a crash
            self.state.version = self.state.version or version
            log.error("could not start the workload", version=version, error=str(exc))
            return self._crashed(None, f"could not start: {exc}")
        return None

    async def _start(self, version: str, reason: str) -> Handle:
        await self.workload.install(version)
        handle = await self.workload.start(version)
        self.handle = handle
        handle.remember(self.state)
        self.state.mode = self.workload.mode
        self.state.version = version
        self.state.held, self.state.held_reason = False, ""
        self.state.save(self.state_path)
        self.metrics.workload_starts.inc(1, reason)
        self.metrics.workload_up.set(1)
        log.info("workload started", workload=handle.describe(), version=version, reason=reason)
        self._wake.set()
        return handle

    async def _stop_current(self, reason: str) -> int | None:
        handle = self.handle
        if handle is None:
            return None
        handle.intentional = True
        log.info("stopping the workload", workload=handle.describe(), reason=reason)
        code = await handle.stop(self.options.stop_timeout)
        self.handle = None
        self.metrics.workload_up.set(0)
        log.info("workload stopped", exit=describe_exit(code))
        return code

    def _hold(self, reason: str) -> None:
        self.state.held, self.state.held_reason = True, reason
        self.state.pid = self.state.pid_start = 0
        self.state.save(self.state_path)

    def _bound(self) -> float:
        return 2 * self.options.stop_timeout + 2 * self.options.health_deadline + 600

    async def _wait_ready(self, handle: Handle) -> ReadyResult:
        return await wait_ready(self.workload.health_url, self.options.health_deadline, exited=handle.exited)

    # ------------------------------------------------------------------ operations (the port)
    async def restart(self, reason: str) -> WorkloadStatus:
        with anyio.CancelScope(shield=True), anyio.fail_after(self._bound()):
            async with self._lock:
                await self._stop_current(reason)
                self.crash_times.clear()
                handle = await self._start(self.version or self.options.initial_version, "restart job")
                result = await self._wait_ready(handle)
        if not result.ready:
            raise WorkloadError(
                f"restarted version {self.version}, but it did not pass its health check (/readyz) "
                f"within {self.options.health_deadline:g}s: {result.detail}"
            )
        return self.status(f"ready after {result.seconds:.1f}s")

    async def stop(self, reason: str) -> WorkloadStatus:
        with anyio.CancelScope(shield=True), anyio.fail_after(self._bound()):
            async with self._lock:
                code = await self._stop_current(reason)
                self._hold(reason)
        return self.status(f"stopped ({describe_exit(code)})")

    async def update(self, version: str, reason: str) -> WorkloadStatus:
        try:
            check_version(version)
        except VersionError as exc:
            raise WorkloadError(str(exc), version=version) from None
        status: WorkloadStatus | None = None
        with anyio.CancelScope(shield=True), anyio.fail_after(self._bound()):
            async with self._lock:
                log.info("updating the workload", version=self.version, to=version, reason=reason)
                status = await self._update_locked(version)
        assert status is not None  # the shielded scope is never cancelled from outside
        return status

    async def _update_locked(self, version: str) -> WorkloadStatus:
        old = self.version
        try:
            await self.workload.install(version)  # before anything stops: a failure changes nothing
        except Exception as exc:  # noqa: BLE001 - reported as the job's failure
            self.metrics.updates.inc(1, "install-failed")
            raise WorkloadError(f"could not install version {version}: {exc}", version=version) from None
        await self._stop_current(f"update to {version}")
        self.crash_times.clear()
        try:
            result = await self._wait_ready(await self._start(version, "update"))
        except Exception as exc:  # noqa: BLE001 - a start that fails is a failed health check
            result = ReadyResult(False, 0.0, f"could not start: {exc}", exited=True)
        verdict = after_update(result, have_previous=bool(old) and old != version)
        if verdict is Verdict.KEEP:
            if result.ready:
                self.state.previous_version = old if old != version else self.state.previous_version
                self.state.save(self.state_path)
                self.metrics.updates.inc(1, "updated")
                log.info(
                    "workload updated", version=version, previous=old, ready_seconds=round(result.seconds, 2)
                )
                return self.status(f"version {version} ready after {result.seconds:.1f}s")
            self.metrics.updates.inc(1, "not-ready")
            raise WorkloadError(
                f"version {version} did not pass its health check (/readyz) within "
                f"{self.options.health_deadline:g}s ({result.detail}); "
                "there is no previous version to roll back to",
                version=version,
            )
        log.error(
            "new version failed its health check; rolling back", version=version, to=old, detail=result.detail
        )
        await self._stop_current(f"roll back from {version}")
        try:
            back_result = await self._wait_ready(await self._start(old, "rollback"))
        except Exception as exc:  # noqa: BLE001 - the keep-alive loop retries it as a crash
            back_result = ReadyResult(False, 0.0, f"could not start: {exc}", exited=True)
        self.metrics.updates.inc(1, "rolled-back")
        message = rollback_message(
            version, old, result, self.options.health_deadline, old_ready=back_result.ready
        )
        raise WorkloadError(message, version=version, rolled_back_to=old)
