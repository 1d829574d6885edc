"""``runner mng``: the daemon serving the ``management`` group, and the supervisor beside it.

Both run in one task group: the supervisor starts (or adopts) the workload whether or not the
control plane is reachable yet, and the daemon polls management jobs whose handlers reach the
supervisor through ``MngJobControl``. When the daemon returns (SIGTERM, ``mng-shut-down``,
``mng-vm-shut-down``) the supervisor task is cancelled and the workload is left as it is: running
(adopted by the next mng) or held stopped. The power-off command runs last, after the daemon
reported every job, so the control plane learns that ``mng-vm-shut-down`` finished.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import structlog

from runner.api.client import APIError, TransportError
from runner.config import Config, ConfigError
from runner.daemon import Daemon
from runner.journal import StateDirLock
from runner.mng.container import ContainerWorkload
from runner.mng.control import MngJobControl
from runner.mng.policy import RestartPolicy
from runner.mng.process import ProcessWorkload
from runner.mng.readiness import readyz_url
from runner.mng.state import STATE_FILE
from runner.mng.supervisor import MngMetrics, Supervisor, SupervisorOptions
from runner.mng.venvs import VenvStore
from runner.mng.workload import Workload

log = structlog.get_logger("runner.mng")

DEFAULT_POWER_OFF = ("shutdown", "-h", "now")
DEFAULT_HEALTH_ADDR = "127.0.0.1:9090"
#: Never in a workload env file: the workload's token comes from its token file.
_REFUSED_ENV = ("RUNNER_API_TOKEN",)


@dataclass(frozen=True)
class MngOptions:
    mode: str
    #: The workload's environment file (``--workload-env``, KEY=VALUE lines), read at each start.
    workload_env_file: Path | None
    workload_token_file: Path | None
    initial_version: str
    supervisor: SupervisorOptions
    venvs_dir: Path | None = None
    package: str = "byoc-runner"
    pip_args: Sequence[str] = ()
    system_site_packages: bool = False
    workload_log: Path | None = None
    image: str = ""
    container_name: str = "byoc-runner"
    docker_network: str = "host"
    state_volume: str = "byoc-runner-state"
    power_off_command: Sequence[str] = field(default=DEFAULT_POWER_OFF)


def parse_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines (systemd ``EnvironmentFile`` / ``docker --env-file``): ``#`` comments,
    blank lines and ``export`` prefixes allowed, one level of quotes removed."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"--workload-env: cannot read {path}: {exc.strerror or exc}") from None
    env: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key.replace("_", "").isalnum():
            raise ConfigError(f"--workload-env: {path}:{number} is not KEY=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        if key in _REFUSED_ENV:
            raise ConfigError(
                f"--workload-env: {path}:{number}: {key} does not belong in the environment; "
                "give the workload's token file with --workload-token-file"
            )
        env[key] = value
    return env


def workload_health_url(env: Mapping[str, str]) -> str:
    addr = env.get("RUNNER_HEALTH_ADDR") or DEFAULT_HEALTH_ADDR
    if addr.strip().lower() in ("off", "none", "false", ""):
        raise ConfigError("the workload's RUNNER_HEALTH_ADDR is off: mng needs its /readyz")
    return readyz_url(addr)


def build_workload(options: MngOptions, state_dir: Path) -> Workload:
    env_file = options.workload_env_file

    def workload_env() -> dict[str, str]:
        return parse_env_file(env_file) if env_file is not None else {}

    health = workload_health_url(workload_env())  # checked now: a bad file stops start-up
    if options.mode == "process":
        venvs = VenvStore(
            root=options.venvs_dir or state_dir / "venvs",
            package=options.package,
            pip_args=tuple(options.pip_args),
            system_site_packages=options.system_site_packages,
        )
        return ProcessWorkload(
            venvs=venvs,
            env=workload_env,
            token_file=options.workload_token_file,
            health_url=health,
            log_file=options.workload_log,
        )
    if options.mode == "container":
        if not options.image:
            raise ConfigError("--image (RUNNER_MNG_IMAGE) is required in container mode")
        return ContainerWorkload(
            image=options.image,
            env=workload_env,
            token_file=options.workload_token_file,
            health_url=health,
            name=options.container_name,
            network=options.docker_network,
            state_volume=options.state_volume,
        )
    raise ConfigError(f"--mode: {options.mode!r} is not process or container")


async def run_mng(config: Config, options: MngOptions) -> int:
    """Run until the daemon exits; returns the process exit code."""
    metrics = MngMetrics()
    workload = build_workload(options, config.state_dir)
    supervisor_dir = config.state_dir / "supervisor"
    supervisor_dir.mkdir(parents=True, exist_ok=True)
    lock = StateDirLock(supervisor_dir)  # one supervisor per state dir, like the daemon's lock
    lock.acquire()
    try:
        supervisor = Supervisor(workload, supervisor_dir / STATE_FILE, options.supervisor, metrics)
        daemon = Daemon(
            config,
            job_control=lambda d, execution_id: MngJobControl(d, execution_id, supervisor),
            metrics=metrics,
        )

        async def desired_version() -> str | None:
            try:
                settings = await daemon.api.get_settings()
            except (APIError, TransportError) as exc:
                log.warning("settings unreachable; keeping the version", error=str(exc))
                return None
            return settings.container_image_tag

        supervisor.desired_version = desired_version
        log.info("runner mng starting", mode=workload.mode, runner_id=config.runner_id)
        async with anyio.create_task_group() as tg:
            tg.start_soon(supervisor.run)
            code = await daemon.run()
            tg.cancel_scope.cancel()
    finally:
        lock.release()
    if supervisor.power_off_requested:
        await power_off(options.power_off_command)
    return code


async def power_off(command: Sequence[str]) -> None:
    log.warning("powering off the host", command=shlex.join(command))
    try:
        result = await anyio.run_process(list(command), check=False)
    except OSError as exc:
        log.error("the power-off command could not run", command=shlex.join(command), error=str(exc))
        return
    if result.returncode != 0:
        log.error(
            "the power-off command failed",
            command=shlex.join(command),
            exit_code=result.returncode,
            stderr=result.stderr.decode(errors="replace")[-500:],
        )


def restart_policy(base: float, cap: float, limit: int, window: float) -> RestartPolicy:
    if limit < 1:
        raise ConfigError("--crash-loop-limit must be at least 1")
    return RestartPolicy(base=base, cap=cap, crash_loop_limit=limit, window=window)
