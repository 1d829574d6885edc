"""``runner exec`` and ``runner local``: the embedded control plane and a runner in one process.

Both talk real HTTP over loopback to the embedded control plane, exactly as a remote runner
would, so what works here works against a real control plane. The control plane keeps its data
in ``<state-dir>/controlplane`` (terraform state survives between ``runner exec`` runs).
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import os
import shutil
import signal
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import structlog

from runner import logging_setup
from runner.api.jobtypes import group_for_type
from runner.api.models import TERMINAL_JOB_STATUSES, JobStatus
from runner.api.statedir import default_state_dir
from runner.config import Config, ConfigError, _parse_concurrency, load_config
from runner.daemon import Daemon
from runner.instance import new_instance_id
from runner.sdk.handler import ENTRY_POINT_GROUP, HandlerRegistry

if TYPE_CHECKING:
    from controlplane.workflow_file import WorkflowFile

log = structlog.get_logger("runner.local")

EXIT_BY_STATUS = {"finished": 0, "failed": 1, "timed-out": 124, "cancelled": 130, "not-attempted": 1}


class OperatorAPI:
    """The few operator calls of the embedded control plane that local modes need."""

    def __init__(self, url: str, admin_token: str, runner_id: str) -> None:
        self.runner_id = runner_id
        # The in-process control plane speaks plain HTTP: no TLS context with the certifi bundle
        # (19 ms of a runner exec) unless a proxy from the environment may need one.
        plain = url.startswith("http://") and not urllib.request.getproxies()
        self._http = httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {admin_token}"}, timeout=30.0, verify=not plain
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                detail = response.json().get("description") or response.json().get("error")
            except ValueError:
                detail = response.text[:300]
            raise ConfigError(f"control plane refused {method} {path}: HTTP {response.status_code}: {detail}")
        return response.json() if response.content else None

    async def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        job = await self._call("POST", f"/v1/runners/{self.runner_id}/jobs", json=body)
        assert isinstance(job, dict)
        return job

    async def job(self, job_id: str) -> dict[str, Any]:
        job = await self._call("GET", f"/v1/runner-jobs/{job_id}")
        assert isinstance(job, dict)
        return job

    async def cancel(self, job_id: str) -> None:
        await self._call("POST", f"/v1/runner-jobs/{job_id}/cancel", json={})

    async def create_action_config(self, body: dict[str, Any]) -> dict[str, Any]:
        config = await self._call("POST", "/v1/action-workflows/configs", json=body)
        assert isinstance(config, dict)
        return config

    async def create_action_run(self, install_id: str, body: dict[str, Any]) -> dict[str, Any]:
        run = await self._call("POST", f"/v1/installs/{install_id}/action-workflows/runs", json=body)
        assert isinstance(run, dict)
        return run

    async def executions(self, job_id: str) -> list[dict[str, Any]]:
        data = await self._call("GET", f"/v1/runner-jobs/{job_id}/executions")
        return list(data or [])

    async def result(self, job_id: str, execution_id: str) -> dict[str, Any] | None:
        try:
            data = await self._call("GET", f"/v1/runner-jobs/{job_id}/executions/{execution_id}/result")
        except ConfigError:
            return None
        return data if isinstance(data, dict) else None

    async def wait_terminal(
        self, job_id: str, *, poll: float = 0.1, wake: Callable[[], anyio.Event] | None = None
    ) -> dict[str, Any]:
        """Read the job until its status is terminal, every ``poll`` seconds, and at once when
        the event ``wake()`` returns is set (the local runner finished a job: its final PATCH has
        been answered, so the job is most likely terminal already)."""
        while True:
            event = wake() if wake is not None else None  # taken before the read: no set is missed
            job = await self.job(job_id)
            if job.get("status") in {s.value for s in TERMINAL_JOB_STATUSES}:
                return job
            with anyio.move_on_after(poll):
                if event is not None:
                    await event.wait()
                else:
                    await anyio.sleep_forever()


class JobDone:
    """An event set each time the local runner finishes a job, fresh after each set."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def current(self) -> anyio.Event:
        return self._event

    def set(self, job_id: str) -> None:
        event, self._event = self._event, anyio.Event()
        event.set()


