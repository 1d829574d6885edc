"""Keep the runner's API token out of its job's child processes' reach.

Children get an explicit environment without the token (``runner.process``), but a child runs
as the same user as the runner, and the same user may read ``/proc/<runner pid>/environ`` (the
environment the runner was started with, whatever ``os.environ`` says later), ``/proc/<pid>/mem``
and the rest. The probe of issue 11 walked up to its parent and read ``RUNNER_API_TOKEN`` there.
So, at start-up:

* ``RUNNER_API_TOKEN_FILE`` (a mounted Secret, a file only the runner's user may read) is the
  preferred way to hand over the token: it is read once and never enters the process's
  start-up environment at all;
* the process makes itself non-dumpable (``prctl(PR_SET_DUMPABLE, 0)``): the kernel then
  refuses every ``/proc/<pid>/{environ,mem,fd,maps,...}`` read and ``ptrace`` from processes
  without ``CAP_SYS_PTRACE``, same user or not, and writes no core dump;
* after the configuration is read, ``RUNNER_API_TOKEN`` is removed from ``os.environ`` and its
  value is overwritten in the start-up environment block itself (what ``/proc/<pid>/environ``
  shows), so that nothing that starts a child with the inherited environment can pass it on.

None of this stops a process running as root or with ``CAP_SYS_PTRACE``, and a token file
stays readable by anything running as the runner's user: ``deploy/README.md`` says what an
operator should configure (run as a non-root user, no added capabilities, mount the file).
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import MutableMapping
from pathlib import Path

from runner.config import ConfigError

TOKEN_ENV = "RUNNER_API_TOKEN"  # noqa: S105 - a variable name
TOKEN_FILE_ENV = "RUNNER_API_TOKEN_FILE"  # noqa: S105 - a variable name
_PR_SET_DUMPABLE = 4
_PR_GET_DUMPABLE = 3


class TokenFileError(ConfigError):
    """``RUNNER_API_TOKEN_FILE`` names a file that cannot be used."""


def token_from_file(env: MutableMapping[str, str]) -> None:
    """Put the token of ``RUNNER_API_TOKEN_FILE`` into ``env`` (for the configuration loader).

    ``os.environ`` changes never reach ``/proc/<pid>/environ``; the value is removed again by
    ``scrub_token``. An explicit ``RUNNER_API_TOKEN`` wins over the file.
    """
    path = env.get(TOKEN_FILE_ENV, "")
    if not path or env.get(TOKEN_ENV):
        return
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise TokenFileError(f"{TOKEN_FILE_ENV}: cannot read {path}: {exc.strerror or exc}") from None
    if not token:
        raise TokenFileError(f"{TOKEN_FILE_ENV}: {path} is empty")
    env[TOKEN_ENV] = token


def make_undumpable() -> bool:
    """``prctl(PR_SET_DUMPABLE, 0)``; False where that is not available (not Linux)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def is_dumpable() -> bool | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_GET_DUMPABLE, 0, 0, 0, 0))
    except (OSError, AttributeError):
        return None


def _wipe_startup_environment(name: str) -> None:
    """Overwrite the value of ``NAME=value`` in the strings of the C ``environ`` array (at
    start-up they are the block ``/proc/<pid>/environ`` shows)."""
    try:
        libc = ctypes.CDLL(None)
        environ = ctypes.POINTER(ctypes.c_void_p).in_dll(libc, "environ")
    except (OSError, ValueError, AttributeError):
        return
    prefix = name.encode() + b"="
    i = 0
    while (address := environ[i]) is not None:
        entry = ctypes.string_at(address)
        if entry.startswith(prefix):
            ctypes.memset(address + len(prefix), ord("x"), len(entry) - len(prefix))
        i += 1


def scrub_token(env: MutableMapping[str, str] | None = None) -> None:
    """Remove the token from the environment once the configuration has it."""
    if env is None:
        env = os.environ
        _wipe_startup_environment(TOKEN_ENV)
    env.pop(TOKEN_ENV, None)


def protect_process() -> None:
    """Start-up, before the configuration is read: non-dumpable, token file read."""
    make_undumpable()
    token_from_file(os.environ)
