"""Command-line entry points the ``runner`` CLI mounts: ``runner controlplane`` and ``runner jobs``.

``controlplane_command`` runs the control plane alone until SIGINT/SIGTERM. ``jobs_group`` talks
to any control plane through the operator API: the address and admin token come from
``--api``/``--token``, else ``RUNNER_API_URL``/``RUNNER_ADMIN_TOKEN``, else the
``credentials.json`` in ``--state-dir``/``RUNNER_STATE_DIR``/the per-user state directory.
Output is a readable table by default and JSON with ``--json``.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import click

from controlplane.options import CREDENTIALS_FILE, ControlPlaneOptions, Credentials

if TYPE_CHECKING:
    from rich.table import Table

    from controlplane.operator import OperatorClient

#: The control plane's directory inside the per-user state dir (shared with ``runner local``).
SUBDIR = "controlplane"

#: Kept here (not imported from controlplane.operator) so the server command does not load httpx.
TERMINAL_JOB_STATUSES = frozenset({"finished", "failed", "timed-out", "not-attempted", "cancelled"})


def _default_state_dir() -> Path:
    env = os.environ.get("RUNNER_STATE_DIR")
    if env:
        return Path(env)
    from runner.api.statedir import default_state_dir

    return default_state_dir()


# =================================================================== runner controlplane


@click.command("controlplane")
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback by default)."
)
@click.option("--port", default=8083, show_default=True, type=int, help="Port; 0 picks a free one.")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Database and credentials.json directory [default: controlplane/ in RUNNER_STATE_DIR or the"
    " per-user state dir, as runner local uses].",
)
@click.option("--memory", is_flag=True, help="Keep everything in memory (nothing survives a restart).")
@click.option(
    "--monitor-interval", type=float, default=0.5, show_default=True, help="Seconds between monitor ticks."
)
@click.option("--heartbeat-offline-after", type=float, default=15.0, show_default=True, help="Seconds.")
@click.option("--restart-grace", type=float, default=60.0, show_default=True, help="Seconds.")
@click.option("--max-body-bytes", type=int, default=ControlPlaneOptions.max_body_bytes, show_default=True)
@click.option(
    "--max-header-bytes",
    type=int,
    default=ControlPlaneOptions.max_header_bytes,
    show_default=True,
    help="Largest request line plus headers; more answers 431.",
)
@click.option(
    "--long-poll-max", type=float, default=60.0, show_default=True, help="Seconds a poll may be held."
)
@click.option(
    "--heart-beat-timeout", type=float, default=5.0, show_default=True, help="Seconds, for new runners."
)
@click.option("--auto-create-workspaces/--no-auto-create-workspaces", default=True, show_default=True)
@click.option("--log-level", default="warning", show_default=True)
@click.option(
    "--http",
    "http_impl",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "h11", "httptools"]),
    help="HTTP parser (auto: httptools when installed, it costs less CPU per request).",
)
@click.option(
    "--loop",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "asyncio", "uvloop"]),
    help="Event loop (auto: uvloop when installed).",
)
def controlplane_command(
    host: str,
    port: int,
    state_dir: Path | None,
    memory: bool,
    monitor_interval: float,
    heartbeat_offline_after: float,
    restart_grace: float,
    max_body_bytes: int,
    max_header_bytes: int,
    long_poll_max: float,
    heart_beat_timeout: float,
    auto_create_workspaces: bool,
    log_level: str,
    http_impl: str,
    loop: str,
) -> None:
    """Run the embedded control plane alone until SIGINT or SIGTERM."""
    options = ControlPlaneOptions(
        monitor_interval=monitor_interval,
        heartbeat_offline_after=heartbeat_offline_after,
        restart_grace=restart_grace,
        max_body_bytes=max_body_bytes,
        max_header_bytes=max_header_bytes,
        long_poll_max=long_poll_max,
        heart_beat_timeout=heart_beat_timeout,
        auto_create_workspaces=auto_create_workspaces,
        log_level=log_level,
        http=http_impl,
    )
    directory = None if memory else (state_dir or _default_state_dir() / SUBDIR)
    # The tokens are never printed: with --memory they go to a private temporary directory.
    credentials_dir = Path(tempfile.mkdtemp(prefix="byoc-controlplane-")) if memory else None
    _configure_logging(log_level)
    from controlplane.server import serve

    async def main() -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with serve(
                directory, host=host, port=port, options=options, credentials_dir=credentials_dir
            ):
                async for _ in signals:
                    break

    try:
        anyio.run(main, backend_options={"use_uvloop": _use_uvloop(loop)})
    except OSError as exc:
        raise click.ClickException(f"cannot serve on {host}:{port}: {exc}") from exc


def _use_uvloop(choice: str) -> bool:
    if choice == "asyncio":
        return False
    try:
        import uvloop  # noqa: F401
    except ImportError:
        if choice == "uvloop":
            raise click.UsageError("--loop uvloop: uvloop is not installed") from None
        return False
    return True


def _configure_logging(level: str) -> None:
    """The standalone server's own logs: structlog to stderr, filtered at ``level``."""
    import logging

    import structlog

    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.WARNING)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(numeric))