# ----------------------------------------------------------------------------- terminal output


def console_tee(prefix: str = "") -> Callable[[Any], None]:
    """Prints job log records on stderr, one line each."""

    def tee(record: Any) -> None:
        level = str(getattr(record, "severity_text", "") or "INFO").upper()
        body = str(getattr(record, "body", ""))
        attrs = getattr(record, "attributes", {}) or {}
        step = attrs.get("runner_job_execution_step.name", "") if isinstance(attrs, dict) else ""
        job = attrs.get("runner_job.id", "") if isinstance(attrs, dict) else ""
        head = f"{prefix}{job[-8:]}" if job else prefix
        sys.stderr.write(f"{head} {level:<5} {step:<9} {body}\n")

    return tee


# ----------------------------------------------------------------------------- exec


@dataclass
class ExecRequest:
    job_type: str
    plan_file: Path | None
    operation: str | None
    state_dir: Path | None
    result_out: Path | None
    apply_plan_file: Path | None
    timeout: float | None
    owner_id: str | None
    log_format: str = "console"
    config_file: Path | None = None
    #: ``--workflow``: an action workflow file (actions-workflow only; no --plan).
    workflow_file: Path | None = None


def read_plan(plan_file: Path | None) -> dict[str, Any]:
    if plan_file is None:
        return {}
    try:
        text = sys.stdin.read() if str(plan_file) == "-" else plan_file.read_text()
    except OSError as exc:
        raise ConfigError(f"--plan {plan_file}: {exc.strerror}") from None
    try:
        data = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--plan {plan_file}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--plan {plan_file}: must be a JSON object")
    return data


def apply_plan_from_result(plan: dict[str, Any], result_file: Path) -> dict[str, Any]:
    """Fill ``apply_plan_contents``/``apply_plan_display`` from a stored result, as the control
    plane does for an apply job (docs/runner-api.md §7.5)."""
    try:
        result = json.loads(result_file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"--apply-plan {result_file}: cannot read a result: {exc}") from None
    if not isinstance(result, dict):
        raise ConfigError(f"--apply-plan {result_file}: not a result object")
    contents = result.get("contents_gzip") or result.get("contents")
    if not contents:
        raise ConfigError(
            f"--apply-plan {result_file}: the result holds no plan (was it a plan job that finished?)"
        )
    plan = dict(plan)
    plan["apply_plan_contents"] = contents
    display = result.get("contents_display_gzip")
    if display:
        with contextlib.suppress(ValueError, OSError):
            plan["apply_plan_display"] = gzip.decompress(base64.b64decode(display)).decode()
    return plan


#: The control-plane connection of the local modes is theirs (the in-process control plane),
#: whatever the environment says; everything else is read as ``runner run`` reads it.
_CONNECTION_ENV = ("RUNNER_ID", "RUNNER_API_URL", "RUNNER_API_TOKEN", "RUNNER_STATE_DIR")
#: The local modes' own defaults: below the environment and the config file, like any default.
LOCAL_DEFAULTS: dict[str, Any] = {
    "health_addr": "off",
    "drain_grace": 30.0,
    "settings_refresh_interval": 5.0,
    "poll_interval": 0.2,
}


def local_config(config_file: Path | None, *, defaults: dict[str, Any] | None = None) -> Config:
    """The runner's configuration from the environment and ``--config``, as ``runner run`` reads
    it (same precedence, same errors), without the control-plane connection."""
    env = {k: v for k, v in os.environ.items() if k not in _CONNECTION_ENV}
    return load_config(
        env=env,
        config_file=config_file,
        require_remote=False,
        defaults={**LOCAL_DEFAULTS, **(defaults or {})},
    )


def _runner_config(base: Config, state_dir: Path, cp: Any, **overrides: Any) -> Config:
    """``base`` connected to the in-process control plane ``cp``."""
    creds = cp.credentials
    return base.with_overrides(
        runner_id=creds.runner_id,
        api_url=cp.url,
        api_token=creds.runner_token,
        state_dir=state_dir,
        **overrides,
    )


