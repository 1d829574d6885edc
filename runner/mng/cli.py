"""The ``runner mng`` command (loaded lazily by ``runner.cli``).

mng's own connection (``RUNNER_ID``, ``RUNNER_API_URL``, ``RUNNER_API_TOKEN_FILE``) and agent
settings are read exactly as ``runner run`` reads them (its groups are always ``management``,
its heartbeat ``process`` is ``mng``, its health server defaults to 127.0.0.1:9091). The
workload's are its own: an environment file and a token file, each named by path.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

import anyio
import click

from runner import __version__
from runner.api.statedir import default_state_dir
from runner.cli import CONFIG_ERROR_EXIT, _fail_config, _run_options
from runner.config import ConfigError, load_config

_PATH = click.Path(dir_okay=False, path_type=Path)


def _options(func: Any) -> Any:
    opts = [
        click.option(
            "--mode",
            type=click.Choice(["process", "container"]),
            envvar="RUNNER_MNG_MODE",
            default="process",
            show_default=True,
            help="RUNNER_MNG_MODE: how the workload runs",
        ),
        click.option(
            "--workload-env",
            type=_PATH,
            envvar="RUNNER_MNG_WORKLOAD_ENV",
            default=None,
            help="RUNNER_MNG_WORKLOAD_ENV: KEY=VALUE file, the workload runner's environment",
        ),
        click.option(
            "--workload-token-file",
            type=_PATH,
            envvar="RUNNER_MNG_WORKLOAD_TOKEN_FILE",
            default=None,
            help="RUNNER_MNG_WORKLOAD_TOKEN_FILE: the workload runner's token (its RUNNER_API_TOKEN_FILE)",
        ),
        click.option(
            "--version",
            "initial_version",
            envvar="RUNNER_MNG_VERSION",
            default=None,
            help="RUNNER_MNG_VERSION: the version of a first start (default: this mng's)",
        ),
        click.option(
            "--venvs-dir",
            type=click.Path(file_okay=False, path_type=Path),
            envvar="RUNNER_MNG_VENVS_DIR",
            default=None,
            help="RUNNER_MNG_VENVS_DIR: process mode's versioned virtualenvs",
        ),
        click.option(
            "--package",
            envvar="RUNNER_MNG_PACKAGE",
            default="byoc-runner",
            show_default=True,
            help="RUNNER_MNG_PACKAGE: the distribution process mode installs",
        ),
        click.option(
            "--pip-args",
            envvar="RUNNER_MNG_PIP_ARGS",
            default="",
            help="RUNNER_MNG_PIP_ARGS: extra pip arguments (an index, or --no-index --find-links DIR)",
        ),
        click.option(
            "--system-site-packages/--no-system-site-packages",
            envvar="RUNNER_MNG_SYSTEM_SITE_PACKAGES",
            default=False,
            help="RUNNER_MNG_SYSTEM_SITE_PACKAGES: virtualenvs see the interpreter's packages",
        ),
        click.option(
            "--workload-log",
            type=_PATH,
            envvar="RUNNER_MNG_WORKLOAD_LOG",
            default=None,
            help="RUNNER_MNG_WORKLOAD_LOG: process mode's stdout/stderr file (default: mng's)",
        ),
        click.option(
            "--image",
            envvar="RUNNER_MNG_IMAGE",
            default="",
            help="RUNNER_MNG_IMAGE: container mode's image repository (the version is the tag)",
        ),
        click.option(
            "--container-name", envvar="RUNNER_MNG_CONTAINER_NAME", default="byoc-runner", show_default=True
        ),
        click.option(
            "--docker-network", envvar="RUNNER_MNG_DOCKER_NETWORK", default="host", show_default=True
        ),
        click.option(
            "--state-volume",
            envvar="RUNNER_MNG_STATE_VOLUME",
            default="byoc-runner-state",
            show_default=True,
            help="RUNNER_MNG_STATE_VOLUME: the container's state dir volume",
        ),
        click.option(
            "--health-deadline",
            type=float,
            envvar="RUNNER_MNG_HEALTH_DEADLINE",
            default=120.0,
            show_default=True,
            help="RUNNER_MNG_HEALTH_DEADLINE: seconds a started version has to be ready",
        ),
        click.option(
            "--stop-timeout",
            type=float,
            envvar="RUNNER_MNG_STOP_TIMEOUT",
            default=90.0,
            show_default=True,
            help="RUNNER_MNG_STOP_TIMEOUT: SIGTERM -> SIGKILL (above the drain grace)",
        ),
        click.option(
            "--restart-backoff",
            type=float,
            envvar="RUNNER_MNG_RESTART_BACKOFF",
            default=1.0,
            show_default=True,
            help="RUNNER_MNG_RESTART_BACKOFF: first pause after a crash (doubles)",
        ),
        click.option(
            "--restart-backoff-max",
            type=float,
            envvar="RUNNER_MNG_RESTART_BACKOFF_MAX",
            default=60.0,
            show_default=True,
        ),
        click.option(
            "--crash-loop-limit",
            type=int,
            envvar="RUNNER_MNG_CRASH_LOOP_LIMIT",
            default=5,
            show_default=True,
            help="RUNNER_MNG_CRASH_LOOP_LIMIT: crashes within the window that stop restarts",
        ),
        click.option(
            "--crash-loop-window",
            type=float,
            envvar="RUNNER_MNG_CRASH_LOOP_WINDOW",
            default=300.0,
            show_default=True,
        ),
        click.option(
            "--power-off-command",
            envvar="RUNNER_MNG_POWER_OFF_COMMAND",
            default="shutdown -h now",
            show_default=True,
            help="RUNNER_MNG_POWER_OFF_COMMAND: what mng-vm-shut-down runs last",
        ),
    ]
    for option in reversed(opts):
        func = option(func)
    return func


@click.command(name="mng")
@_run_options
@_options
def mng_command(config_file: Path | None, **flags: Any) -> None:
    """Supervise a runner workload and serve the management group (mng-* jobs)."""
    from runner import logging_setup, secrecy
    from runner.journal import StateDirLocked
    from runner.mng.app import MngOptions, restart_policy, run_mng
    from runner.mng.supervisor import SupervisorOptions

    mng = {k: flags.pop(k) for k in list(flags) if k not in _RUN_KEYS}
    try:
        secrecy.protect_process()
        config = load_config(
            flags={**flags, "groups": "management"},
            config_file=config_file,
            defaults={
                "health_addr": "127.0.0.1:9091",
                "process": "mng",
                "state_dir": str(default_state_dir() / "mng"),
            },
        )
        secrecy.scrub_token()
        logging_setup.configure_logging(config.log_format, config.log_level or "INFO")
        options = MngOptions(
            mode=mng["mode"],
            workload_env_file=mng["workload_env"],
            workload_token_file=mng["workload_token_file"],
            initial_version=mng["initial_version"] or __version__,
            supervisor=SupervisorOptions(
                initial_version=mng["initial_version"] or __version__,
                policy=restart_policy(
                    mng["restart_backoff"],
                    mng["restart_backoff_max"],
                    mng["crash_loop_limit"],
                    mng["crash_loop_window"],
                ),
                health_deadline=mng["health_deadline"],
                stop_timeout=mng["stop_timeout"],
            ),
            venvs_dir=mng["venvs_dir"],
            package=mng["package"],
            pip_args=tuple(shlex.split(mng["pip_args"] or "")),
            system_site_packages=mng["system_site_packages"],
            workload_log=mng["workload_log"],
            image=mng["image"],
            container_name=mng["container_name"],
            docker_network=mng["docker_network"],
            state_volume=mng["state_volume"],
            power_off_command=tuple(shlex.split(mng["power_off_command"])),
        )
    except ConfigError as exc:
        _fail_config(exc)
        return
    try:
        code = anyio.run(run_mng, config, options)
    except BaseException as exc:  # task groups wrap errors in ExceptionGroups
        cause: BaseException = exc
        while isinstance(cause, BaseExceptionGroup) and len(cause.exceptions) == 1:
            cause = cause.exceptions[0]
        if isinstance(cause, ConfigError):
            _fail_config(cause)
        if isinstance(cause, StateDirLocked):
            click.echo(f"runner mng: {cause}", err=True)
            sys.exit(CONFIG_ERROR_EXIT)
        raise
    sys.exit(code)


_RUN_KEYS = {
    "runner_id",
    "api_url",
    "state_dir",
    "groups",
    "concurrency",
    "max_concurrency",
    "drain_grace",
    "health_addr",
    "log_level",
    "process",
    "log_format",
}
