"""Shell hooks shipped with a module, run around apply and destroy (never around plans).

``pre-<op>.sh`` runs before terraform, ``post-<op>.sh`` after a success and ``error-<op>.sh``
after a failure, where ``<op>`` is ``apply`` or ``destroy`` (an apply-plan job applying a
teardown plan is a destroy). Hooks live in the module's root; a missing hook is skipped. Their
environment is the plan's ``hooks.EnvVars`` plus the credentials of ``hooks.RunAuth`` and
nothing of the runner's; their stdout **and** stderr go to the job log (the reference loses
stderr). A failing pre- or post-hook fails the job; a failing error-hook is logged and the
original failure is reported.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from runner.sdk import ErrorCode, HandlerError, JobLog, ProcessRunner


class HookFailed(HandlerError):
    code = ErrorCode.CHILD_PROCESS


@dataclass
class Hooks:
    module_dir: Path
    env: Mapping[str, str]
    processes: ProcessRunner
    log: JobLog
    enabled: bool = True

    def path(self, name: str) -> Path | None:
        candidate = self.module_dir / name
        return candidate if candidate.is_file() else None

    async def run(self, stage: str, operation: str, *, must_succeed: bool = True) -> bool:
        """Run ``<stage>-<operation>.sh`` if present; True if it ran and succeeded."""
        name = f"{stage}-{operation}.sh"
        script = self.path(name)
        if not self.enabled or script is None:
            return False
        argv = [str(script)] if os.access(script, os.X_OK) else ["/bin/sh", str(script)]
        self.log.info("running hook", hook=name)
        result = await self.processes.run(argv, env=dict(self.env), cwd=self.module_dir, check=False)
        if result.returncode == 0:
            self.log.info("hook finished", hook=name)
            return True
        tail = " / ".join(line for line in result.stderr_tail[-3:] if line)
        message = f"hook {name} exited with code {result.returncode}" + (f": {tail}" if tail else "")
        if must_succeed:
            raise HookFailed(message, hook=name, exit_code=result.returncode)
        self.log.error(message, hook=name)
        return False
