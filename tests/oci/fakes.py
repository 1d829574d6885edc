"""Simple stand-ins for the executor's collaborators, to drive a handler by hand."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

from runner.api.models import RunnerGroupSettings, RunnerJob, RunnerJobExecution
from runner.api.plans import BasePlan, decode_plan
from runner.config import Config
from runner.handler import Handler, JobContext, JobLog, ProcessResult


class RecordingLog:
    """A JobLog that keeps (level, message, attrs) and masks like the real one."""

    def __init__(self, secrets: FakeSecrets, records: list[tuple[str, str, dict[str, Any]]] | None = None):
        self.secrets = secrets
        self.records = records if records is not None else []

    def log(self, level: str, message: str, **attrs: Any) -> None:
        masked = {k: self.secrets.mask(str(v)) for k, v in attrs.items()}
        self.records.append((level, self.secrets.mask(message), masked))

    def debug(self, message: str, **attrs: Any) -> None:
        self.log("debug", message, **attrs)

    def info(self, message: str, **attrs: Any) -> None:
        self.log("info", message, **attrs)

    def warning(self, message: str, **attrs: Any) -> None:
        self.log("warning", message, **attrs)

    def error(self, message: str, **attrs: Any) -> None:
        self.log("error", message, **attrs)

    def bind(self, **attrs: Any) -> JobLog:
        return self

    def messages(self) -> list[str]:
        return [m for _, m, _ in self.records]


class FakeSecrets:
    def __init__(self) -> None:
        self.values: set[str] = set()

    def register(self, *values: str | None) -> None:
        self.values.update(v for v in values if v)

    def mask(self, text: str) -> str:
        for value in sorted(self.values, key=len, reverse=True):
            for form in (value, base64.b64encode(value.encode()).decode(), quote(value, safe="")):
                text = text.replace(form, "***")
        return text


class NoProcesses:
    async def run(self, argv: Any, **kwargs: Any) -> ProcessResult:
        raise AssertionError("oci handlers run no child process")


class NoControl:
    def request_shutdown(self, *, graceful: bool, exit_code: int = 0, reason: str = "") -> None:
        raise AssertionError("not expected")

    def loop_ages_ns(self) -> dict[str, int]:
        return {}


def make_context(
    job_type: str,
    plan: dict[str, Any] | str,
    workspace: Path,
    *,
    owner_id: str = "",
    config: Config | None = None,
) -> tuple[JobContext, RecordingLog, FakeSecrets]:
    import json

    text = plan if isinstance(plan, str) else json.dumps(plan)
    secrets = FakeSecrets()
    log = RecordingLog(secrets)
    parsed: BasePlan = decode_plan(job_type, text)
    ctx = JobContext(
        job=RunnerJob(id="job1", type=job_type, owner_id=owner_id),
        execution=RunnerJobExecution(id="exe1"),
        plan=parsed,
        plan_text=text,
        workspace=workspace,
        log=log,
        secrets=secrets,
        processes=NoProcesses(),
        api=cast(Any, None),
        config=config or Config(runner_id="r", api_url="http://127.0.0.1:1", api_token="t"),
        settings=RunnerGroupSettings(),
        control=NoControl(),
        deadline=1e12,
    )
    return ctx, log, secrets


async def run_handler(handler: Handler, ctx: JobContext) -> None:
    """prepare -> execute, and cleanup always, like the executor."""
    try:
        await handler.prepare(ctx)
        await handler.execute(ctx)
    finally:
        await handler.cleanup(ctx)