def local_instance_id(runner_dir: Path) -> str:
    """One runner instance id per local state dir, kept across runs.

    Consecutive ``runner exec`` runs are one runner (same id, same state dir) in successive
    processes; the state-dir lock already keeps two of them from running at once. Without this,
    each run would wait for the previous process's heartbeats to age out (``runner.instance``).
    """
    path = runner_dir / "instance-id"
    try:
        found = path.read_text().strip()
    except OSError:
        found = ""
    if found:
        return found
    runner_dir.mkdir(parents=True, exist_ok=True)
    fresh = new_instance_id()
    path.write_text(fresh + "\n")
    return fresh


def installed_registry(config: Config) -> HandlerRegistry:
    registry = HandlerRegistry.from_entry_points()
    if config.handlers:
        registry.load_overrides(config.handlers)
    return registry


def require_handler(registry: HandlerRegistry, job_type: str) -> None:
    """Fail at once (not after a pick-up timeout) for a job type no installed handler serves."""
    if registry.supports(job_type):
        return
    installed = ", ".join(registry.job_types()) or "none"
    broken = registry.load_errors.get(job_type)
    raise ConfigError(
        f"--type {job_type!r}: no installed handler serves this job type"
        + (f" (its handler failed to load: {broken})" if broken else "")
        + f"; installed: {installed}. Add one with RUNNER_HANDLERS={job_type}=module:Class, or register it "
        f"under the {ENTRY_POINT_GROUP!r} entry points of a package (README.md, 'Writing a handler')"
    )


async def run_exec(request: ExecRequest) -> int:
    from controlplane.server import serve

    logging_setup.configure_logging(request.log_format, "WARN")
    workflow = read_workflow(request)
    plan = read_plan(request.plan_file)
    if request.apply_plan_file is not None:
        plan = apply_plan_from_result(plan, request.apply_plan_file)
    group = group_for_type(request.job_type)
    if group is None:
        raise ConfigError(f"--type {request.job_type!r} is not a known job type")
    base_config = local_config(request.config_file, defaults={"log_level": "WARN"})
    registry = installed_registry(base_config)
    require_handler(registry, request.job_type)
    base = request.state_dir or default_state_dir()
    base.mkdir(parents=True, exist_ok=True)
    runner_dir = base / "exec-runner"
    exit_code = 1
    async with serve(base / "controlplane", host="127.0.0.1", port=0, quiet=True) as cp:
        operator = OperatorAPI(cp.url, cp.credentials.admin_token, cp.credentials.runner_id)
        body: dict[str, Any] = {"type": request.job_type, "plan": plan}
        if request.operation:
            body["operation"] = request.operation
        if request.timeout:
            body["execution_timeout"] = int(request.timeout * 1e9)
        if request.owner_id:
            body["owner_id"] = request.owner_id
        if workflow is not None:  # the control plane's part: config, run, then the plan
            action_config = await operator.create_action_config(workflow.config_body())
            run_body = workflow.run_body(action_config["id"])
            run = await operator.create_action_run(workflow.install_id, run_body)
            body["plan"] = workflow.plan(action_config, run)
            if not request.timeout:
                body.update(workflow.job_fields())
        config = _runner_config(base_config, runner_dir, cp, groups=(group,))
        daemon = Daemon(config, registry=registry, log_tee=console_tee(), install_signal_handlers=False)
        daemon.instance_id = local_instance_id(runner_dir)
        job_done = JobDone()
        daemon.on_job_done = job_done.set
        job: dict[str, Any] = {}
        async with anyio.create_task_group() as tg:
            tg.start_soon(daemon.run)
            await daemon.wait_ready()
            submitted = await operator.submit(body)
            async with anyio.create_task_group() as watch:
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    watch.start_soon(_cancel_on_signal, signals, operator, submitted["id"])
                    job = await operator.wait_terminal(submitted["id"], wake=job_done.current)
                    watch.cancel_scope.cancel()
            daemon.request_shutdown(graceful=True, reason="runner exec: job done")
            tg.cancel_scope.deadline = anyio.current_time() + 60
        status = str(job.get("status", "unknown"))
        exit_code = EXIT_BY_STATUS.get(status, 1)
        executions = await operator.executions(job["id"])
        result = None
        if executions:
            latest = max(executions, key=lambda e: str(e.get("created_at", "")))
            result = await operator.result(job["id"], str(latest["id"]))
        if request.result_out is not None:
            request.result_out.write_text(json.dumps(result or {}, indent=2) + "\n")
        outputs = job.get("outputs") or {}
        sys.stdout.write(json.dumps(outputs, indent=2, sort_keys=True) + "\n")
        if status != "finished":
            message = ((result or {}).get("error_metadata") or {}).get("message") or job.get(
                "status_description"
            )
            sys.stderr.write(
                f"runner exec: job {job['id']} {status}" + (f": {message}" if message else "") + "\n"
            )
        await operator.aclose()
    return exit_code


