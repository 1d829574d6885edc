"""The ``runner`` command line: ``run | exec | local | controlplane | jobs | version``.

``run`` is the daemon and imports nothing of the control plane; ``exec`` and ``local`` start the
embedded control plane in the same process (loaded lazily, so the daemon stays small), and
``controlplane`` / ``jobs`` come from ``controlplane.cli``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from runner import __version__

if TYPE_CHECKING:
    from runner.config import ConfigError

# Start-up: this module imports click and nothing heavy. ``runner.config`` (the wire models,
# pydantic), anyio and everything a sub-command needs load inside that sub-command, so
# ``runner version`` and ``runner --help`` cost an interpreter start plus click
# (tests/unit/test_cli_startup.py holds it).

CONFIG_ERROR_EXIT = 2


class LazyGroup(click.Group):
    """Sub-commands whose modules load on first use (the control plane pulls in uvicorn)."""

    lazy: dict[str, tuple[str, str]] = {
        "controlplane": ("controlplane.cli", "controlplane_command"),
        "jobs": ("controlplane.cli", "jobs_group"),
        "mng": ("runner.mng.cli", "mng_command"),
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy:
            import importlib

            module_name, attr = self.lazy[cmd_name]
            command = getattr(importlib.import_module(module_name), attr)
            assert isinstance(command, click.Command)
            return command
        return super().get_command(ctx, cmd_name)


def event_loop_options() -> dict[str, Any]:
    """uvloop when installed, for the modes that serve the embedded control plane in-process.

    ``runner run`` stays on the stock loop: measured, uvloop gained the agent alone nothing
    beyond noise and cost 2 MB of idle memory.
    """
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {}
    return {"use_uvloop": True}


def _without_trio_and_httpx_cli() -> None:
    """``runner exec``/``local`` run on asyncio: keep out trio (httpcore imports it whenever it
    is installed, only to detect a trio loop: 32 ms of a runner exec) and httpx's own CLI
    ``httpx._main`` (click, rich, pygments: 33 ms, 16 ms of it not shared with structlog.dev);
    httpx and httpcore fall back cleanly without them, as ``runner run`` already has them."""
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    sys.modules.setdefault("trio", None)  # type: ignore[arg-type]


def _fail_config(exc: ConfigError) -> None:
    click.echo(f"runner: configuration error: {exc}", err=True)
    sys.exit(CONFIG_ERROR_EXIT)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="runner")
def cli() -> None:
    """byoc-runner: runs jobs of a Nuon-compatible control plane in your own cloud account."""


@cli.command()
def version() -> None:
    """Print the runner version."""
    click.echo(__version__)


# ----------------------------------------------------------------------------- run

_RUN_FLAGS: list[tuple[str, str, type[Any] | None, str]] = [
    ("--runner-id", "runner_id", str, "RUNNER_ID"),
    ("--api-url", "api_url", str, "RUNNER_API_URL"),
    ("--state-dir", "state_dir", str, "RUNNER_STATE_DIR"),
    ("--groups", "groups", str, "RUNNER_GROUPS: comma-separated groups (overrides settings)"),
    ("--concurrency", "concurrency", str, "RUNNER_CONCURRENCY: per group, e.g. build=2,deploy=1"),
    ("--max-concurrency", "max_concurrency", str, "RUNNER_MAX_CONCURRENCY: jobs at once over all groups"),
    ("--drain-grace", "drain_grace", str, "RUNNER_DRAIN_GRACE: seconds running jobs get on SIGTERM"),
    (
        "--health-addr",
        "health_addr",
        str,
        "RUNNER_HEALTH_ADDR: host:port of /healthz /readyz /metrics, or off",
    ),
    ("--log-level", "log_level", str, "RUNNER_LOG_LEVEL: overrides settings.logging_level"),
    ("--process", "process", str, "RUNNER_PROCESS: the heartbeat 'process' value"),
]


def _config_option(func: Any) -> Any:
    return click.option(
        "--config",
        "config_file",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="TOML, YAML or JSON file with the same keys (lower case, no RUNNER_ prefix)",
    )(func)


def _run_options(func: Any) -> Any:
    for flag, dest, typ, help_text in reversed(_RUN_FLAGS):
        func = click.option(flag, dest, type=typ, default=None, help=help_text)(func)
    func = click.option(
        "--log-format",
        "log_format",
        type=click.Choice(["json", "console"]),
        default=None,
        help="RUNNER_LOG_FORMAT",
    )(func)
    return _config_option(func)


@cli.command()
@_run_options
def run(config_file: Path | None, **flags: Any) -> None:
    """Run the runner daemon (the API token comes from RUNNER_API_TOKEN_FILE or RUNNER_API_TOKEN,
    never a flag)."""
    # rich is only ever imported here by the optional pretty-printers of structlog.dev and
    # httpx._main (its CLI): about 4 MB of idle RSS and 90 ms of start-up (issue 17). The
    # daemon writes JSON lines, or plain console lines with plain tracebacks without it.
    sys.modules.setdefault("rich", None)  # type: ignore[arg-type]
    # httpx._main (httpx's own CLI, pygments) and trio (httpcore imports it when it is installed,
    # to detect a trio loop; the daemon runs on asyncio and the image does not ship trio) cost
    # 0.9 MB and 2.6 MB of idle RSS; httpx and httpcore fall back cleanly without them.
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    sys.modules.setdefault("trio", None)  # type: ignore[arg-type]
    import anyio

    from runner import logging_setup, secrecy
    from runner.config import ConfigError, load_config
    from runner.daemon import Daemon
    from runner.journal import StateDirLocked

    try:
        secrecy.protect_process()  # non-dumpable, token file read: out of the children's reach
        config = load_config(flags=flags, config_file=config_file)
        secrecy.scrub_token()
        logging_setup.configure_logging(config.log_format, config.log_level or "INFO")
        daemon = Daemon(config)
    except ConfigError as exc:
        _fail_config(exc)
        return
    try:
        code = anyio.run(daemon.run)
    except StateDirLocked as exc:
        click.echo(f"runner: {exc}", err=True)
        sys.exit(CONFIG_ERROR_EXIT)
    sys.exit(code)


# ----------------------------------------------------------------------------- exec / local


@cli.command(name="exec")
@click.option("--type", "job_type", required=True, help="Job type, e.g. terraform-deploy")
@click.option(
    "--plan",
    "plan_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Plan JSON file ('-' for stdin)",
)
@click.option(
    "--operation", default=None, help="create-apply-plan | create-teardown-plan | apply-plan | exec | build"
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the in-process control plane keeps its data (shared by consecutive runs)",
)
@click.option(
    "--result-out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the execution's stored result (JSON) to this file",
)
@click.option(
    "--apply-plan",
    "apply_plan_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A --result-out file of a plan job: fills the plan's apply_plan_contents",
)
@click.option("--timeout", "timeout", type=float, default=None, help="Execution timeout in seconds")
@click.option("--owner-id", default=None, help="The job's owner id (builds tag their artifact with it)")
@click.option(
    "--workflow",
    "workflow_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="actions-workflow: a workflow file (README, 'Action workflows'); creates its config and run",
)
@click.option("--log-format", type=click.Choice(["json", "console"]), default="console")
@_config_option
def exec_(
    job_type: str,
    plan_file: Path | None,
    operation: str | None,
    state_dir: Path | None,
    result_out: Path | None,
    apply_plan_file: Path | None,
    timeout: float | None,
    owner_id: str | None,
    workflow_file: Path | None,
    log_format: str,
    config_file: Path | None,
) -> None:
    """Run one job with no remote control plane; outputs as JSON on stdout.

    The runner's settings come from the environment and --config as for ``runner run``; only
    the control-plane connection is this command's own."""
    _without_trio_and_httpx_cli()
    # rich: only structlog.dev's pretty tracebacks would use it here (45 ms of imports at every
    # run); exec prints plain console lines and plain tracebacks, as runner run does. ``runner
    # local --demo`` keeps it for its live table.
    sys.modules.setdefault("rich", None)  # type: ignore[arg-type]
    from runner.local import ExecRequest, run_exec

    request = ExecRequest(
        job_type=job_type,
        plan_file=plan_file,
        operation=operation,
        state_dir=state_dir,
        result_out=result_out,
        apply_plan_file=apply_plan_file,
        timeout=timeout,
        owner_id=owner_id,
        workflow_file=workflow_file,
        log_format=log_format,
        config_file=config_file,
    )
    sys.exit(_run_local_mode(run_exec, request))


