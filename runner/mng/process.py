"""Process mode: ``runner run`` as a child of mng, from the current versioned virtualenv.

The child gets its own session (``setsid``), so a signal to mng's process group or mng's death
does not reach it, and writes to a log file (or mng's own stdout, which it holds a copy of), never
to a pipe that would break with mng. Its environment is explicit: a minimal base, the workload's
environment file, and ``RUNNER_API_TOKEN_FILE`` (the workload's own token, by path: neither mng's
token nor any token value passes through mng's memory or the child's environment).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from runner.mng.state import WorkloadState, process_start_time, same_process_alive
from runner.mng.venvs import VenvStore

POLL_INTERVAL = 0.2
#: Variables of mng's own environment a workload gets (nothing else of it).
BASE_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR")


class ProcessHandle:
    def __init__(self, pid: int, start: int, popen: subprocess.Popen[bytes] | None = None) -> None:
        self.pid = pid
        self.start = start
        self.popen = popen
        self.intentional = False
        self._code: int | None = None
        self._exited = False

    def exited(self) -> bool:
        if self._exited:
            return True
        if self.popen is not None:
            code = self.popen.poll()
            if code is not None:
                self._exited, self._code = True, code
        elif not same_process_alive(self.pid, self.start):
            self._exited = True  # not our child: its exit code went to whoever reaps it
        return self._exited

    async def wait(self) -> int | None:
        # Polled: an adopted process is not our child, and no event tells of its exit.
        while not self.exited():  # noqa: ASYNC110
            await anyio.sleep(POLL_INTERVAL)
        return self._code

    async def stop(self, timeout: float) -> int | None:
        self._signal(signal.SIGTERM)
        with anyio.move_on_after(timeout):
            return await self.wait()
        self._signal(signal.SIGKILL)
        with anyio.move_on_after(10):
            return await self.wait()
        return self._code

    def _signal(self, signum: int) -> None:
        if self.exited():
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signum)

    def remember(self, state: WorkloadState) -> None:
        state.pid, state.pid_start, state.container = self.pid, self.start, ""

    def describe(self) -> str:
        return f"pid {self.pid}"


@dataclass
class ProcessWorkload:
    venvs: VenvStore
    #: The workload's environment (``RUNNER_ID``, ``RUNNER_API_URL``, ``RUNNER_HEALTH_ADDR``...),
    #: read at each start (an operator's fix to the file applies at the next restart).
    env: Callable[[], Mapping[str, str]]
    #: The workload runner's token file, handed over as ``RUNNER_API_TOKEN_FILE``.
    token_file: Path | None
    health_url: str
    #: Where its stdout and stderr go; None: mng's own.
    log_file: Path | None = None
    mode: str = field(default="process", init=False)

    async def adopt(self, state: WorkloadState) -> ProcessHandle | None:
        if state.mode != self.mode or not same_process_alive(state.pid, state.pid_start):
            return None
        return ProcessHandle(state.pid, state.pid_start)

    async def install(self, version: str) -> None:
        await self.venvs.install(version)

    def installed_version(self) -> str | None:
        return self.venvs.current()

    def child_env(self) -> dict[str, str]:
        env = {k: os.environ[k] for k in BASE_ENV if k in os.environ}
        env.update(self.env())
        if self.token_file is not None:
            env["RUNNER_API_TOKEN_FILE"] = str(self.token_file)
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    async def start(self, version: str) -> ProcessHandle:
        self.venvs.switch(version)
        popen = _spawn([str(self.venvs.runner_bin()), "run"], self.child_env(), self.log_file)
        start = process_start_time(popen.pid) or 0
        return ProcessHandle(popen.pid, start, popen)


def _spawn(argv: list[str], env: dict[str, str], log_file: Path | None) -> subprocess.Popen[bytes]:
    """fork+exec in its own session; not ``anyio.open_process``, whose process lives and dies
    with the task that opened it (the workload must outlive mng)."""
    out = open(log_file, "ab") if log_file is not None else None  # noqa: SIM115 - closed below
    try:
        return subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT if out is not None else None,
            start_new_session=True,
            close_fds=True,
            cwd="/",
        )
    finally:
        if out is not None:
            out.close()