def read_workflow(request: ExecRequest) -> WorkflowFile | None:
    """``--workflow FILE`` for an actions-workflow job, checked before anything starts."""
    if request.workflow_file is None:
        return None
    from controlplane.workflow_file import JOB_TYPE, WorkflowFileError, load_workflow_file

    if request.job_type != JOB_TYPE:
        raise ConfigError(f"--workflow is for --type {JOB_TYPE}, not {request.job_type!r}")
    if request.plan_file is not None:
        raise ConfigError("--workflow and --plan exclude each other: the workflow file makes the plan")
    try:
        return load_workflow_file(request.workflow_file)
    except WorkflowFileError as exc:
        raise ConfigError(f"--workflow {exc}") from None


async def _cancel_on_signal(signals: Any, operator: OperatorAPI, job_id: str) -> None:
    async for _ in signals:
        sys.stderr.write("runner: cancelling the job (press Ctrl-C again to exit at once)\n")
        with contextlib.suppress(ConfigError):
            await operator.cancel(job_id)
        async for _ in signals:
            raise SystemExit(130)


# ----------------------------------------------------------------------------- local


@dataclass
class LocalRequest:
    demo: bool
    state_dir: Path | None
    host: str
    port: int
    health_addr: str
    concurrency: str | None
    log_format: str = "console"
    config_file: Path | None = None


@dataclass
class DemoJob:
    title: str
    body: dict[str, Any]
    then: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    job: dict[str, Any] = field(default_factory=dict)
    submitted_at: float = 0.0
    finished_at: float = 0.0


DEMO_MODULE = Path(__file__).with_name("demo") / "terraform"


def demo_jobs(state_dir: Path) -> list[DemoJob]:
    """A short tour: noops in three groups, a health check, and a terraform plan -> apply pair."""
    jobs = [
        DemoJob("noop", {"type": "noop"}),
        DemoJob("noop-build", {"type": "noop-build"}),
        DemoJob("noop-sync", {"type": "noop-sync"}),
        DemoJob("health-check", {"type": "health-check"}),
    ]
    if shutil.which("terraform") and DEMO_MODULE.is_dir():
        workspace = "tfwdemo0000000000000000000"
        tf_plan = {
            "local_archive": {"local_archive": str(DEMO_MODULE)},
            "terraform_backend": {"WorkspaceID": workspace},
            "vars": {"greeting": "hello from runner local --demo"},
        }

        def apply_body(plan_job: dict[str, Any]) -> dict[str, Any]:
            return {
                "type": "sandbox-terraform",
                "operation": "apply-plan",
                "plan": {**tf_plan, "apply_plan_contents": plan_job["_result"].get("contents_gzip", "")},
            }

        jobs.append(
            DemoJob(
                "terraform plan",
                {"type": "sandbox-terraform", "operation": "create-apply-plan", "plan": tf_plan},
                then=apply_body,
            )
        )
    return jobs


