"""Running terraform commands for one job: argv, environment, output handling, failures.

Every command goes through the job's ``ProcessRunner`` (own process group, SIGINT then SIGKILL
on cancel). Commands that support it run with ``-json`` so each line becomes a log record at
terraform's level; a non-zero exit becomes ``TerraformFailed`` whose message is terraform's own
error summary (the diagnostics' summary and detail), not just an exit code.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from handlers.common.toolcache import file_lock
from handlers.terraform.cli_config import plugin_cache_lock
from handlers.terraform.output import TerraformOutput
from runner.sdk import ErrorCode, HandlerError, JobLog, ProcessResult, ProcessRunner


class TerraformFailed(HandlerError):
    """A terraform command failed; the message carries terraform's error summary."""

    code = ErrorCode.CHILD_PROCESS


@dataclass
class TerraformCLI:
    binary: Path
    cwd: Path
    env: Mapping[str, str]
    processes: ProcessRunner
    log: JobLog
    tools_dir: Path
    grace_period: float | None = None
    #: The output handler of the last command run (tests and callers inspect it).
    last_output: TerraformOutput | None = field(default=None, init=False)

    async def _run(self, step: str, args: Sequence[str], *, capture: bool = False) -> ProcessResult:
        output = TerraformOutput(step)
        self.last_output = output
        argv = [str(self.binary), *args]
        result = await self.processes.run(
            argv,
            env=self.env,
            cwd=self.cwd,
            capture_stdout=capture,
            check=False,
            line_handler=output,
            grace_period=self.grace_period,
        )
        if result.returncode != 0:
            summary = output.error_summary() or "\n".join(result.stderr_tail[-3:])
            raise TerraformFailed(
                f"terraform {step} failed (exit code {result.returncode})"
                + (f": {summary}" if summary else ""),
                terraform_command=step,
                exit_code=result.returncode,
                diagnostics=json.dumps([d.render() for d in output.errors()][:10])
                if output.errors()
                else None,
                stderr_tail="\n".join(result.stderr_tail[-20:]) or None,
            )
        return result

    async def init(self) -> None:
        """``terraform init``, holding the shared plugin cache lock (terraform's cache is not
        safe for concurrent writers)."""
        async with file_lock(plugin_cache_lock(self.tools_dir)):
            await self._run("init", ["init", "-input=false", "-no-color", "-reconfigure"])

    async def plan(self, out: Path, *, destroy: bool = False, var_files: Sequence[Path] = ()) -> None:
        args = ["plan", "-input=false", "-json", "-lock-timeout=0s", f"-out={out}"]
        if destroy:
            args.append("-destroy")
        args += [f"-var-file={path}" for path in var_files]
        await self._run("plan", args)

    async def apply(self, planfile: Path) -> None:
        await self._run("apply", ["apply", "-input=false", "-json", "-lock-timeout=0s", str(planfile)])

    async def show_json(self, planfile: Path | None = None) -> bytes:
        """``terraform show -json`` of a plan file, or of the current state when None."""
        args = ["show", "-json"] + ([str(planfile)] if planfile else [])
        result = await self._run("show", args, capture=True)
        return result.stdout or b""

    async def providers_schema_json(self) -> bytes:
        """``terraform providers schema -json``: every provider's schema (starts each provider)."""
        result = await self._run("providers", ["providers", "schema", "-json"], capture=True)
        return result.stdout or b""

    async def output_json(self) -> dict[str, Any]:
        result = await self._run("output", ["output", "-json"], capture=True)
        try:
            data = json.loads(result.stdout or b"{}")
        except json.JSONDecodeError as exc:
            raise TerraformFailed(
                f"terraform output -json printed invalid JSON: {exc}", terraform_command="output"
            ) from exc
        return data if isinstance(data, dict) else {}