# =================================================================== runner jobs


@dataclass
class Target:
    api: str
    token: str
    runner_id: str | None


def _credential_paths(state_dir: Path | None) -> list[Path]:
    """Where credentials.json may be: the state dir itself, or its ``controlplane`` subdirectory
    (where ``runner local``/``runner exec`` and, by default, ``runner controlplane`` keep it)."""
    base = state_dir or _default_state_dir()
    inner, outer = base / SUBDIR / CREDENTIALS_FILE, base / CREDENTIALS_FILE
    return [outer, inner] if state_dir is not None else [inner, outer]


def _target(api: str | None, token: str | None, state_dir: Path | None, runner_id: str | None) -> Target:
    api = api or os.environ.get("RUNNER_API_URL")
    token = token or os.environ.get("RUNNER_ADMIN_TOKEN")
    runner_id = runner_id or None
    if not (api and token):
        candidates = _credential_paths(state_dir)
        path = next((p for p in candidates if p.exists()), candidates[0])
        try:
            creds = Credentials.load(path)
        except FileNotFoundError:
            raise click.UsageError(
                f"no control plane address: pass --api and --token, set RUNNER_API_URL and "
                f"RUNNER_ADMIN_TOKEN, or start one with `runner controlplane` or `runner local`"
                f" (no {' or '.join(str(p) for p in candidates)})"
            ) from None
        except (ValueError, KeyError) as exc:
            raise click.UsageError(f"{path} is not a valid credentials file: {exc}") from None
        api = api or creds.api_url
        token = token or creds.admin_token
        runner_id = runner_id or creds.runner_id
    return Target(api=api, token=token, runner_id=runner_id)


def _client(ctx: click.Context) -> OperatorClient:
    from controlplane.operator import OperatorClient

    target: Target = ctx.obj
    client = OperatorClient(target.api, target.token, runner_id=target.runner_id)
    if client.runner_id is None:
        runners = client.json("GET", "/v1/runners")
        if not runners:
            raise click.ClickException("the control plane has no runner")
        client.runner_id = runners[0]["id"]
    ctx.call_on_close(client.close)
    return client


def _emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))


def _seconds(ns: Any) -> str:
    return f"{int(ns) / 1e9:g}s" if isinstance(ns, int) else ""


def _print(renderable: Any) -> None:
    from rich.console import Console

    Console().print(renderable)


def _jobs_table(jobs: list[dict[str, Any]], title: str | None = None) -> Table:
    from rich.table import Table

    table = Table(title=title)
    table.add_column("id", no_wrap=True)
    for column in ("type", "group", "status", "description", "created"):
        table.add_column(column, overflow="fold")
    for job in jobs:
        table.add_row(
            job.get("id", ""),
            job.get("type", ""),
            job.get("group", ""),
            job.get("status", ""),
            job.get("status_description", ""),
            job.get("created_at", ""),
        )
    return table