async def run_local(request: LocalRequest) -> int:
    from controlplane.server import serve

    base = request.state_dir or default_state_dir()
    base.mkdir(parents=True, exist_ok=True)
    logging_setup.configure_logging(request.log_format, "WARN" if request.demo else "INFO")
    defaults: dict[str, Any] = {"default_concurrency": 2, "health_addr": request.health_addr or "off"}
    if request.demo:
        defaults["log_level"] = "WARN"
    base_config = local_config(request.config_file, defaults=defaults)
    overrides: dict[str, Any] = {}
    if request.concurrency:  # the flag wins over the environment, as in ``runner run``
        overrides["concurrency"] = _parse_concurrency(request.concurrency)
    async with serve(base / "controlplane", host=request.host, port=request.port, quiet=request.demo) as cp:
        config = _runner_config(base_config, base / "runner", cp, **overrides)
        tee = None if request.demo else console_tee()
        daemon = Daemon(config, log_tee=tee, install_signal_handlers=not request.demo)
        daemon.instance_id = local_instance_id(config.state_dir)
        code = 0
        async with anyio.create_task_group() as tg:

            async def run_daemon() -> None:
                nonlocal code
                code = await daemon.run()
                tg.cancel_scope.cancel()

            tg.start_soon(run_daemon)
            await daemon.wait_ready()
            creds = cp.credentials
            if not request.demo:
                sys.stderr.write(
                    f"control plane: {cp.url}  runner: {creds.runner_id}\n"
                    f"submit a job:  runner jobs --state-dir {base} submit --type noop --wait\n"
                    "press Ctrl-C to stop\n"
                )
                return await _wait_forever(tg, lambda: code)
            operator = OperatorAPI(cp.url, creds.admin_token, creds.runner_id)
            try:
                code = await run_demo(operator, demo_jobs(base))
            finally:
                await operator.aclose()
            daemon.request_shutdown(graceful=True, reason="demo finished")
    return code


async def _wait_forever(tg: Any, code: Callable[[], int]) -> int:
    await anyio.sleep_forever()
    return code()  # pragma: no cover - the task group is cancelled by the daemon's exit


async def run_demo(operator: OperatorAPI, jobs: list[DemoJob], *, timeout: float = 300.0) -> int:
    """Submit the demo jobs, show a live table, return 0 when every job finished."""
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

    console = Console(stderr=True)
    pending: list[DemoJob] = list(jobs)
    for item in pending:
        item.job = await operator.submit(item.body)
        item.submitted_at = time.monotonic()

    def table() -> Table:
        t = Table(title="runner local --demo", expand=False)
        for col in ("job", "id", "group", "status", "seconds"):
            t.add_column(col)
        for item in pending:
            job = item.job
            status = str(job.get("status", "?"))
            style = {"finished": "green", "failed": "red", "timed-out": "red", "cancelled": "yellow"}.get(
                status, ""
            )
            end = item.finished_at or time.monotonic()
            t.add_row(
                item.title,
                str(job.get("id", "")),
                str(job.get("group", "")),
                f"[{style}]{status}[/{style}]" if style else status,
                f"{end - item.submitted_at:.2f}",
            )
        return t

    deadline = time.monotonic() + timeout
    with Live(table(), console=console, refresh_per_second=8, transient=False) as live:
        while time.monotonic() < deadline:
            done = True
            for item in list(pending):
                if item.finished_at:
                    continue
                item.job = await operator.job(str(item.job["id"]))
                if item.job.get("status") in {s.value for s in TERMINAL_JOB_STATUSES}:
                    item.finished_at = time.monotonic()
                    if item.then is not None and item.job.get("status") == JobStatus.FINISHED.value:
                        executions = await operator.executions(str(item.job["id"]))
                        latest = max(executions, key=lambda e: str(e.get("created_at", "")))
                        item.job["_result"] = (
                            await operator.result(str(item.job["id"]), str(latest["id"])) or {}
                        )
                        follow = DemoJob("terraform apply", item.then(item.job))
                        follow.job = await operator.submit(follow.body)
                        follow.submitted_at = time.monotonic()
                        pending.append(follow)
                        done = False
                else:
                    done = False
            live.update(table())
            if done:
                break
            await anyio.sleep(0.1)
    failed = [item for item in pending if item.job.get("status") != JobStatus.FINISHED.value]
    if failed:
        for item in failed:
            console.print(
                f"[red]{item.title}: {item.job.get('status')} {item.job.get('status_description', '')}"
            )
        return 1
    for item in pending:
        outputs = item.job.get("outputs")
        if outputs:
            console.print(f"{item.title} outputs: {json.dumps(outputs, sort_keys=True)}")
    console.print(f"[green]all {len(pending)} demo jobs finished[/green]")
    return 0