@cli.command()
@click.option("--demo", is_flag=True, help="Submit a small set of jobs, show their progress, exit when done")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=0, help="Control plane port (0 = any free port)")
@click.option("--health-addr", default="127.0.0.1:0", show_default=True)
@click.option("--concurrency", default=None, help="Per group, e.g. build=2,deploy=1")
@click.option("--log-format", type=click.Choice(["json", "console"]), default="console")
@_config_option
def local(
    demo: bool,
    state_dir: Path | None,
    host: str,
    port: int,
    health_addr: str,
    concurrency: str | None,
    log_format: str,
    config_file: Path | None,
) -> None:
    """Embedded control plane plus one runner in this process (sandbox-friendly local mode)."""
    _without_trio_and_httpx_cli()
    from runner.local import LocalRequest, run_local

    request = LocalRequest(
        demo=demo,
        state_dir=state_dir,
        host=host,
        port=port,
        health_addr=health_addr,
        concurrency=concurrency,
        log_format=log_format,
        config_file=config_file,
    )
    sys.exit(_run_local_mode(run_local, request))


def _run_local_mode(func: Any, request: Any) -> int:
    """Run ``runner exec``/``runner local``; a bad input or a busy state dir is one clear line."""
    import anyio

    from runner.config import ConfigError
    from runner.journal import StateDirLocked

    try:
        code: int = anyio.run(func, request, backend_options=event_loop_options())
    except BaseException as exc:  # task groups wrap errors in ExceptionGroups
        cause: BaseException = exc
        while isinstance(cause, BaseExceptionGroup) and len(cause.exceptions) == 1:
            cause = cause.exceptions[0]
        if isinstance(cause, ConfigError):
            _fail_config(cause)
        if isinstance(cause, StateDirLocked):
            click.echo(f"runner: {cause}", err=True)
            sys.exit(CONFIG_ERROR_EXIT)
        raise
    return code


def main() -> None:
    cli(prog_name="runner")


if __name__ == "__main__":
    main()