def _job_detail(job: dict[str, Any]) -> Table:
    from rich.table import Table

    table = Table(show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for key in (
        "id",
        "type",
        "group",
        "operation",
        "status",
        "status_description",
        "runner_id",
        "owner_id",
        "log_stream_id",
        "created_at",
        "started_at",
        "finished_at",
    ):
        if job.get(key):
            table.add_row(key, str(job[key]))
    for key in ("execution_timeout", "available_timeout", "overall_timeout"):
        if key in job:
            table.add_row(key, _seconds(job[key]))
    table.add_row("executions", str(job.get("execution_count", 0)))
    for execution in job.get("executions") or []:
        table.add_row("latest execution", f"{execution['id']} {execution['status']}")
    if job.get("outputs") is not None:
        table.add_row("outputs", json.dumps(job["outputs"], indent=2, sort_keys=True))
    return table


def _operator_errors(fn: Callable[..., None]) -> Callable[..., None]:
    """Turn operator API errors and wait timeouts into one-line CLI errors (exit 1)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        from controlplane.operator import OperatorError

        try:
            fn(*args, **kwargs)
        except (OperatorError, TimeoutError) as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper


@click.group("jobs")
@click.option("--api", envvar="RUNNER_API_URL", help="Control plane URL [env RUNNER_API_URL].")
@click.option("--token", envvar="RUNNER_ADMIN_TOKEN", help="Admin token [env RUNNER_ADMIN_TOKEN].")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where credentials.json is [default: RUNNER_STATE_DIR or the per-user state dir].",
)
@click.option(
    "--runner", "runner_id", envvar="RUNNER_ID", help="Runner id [default: the control plane's runner]."
)
@click.pass_context
def jobs_group(
    ctx: click.Context, api: str | None, token: str | None, state_dir: Path | None, runner_id: str | None
) -> None:
    """Submit, list, inspect and cancel jobs on a control plane."""
    ctx.obj = _target(api, token, state_dir, runner_id)


@jobs_group.command("submit")
@click.option("--type", "job_type", required=True, help="Job type, e.g. noop, terraform-deploy.")
@click.option("--operation", default=None, help="exec, build, create-apply-plan, apply-plan, ...")
@click.option("--group", default=None, help="Job group [default: from the type].")
@click.option(
    "--plan", "plan_file", type=click.File("r"), default=None, help="Plan JSON file, or - for stdin."
)
@click.option(
    "--workflow",
    "workflow_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="actions-workflow: a workflow file; its action config and run are created first.",
)
@click.option("--execution-timeout", type=float, default=None, help="Seconds.")
@click.option("--available-timeout", type=float, default=None, help="Seconds.")
@click.option("--max-executions", type=int, default=None)
@click.option("--metadata", "metadata", multiple=True, help="KEY=VALUE, repeatable.")
@click.option("--wait", is_flag=True, help="Wait for a terminal status; exit non-zero unless finished.")
@click.option("--timeout", type=float, default=3600.0, show_default=True, help="Seconds --wait waits.")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.pass_context
@_operator_errors
def submit_command(
    ctx: click.Context,
    job_type: str,
    operation: str | None,
    group: str | None,
    plan_file: Any,
    workflow_file: Path | None,
    execution_timeout: float | None,
    available_timeout: float | None,
    max_executions: int | None,
    metadata: tuple[str, ...],
    wait: bool,
    timeout: float,
    as_json: bool,
) -> None:
    """Submit a job to the runner."""
    plan = None
    if plan_file is not None:
        try:
            plan = json.load(plan_file)
        except ValueError as exc:
            raise click.BadParameter(f"not JSON: {exc}", param_hint="--plan") from None
        if not isinstance(plan, dict):
            raise click.BadParameter("the plan must be a JSON object", param_hint="--plan")
    meta: dict[str, str] = {}
    for item in metadata:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--metadata")
        meta[key] = value
    client = _client(ctx)
    extra: dict[str, Any] = {}
    if workflow_file is not None:
        plan, extra = _workflow_plan(client, job_type, workflow_file, plan_file is not None)
        if execution_timeout is not None:
            extra = {}
    job = client.submit(
        job_type,
        plan,
        **extra,
        operation=operation,
        group=group,
        execution_timeout_s=execution_timeout,
        available_timeout_s=available_timeout,
        max_executions=max_executions,
        metadata=meta or None,
    )
    if wait:
        if not as_json:
            click.echo(f"submitted {job['id']} ({job['type']}); waiting…", err=True)
        job = client.wait_job(job["id"], TERMINAL_JOB_STATUSES, timeout=timeout)
    if as_json:
        _emit_json(job)
    else:
        _print(_job_detail(job))
    if wait and job.get("status") != "finished":
        sys.exit(1)


def _workflow_plan(
    client: OperatorClient, job_type: str, path: Path, has_plan: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``--workflow``: create the file's action config and run, as the real control plane would
    have, and return the job's plan and its execution timeout (controlplane/workflow_file.py)."""
    from controlplane.workflow_file import JOB_TYPE, WorkflowFileError, load_workflow_file

    if job_type != JOB_TYPE:
        raise click.BadParameter(f"is for --type {JOB_TYPE}, not {job_type!r}", param_hint="--workflow")
    if has_plan:
        raise click.BadParameter("excludes --plan: the workflow file makes the plan", param_hint="--workflow")
    try:
        spec = load_workflow_file(path)
    except WorkflowFileError as exc:
        raise click.BadParameter(str(exc), param_hint="--workflow") from None
    config = client.json("POST", "/v1/action-workflows/configs", json=spec.config_body())
    run = client.json(
        "POST", f"/v1/installs/{spec.install_id}/action-workflows/runs", json=spec.run_body(config["id"])
    )
    return spec.plan(config, run), spec.job_fields()


@jobs_group.command("list")
@click.option("--status", default="any", show_default=True, help="A job status, or any.")
@click.option("--group", default=None)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@_operator_errors
def list_command(ctx: click.Context, status: str, group: str | None, as_json: bool) -> None:
    """List the runner's jobs, oldest first."""
    client = _client(ctx)
    jobs = client.list_jobs(status=status, group=group)
    if as_json:
        _emit_json(jobs)
    else:
        _print(_jobs_table(jobs, title=f"jobs of {client.runner_id}"))


@jobs_group.command("get")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@_operator_errors
def get_command(ctx: click.Context, job_id: str, as_json: bool) -> None:
    """Show one job."""
    client = _client(ctx)
    job = client.get_job(job_id)
    if as_json:
        _emit_json(job)
    else:
        _print(_job_detail(job))


@jobs_group.command("cancel")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@_operator_errors
def cancel_command(ctx: click.Context, job_id: str, as_json: bool) -> None:
    """Cancel a job (its running execution is cancelled too)."""
    client = _client(ctx)
    job = client.cancel(job_id)
    if as_json:
        _emit_json(job)
    else:
        click.echo(f"{job['id']} {job['status']}")


def _format_record(record: dict[str, Any]) -> str:
    return f"{record.get('timestamp', '')} {record.get('severity_text') or '-':5} {record.get('body', '')}"


@jobs_group.command("logs")
@click.argument("job_id")
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the job ends.")
@click.option("--json", "as_json", is_flag=True, help="One JSON record per line.")
@click.option(
    "--interval", type=float, default=0.5, show_default=True, help="Seconds between polls with --follow."
)
@click.pass_context
@_operator_errors
def logs_command(ctx: click.Context, job_id: str, follow: bool, as_json: bool, interval: float) -> None:
    """Print a job's log records (JOB_ID may also be a log stream id)."""
    client = _client(ctx)
    stream_id = job_id if job_id.startswith("log") else client.get_job(job_id)["log_stream_id"]
    offset = 0
    finished = not follow
    while True:
        records, offset = client.logs_page(stream_id, offset)
        for record in records:
            click.echo(json.dumps(record, sort_keys=True) if as_json else _format_record(record))
        if records:
            continue
        if finished:
            return
        # Read the status after an empty page, then drain once more: nothing is missed.
        if not job_id.startswith("log") and client.get_job(job_id)["status"] in TERMINAL_JOB_STATUSES:
            finished = True
            continue
        time.sleep(interval)


__all__ = ["controlplane_command", "jobs_group"]
