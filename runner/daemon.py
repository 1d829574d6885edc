"""The daemon owns everything long-lived: settings, heartbeats, pollers, running jobs, drain.

Task tree (every task has an owner and, where it waits on the network, a deadline)::

    Daemon.run
    ├── signals            SIGTERM/SIGINT -> drain; a second one exits at once
    ├── health server      /healthz /readyz /metrics
    ├── log pipeline       ships job logs, delivers spool left by a previous process
    ├── heartbeats         every settings.heart_beat_timeout, never behind job work
    ├── settings refresh   applies groups, level, sandbox mode, period, parallelism live
    └── jobs               one JobRun per claimed execution
        └── pollers        one GroupPoller per group; stopped first on drain
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import anyio
import structlog
from anyio.abc import TaskGroup

from runner import PROCESS_STARTED, logging_setup
from runner.adapters import RunnerHandlerAPI, tool_settings
from runner.api.client import APIError, RunnerClient, TransportError, Unauthorized
from runner.api.models import (
    DEFAULT_POLLED_GROUPS,
    HeartBeatRequest,
    RunnerGroupSettings,
    RunnerJob,
    RunnerJobExecution,
)
from runner.backoff import backoff_delay
from runner.config import KNOWN_GROUPS, Config, ConfigError
from runner.executor import AbortReason, ExecutorDeps, JobRun
from runner.health import HealthEndpoints, Probe, serve_health
from runner.instance import DuplicateRunner, claim_runner_id, new_instance_id, refusal_window
from runner.journal import Journal, StateDirLock
from runner.logs import LogPipeline, LogRecord
from runner.metrics import RunnerMetrics
from runner.orphans import OrphanRecovery
from runner.poller import GroupPoller, Slot
from runner.redact import Redactor
from runner.sandbox import SandboxTiming
from runner.sdk.handler import Handler, HandlerRegistry, RunnerControl
from runner.sdk.settings import SettingsError
from runner.workspace import Workspaces

log = structlog.get_logger("runner.daemon")

#: Exit code of a second SIGTERM/SIGINT (128 + SIGTERM).
EXIT_FORCED = 143
#: Exit code when another process already runs as this runner id (as for a configuration error).
DUPLICATE_RUNNER_EXIT = 2

#: Group names the reference server writes into settings that are not real groups (§12.12).
GROUP_ALIASES = {"deploys": "deploy", "action": "actions"}


def effective_groups(config_groups: tuple[str, ...] | None, settings: RunnerGroupSettings) -> list[str]:
    """Config overrides settings; settings names are normalised; unknown names are dropped."""
    if config_groups:
        return list(dict.fromkeys(config_groups))
    named = [GROUP_ALIASES.get(g, g) for g in settings.groups]
    groups = [g for g in dict.fromkeys(named) if g in KNOWN_GROUPS]
    return groups or list(DEFAULT_POLLED_GROUPS)


def group_concurrency(config: Config, settings: RunnerGroupSettings, group: str) -> int:
    """Config wins; else settings ``job_group_parallelism``; else the default (1)."""
    if group in config.concurrency:
        return config.concurrency_for(group)
    raw = (settings.job_group_parallelism or {}).get(group)
    if raw is not None:
        try:
            return max(1, int(raw))
        except ValueError:
            pass
    return config.default_concurrency


@dataclass
class ShutdownRequest:
    graceful: bool
    exit_code: int
    reason: str
    requested_by: str | None = None


class _JobControl:
    """The RunnerControl a handler gets: bound to its execution so a shutdown spares it."""

    def __init__(self, daemon: Daemon, execution_id: str) -> None:
        self._daemon = daemon
        self._execution_id = execution_id

    def request_shutdown(self, *, graceful: bool, exit_code: int = 0, reason: str = "") -> None:
        self._daemon.request_shutdown(
            graceful=graceful, exit_code=exit_code, reason=reason, requested_by=self._execution_id
        )

    def loop_ages_ns(self) -> dict[str, int]:
        return self._daemon.loop_ages_ns()


class Daemon:
    def __init__(
        self,
        config: Config,
        *,
        registry: HandlerRegistry | None = None,
        api: RunnerClient | None = None,
        log_tee: Callable[[LogRecord], None] | None = None,
        install_signal_handlers: bool = True,
        job_control: Callable[[Daemon, str], RunnerControl] | None = None,
        metrics: RunnerMetrics | None = None,
    ) -> None:
        self.config = config
        #: What a job's ``ctx.control`` is; ``runner mng`` adds its supervisor port to it.
        self._job_control: Callable[[Daemon, str], RunnerControl] = job_control or _JobControl
        self.registry = registry or HandlerRegistry.from_entry_points()
        if config.handlers:
            self.registry.load_overrides(config.handlers)
        self.api = api or RunnerClient(
            config.api_url,
            config.api_token,
            config.runner_id,
            timeout=config.request_timeout,
            version=config.version,
        )
        self.metrics = metrics or RunnerMetrics()
        self.api.on_failure = lambda method, path, exc: self.metrics.api_errors.inc(1, method)
        self.api.on_request = lambda method: self.metrics.api_requests.inc(1, method)
        self.runner_secrets = Redactor(config.api_token)
        logging_setup.register_secret(config.api_token)
        self.workspaces = Workspaces(config.workspaces_dir, min_free_bytes=config.min_free_mb * 1024 * 1024)
        self.journal = Journal(config.journal_dir)
        self.state_lock = StateDirLock(config.state_dir)
        self.log_tee = log_tee
        self.install_signal_handlers = install_signal_handlers
        self.settings: RunnerGroupSettings | None = None
        self.pipeline: LogPipeline | None = None
        self.pollers: dict[str, GroupPoller] = {}
        self.runs: dict[str, JobRun] = {}
        self.last_heartbeat_tick = time.monotonic()
        #: This process among any others started with the same runner id (``runner.instance``).
        self.instance_id = new_instance_id()
        self.last_settings_tick = time.monotonic()
        self.last_api_ok: float | None = None
        self.shutdown: ShutdownRequest | None = None
        self._shutdown_event = anyio.Event()
        self._ready = anyio.Event()
        self._global_limiter = anyio.CapacityLimiter(config.max_concurrency)
        self._jobs_tg: TaskGroup | None = None
        self._pollers_tg: TaskGroup | None = None
        self.health_port: int | None = None
        #: Called with the job id when a job run has ended (its final report made); ``runner
        #: exec`` reads the job at once instead of at its next poll.
        self.on_job_done: Callable[[str], None] | None = None
        for name, error in self.registry.load_errors.items():
            log.error("handler failed to load; its job type will not be claimed", job_type=name, error=error)
        # Built-in handlers load when a job of their type is first seen (runner.sdk.handler).
        self.registry.on_load_error = lambda name, error: log.error(
            "handler failed to load; its job type will not be claimed", job_type=name, error=error
        )
        self.family_settings = config.family_settings()
        self._check_handler_settings()
        self.registry.validate = self._check_settings_of
        self.handler_api = RunnerHandlerAPI(self.api, journal=self.journal)
        self.tools = tool_settings(config)
        self.orphans = OrphanRecovery(
            api=self.api,
            journal=self.journal,
            workspaces=self.workspaces,
            logs=self._pipeline,
            running=lambda: self.runs.keys(),
        )

    def _check_handler_settings(self) -> None:
        """Parse the settings of every installed handler's family now: a bad value stops start-up
        with one line naming it (``ConfigError``), not the first job of that family.

        Built-in handlers load on first use (``runner.sdk.handler``): ``load_config`` has
        checked ``BUILTIN_FAMILIES`` already, and any other family of theirs is checked when
        the handler loads (``_check_settings_of``; a bad value leaves its type unclaimed)."""
        for handler in self.registry.loaded().values():
            try:
                self._check_settings_of(handler)
            except SettingsError as exc:
                raise ConfigError(str(exc)) from None

    def _check_settings_of(self, handler: type[Handler]) -> None:
        if handler.settings_model is not None:
            self.family_settings.get(handler.settings_model)

    # ------------------------------------------------------------------ public control
    def request_shutdown(
        self, *, graceful: bool = True, exit_code: int = 0, reason: str = "", requested_by: str | None = None
    ) -> None:
        if self.shutdown is None:
            self.shutdown = ShutdownRequest(graceful, exit_code, reason or "shutdown requested", requested_by)
            log.info("shutting down", graceful=graceful, reason=self.shutdown.reason, exit_code=exit_code)
            for poller in self.pollers.values():
                poller.stop()
            self._shutdown_event.set()
        if not graceful:
            for execution_id, run in self.runs.items():
                if execution_id != requested_by:
                    run.abort(AbortReason.SHUTDOWN)

    async def wait_ready(self) -> None:
        await self._ready.wait()

    def loop_ages_ns(self) -> dict[str, int]:
        return {group: poller.age_ns for group, poller in sorted(self.pollers.items())}

    @property
    def current_settings(self) -> RunnerGroupSettings:
        return self.settings or RunnerGroupSettings()

    # ------------------------------------------------------------------ health
    def _heartbeat_period(self) -> float:
        period = self.current_settings.heart_beat_timeout.total_seconds()
        return min(max(period, 0.2), 60.0)

    def liveness(self) -> Probe:
        now = time.monotonic()
        loops: dict[str, float] = {
            "heartbeat": now - self.last_heartbeat_tick,
            "settings": now - self.last_settings_tick,
        }
        limits: dict[str, float] = {
            "heartbeat": 3 * self._heartbeat_period() + self.config.request_timeout + 5,
            "settings": 3 * self.config.settings_refresh_interval + 3 * self.config.request_timeout + 30,
        }
        poll_limit = self.config.long_poll_wait + 2 * self.config.request_timeout + 60
        for group, poller in self.pollers.items():
            loops[f"poller:{group}"] = poller.age_ns / 1e9
            limits[f"poller:{group}"] = poll_limit
        stuck = {name: round(age, 1) for name, age in loops.items() if age > limits[name]}
        # A poller waiting for capacity (all its slots busy) does not poll, and is not stuck.
        for name in list(stuck):
            if name.startswith("poller:"):
                poller = self.pollers[name.split(":", 1)[1]]
                if poller.limiter.borrowed_tokens >= poller.limiter.total_tokens:
                    del stuck[name]
        return Probe(
            not stuck, {"stuck_loops": stuck, "loops_age_seconds": {k: round(v, 2) for k, v in loops.items()}}
        )

    def readiness(self) -> Probe:
        fresh = (
            self.last_api_ok is not None
            and time.monotonic() - self.last_api_ok < 3 * self._heartbeat_period() + 30
        )
        ok = self.settings is not None and fresh and self.shutdown is None
        return Probe(
            ok,
            {
                "settings_fetched": self.settings is not None,
                "api_reachable": fresh,
                "draining": self.shutdown is not None,
                "running_jobs": len(self.runs),
            },
        )

    # ------------------------------------------------------------------ the run
    async def run(self) -> int:
        """Run until a shutdown completes; returns the process exit code."""
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_lock.acquire()
        try:
            async with anyio.create_task_group() as root:
                if self.install_signal_handlers:
                    root.start_soon(self._signals)
                if self.config.health_addr:
                    endpoints = HealthEndpoints(self.liveness, self.readiness, self.metrics.render)
                    self.health_port = await root.start(serve_health, self.config.health_addr, endpoints)
                await self._fetch_settings_until_ready()
                if self.settings is None:  # shutdown before the control plane was reachable
                    root.cancel_scope.cancel()
                    return self.shutdown.exit_code if self.shutdown else 0
                try:  # before orphans are recovered or jobs claimed: one process per runner id
                    await claim_runner_id(
                        lambda: self.api.heartbeat(self._heartbeat_request()),
                        window=refusal_window(self._heartbeat_period()),
                    )
                except DuplicateRunner as exc:
                    log.error(
                        "refusing to start: another process is running as this runner id",
                        runner_id=self.config.runner_id,
                        detail=str(exc),
                    )
                    root.cancel_scope.cancel()
                    return DUPLICATE_RUNNER_EXIT
                self.pipeline = LogPipeline(
                    self.api,
                    self.config.spool_dir,
                    resource_attrs=self._resource_attrs(),
                    enabled=self.current_settings.enable_logging,
                    tee=self.log_tee,
                )
                self.pipeline.set_accepted_encodings(self.current_settings.log_accept_encodings)
                await root.start(self.pipeline.run)
                root.start_soon(self._heartbeats)
                if await self.orphans.recover():
                    root.start_soon(self.orphans.retry_until_done)
                root.start_soon(self._settings_loop)
                async with anyio.create_task_group() as jobs:
                    self._jobs_tg = jobs
                    async with anyio.create_task_group() as pollers:
                        self._pollers_tg = pollers
                        self._reconcile_pollers()
                        self._ready.set()
                        await self._shutdown_event.wait()
                        for poller in self.pollers.values():
                            poller.stop()
                    await self._drain()
                root.cancel_scope.cancel()
        finally:
            self.state_lock.release()
            await self.api.aclose()
        return self.shutdown.exit_code if self.shutdown else 0

    async def _signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                if self.shutdown is None:
                    log.info("signal received, draining", signal=signal.Signals(signum).name)
                    self.request_shutdown(graceful=True, reason=f"{signal.Signals(signum).name} received")
                else:
                    log.warning("second signal, exiting now", signal=signal.Signals(signum).name)
                    os._exit(EXIT_FORCED)

    async def _drain(self) -> None:
        """Let running jobs finish within the grace, then abort the rest and wait for their reports."""
        request = self.shutdown
        grace = self.config.drain_grace if request is None or request.graceful else 0.0
        if self.runs:
            log.info("draining running jobs", jobs=len(self.runs), grace_seconds=grace)
        with anyio.move_on_after(grace):
            while self.runs:
                await next(iter(self.runs.values())).done.wait()
        requested_by = request.requested_by if request else None
        for execution_id, run in list(self.runs.items()):
            if execution_id != requested_by:
                log.warning("drain grace over, cancelling job", job_id=run.job.id, execution_id=execution_id)
                run.abort(AbortReason.SHUTDOWN)
        while self.runs:
            await next(iter(self.runs.values())).done.wait()

    # ------------------------------------------------------------------ settings
    async def _fetch_settings_until_ready(self) -> None:
        failures = 0
        while self.settings is None and self.shutdown is None:
            try:
                settings = await self.api.get_settings()
            except Unauthorized as exc:
                log.error(
                    "the control plane rejected the runner token (401); check RUNNER_API_TOKEN",
                    error=str(exc),
                )
                delay = 30.0
            except (APIError, TransportError) as exc:
                failures += 1
                delay = backoff_delay(failures, base=0.5, cap=30.0, jitter="none")
                log.warning(
                    "control plane not reachable yet, retrying", error=str(exc), retry_in=round(delay, 1)
                )
            else:
                self.metrics.settings_refreshes.inc(1, "ok")
                self._apply_settings(settings)
                return
            self.metrics.settings_refreshes.inc(1, "error")
            with anyio.move_on_after(delay):
                await self._shutdown_event.wait()

    def _resource_attrs(self) -> dict[str, str]:
        attrs = {k: v for k, v in self.current_settings.metadata.items() if v is not None}
        attrs.update(
            {
                "service.name": "runner",
                "runner.id": self.config.runner_id,
                "runner.version": self.config.version,
            }
        )
        return attrs

    def _apply_settings(self, settings: RunnerGroupSettings) -> None:
        previous = self.settings
        self.settings = settings
        self.last_api_ok = time.monotonic()
        level = self.config.log_level or settings.logging_level or "INFO"
        logging_setup.set_level(level)
        if self.pipeline is not None:
            self.pipeline.set_enabled(settings.enable_logging)
            self.pipeline.set_accepted_encodings(settings.log_accept_encodings)
            self.pipeline.update_resource(self._resource_attrs())
        if previous is None or previous.model_dump() != settings.model_dump():
            log.info(
                "settings applied",
                groups=effective_groups(self.config.groups, settings),
                sandbox_mode=settings.sandbox_mode,
                heart_beat_seconds=settings.heart_beat_timeout.total_seconds(),
                logging_level=level,
                long_poll=settings.long_poll_jobs,
            )
        if self._pollers_tg is not None:
            self._reconcile_pollers()

    async def _settings_loop(self) -> None:
        while True:
            await anyio.sleep(self.config.settings_refresh_interval)
            self.last_settings_tick = time.monotonic()
            try:
                settings = await self.api.get_settings()
            except (APIError, TransportError) as exc:
                self.metrics.settings_refreshes.inc(1, "error")
                log.warning("settings refresh failed", error=str(exc))
                continue
            self.metrics.settings_refreshes.inc(1, "ok")
            self._apply_settings(settings)

    # ------------------------------------------------------------------ heartbeats
    async def _heartbeats(self) -> None:
        next_beat = anyio.current_time()
        while True:
            await anyio.sleep_until(next_beat)
            self.last_heartbeat_tick = time.monotonic()
            period = self._heartbeat_period()
            next_beat = max(next_beat + period, anyio.current_time())
            request = self._heartbeat_request()
            with anyio.move_on_after(max(0.5, min(period, self.config.request_timeout))) as scope:
                try:
                    await self.api.heartbeat(
                        request, timeout=max(0.5, min(period, self.config.request_timeout))
                    )
                    self.metrics.heartbeats.inc()
                    self.last_api_ok = time.monotonic()
                    continue
                except (APIError, TransportError) as exc:
                    log.warning("heartbeat failed", error=str(exc))
            if scope.cancelled_caught:
                log.warning("heartbeat timed out")
            self.metrics.heartbeat_failures.inc()

    def _heartbeat_request(self) -> HeartBeatRequest:
        return HeartBeatRequest(
            alive_time=_uptime(PROCESS_STARTED),
            version=self.config.version,
            process=self.config.process,
            instance_id=self.instance_id,
        )

    # ------------------------------------------------------------------ pollers and jobs
    def _reconcile_pollers(self) -> None:
        if self._pollers_tg is None or self.shutdown is not None:
            return
        settings = self.current_settings
        wanted = effective_groups(self.config.groups, settings)
        for group in list(self.pollers):
            if group not in wanted:
                log.info("no longer polling group", group=group)
                self.pollers.pop(group).stop()
        for group in wanted:
            concurrency = group_concurrency(self.config, settings, group)
            poller = self.pollers.get(group)
            if poller is not None:
                poller.set_concurrency(concurrency)
                continue
            poller = GroupPoller(
                group,
                api=self.api,
                supports=self.registry.supports,
                global_limiter=self._global_limiter,
                concurrency=concurrency,
                long_poll=lambda: self.current_settings.long_poll_jobs,
                long_poll_wait=self.config.long_poll_wait,
                poll_interval=self.config.poll_interval,
                idle_poll_interval=self.config.idle_poll_interval,
                start_job=self._start_job,
                metrics=self.metrics,
            )
            self.pollers[group] = poller
            self._pollers_tg.start_soon(poller.run)
            log.info("polling group", group=group, concurrency=concurrency)

    def _start_job(self, job: RunnerJob, execution: RunnerJobExecution, slot: Slot) -> None:
        assert self._jobs_tg is not None
        self.last_api_ok = time.monotonic()
        deps = ExecutorDeps(
            config=self.config,
            api=self.api,
            registry=self.registry,
            logs=self._pipeline(),
            workspaces=self.workspaces,
            journal=self.journal,
            metrics=self.metrics,
            runner_secrets=self.runner_secrets,
            settings=lambda: self.current_settings,
            control_for=lambda execution_id: self._job_control(self, execution_id),
            handler_api=self.handler_api,
            tools=self.tools,
            family_settings=self.family_settings,
            sandbox=SandboxTiming(self.config.sandbox_job_duration, self.config.sandbox_faults),
        )
        run = JobRun(deps, job, execution, job.group or "")
        self.runs[execution.id] = run
        self._jobs_tg.start_soon(self._run_job, run, slot)

    async def _run_job(self, run: JobRun, slot: Slot) -> None:
        try:
            await run.run()
        except Exception as exc:  # noqa: BLE001 - the executor reports; this only guards the daemon
            log.exception("job run crashed", job_id=run.job.id, error=str(exc))
        finally:
            slot.release()
            self.runs.pop(run.execution_id, None)
            if self.on_job_done is not None:
                self.on_job_done(run.job.id)

    def _pipeline(self) -> LogPipeline:
        assert self.pipeline is not None
        return self.pipeline


def _uptime(started: float) -> timedelta:
    return timedelta(seconds=time.monotonic() - started)
