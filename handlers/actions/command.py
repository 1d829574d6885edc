"""Which command a step runs, and the program it starts.

Order (the reference ignores the first two, so templated commands ran uninterpolated):

1. the plan's ``interpolated_inline_contents``;
2. the plan's ``interpolated_command``;
3. the config's ``inline_contents``, then its ``command`` (a plan built without interpolation).

An inline script is written into the job's workspace (mode 0700) and run with ``bash -eo
pipefail SCRIPT`` (a failing command or pipeline stage fails the step), unless it starts with a
``#!`` line, which then chooses the interpreter. A command is split like a POSIX shell splits
words (quotes respected) but not run through a shell; ``./x`` must be an executable file in the
step's source directory (the git source's ``path``); a bare ``x`` is that file when it is
executable there, else the program ``x`` on the step's PATH.
"""

from __future__ import annotations

import os
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from handlers.actions.steps import ConfigStep
from runner.sdk import ErrorCode, HandlerError
from runner.sdk.plans import ActionStep

#: How an inline script without a ``#!`` line runs: exit on the first failing command, and a
#: pipeline fails when any of its stages does.
INLINE_SHELL = ("bash", "-eo", "pipefail")


class CommandError(HandlerError):
    """A step whose command cannot be chosen or found."""

    code = ErrorCode.INVALID_PLAN


@dataclass(frozen=True)
class CommandChoice:
    kind: Literal["inline", "command"]
    text: str
    #: ``plan`` (interpolated by the control plane) or ``config`` (raw).
    origin: Literal["plan", "config"]


def choose_command(plan: ActionStep, config: ConfigStep) -> CommandChoice:
    """The step's command by the order of the module docstring."""
    if plan.interpolated_inline_contents.strip():
        return CommandChoice("inline", plan.interpolated_inline_contents, "plan")
    if plan.interpolated_command.strip():
        return CommandChoice("command", plan.interpolated_command.strip(), "plan")
    if config.inline_contents.strip():
        return CommandChoice("inline", config.inline_contents, "config")
    if config.command.strip():
        return CommandChoice("command", config.command.strip(), "config")
    raise CommandError(f"step {config.name!r} has no command and no inline_contents", step=config.name)


def inline_argv(script: Path, contents: str) -> list[str]:
    """How the written script runs: its own ``#!`` interpreter, else ``INLINE_SHELL``."""
    if contents.startswith("#!"):
        return [str(script)]
    return [*INLINE_SHELL, str(script)]


def split_command(text: str) -> list[str]:
    try:
        words = shlex.split(text)
    except ValueError as exc:  # an unclosed quote
        raise CommandError(f"cannot split the command: {exc}") from None
    if not words:
        raise CommandError("the command is empty")
    return words


def _executable_file(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _inside(base: Path, path: Path) -> bool:
    try:
        path.resolve().relative_to(base.resolve())
    except ValueError:
        return False
    return True


def resolve_program(program: str, source_dir: Path | None, path_env: str) -> str:
    """The file ``program`` names (module docstring); ``CommandError`` says why there is none."""
    if program.startswith("./"):
        if source_dir is None:
            raise CommandError(
                f"{program} names a script in the step's repository, but the step has no git source"
            )
        target = source_dir / program[2:]
        if not _inside(source_dir, target):
            raise CommandError(f"{program} leads outside the step's source directory")
        if not target.is_file():
            raise CommandError(f"{program} does not exist in the step's source directory")
        if not os.access(target, os.X_OK):
            raise CommandError(f"{program} exists in the step's source directory but is not executable")
        return str(target)
    if "/" in program:
        if not _executable_file(Path(program)):
            raise CommandError(f"{program} is not an executable file")
        return program
    if source_dir is not None and _executable_file(source_dir / program):
        return str(source_dir / program)
    found = shutil.which(program, path=path_env)
    if found is None:
        raise CommandError(f"{program} is neither an executable in the step's source directory nor on PATH")
    return found
