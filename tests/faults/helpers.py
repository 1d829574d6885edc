"""Helpers of the fault suite (tests/faults): runners under another identity, the figures of a
scenario (lines delivered, statuses, leftover processes), waiting on a job.

The suite's scenarios (issue 11) run real ``python -m controlplane`` and ``runner run``
processes over loopback; see tests/support/controlplane.py and tests/support/runner_proc.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import psutil

from controlplane.operator import TERMINAL_JOB_STATUSES, OperatorClient
from tests.support.runner_proc import RunnerProcess

_LINE = re.compile(r"line (\d{7})")


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, step: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


def wait_job(operator: OperatorClient, job_id: str, timeout: float) -> dict[str, Any]:
    return dict(
        wait_for(
            lambda: (job := operator.get_job(job_id))["status"] in TERMINAL_JOB_STATUSES and job,
            timeout,
            f"job {job_id} to end",
            step=0.25,
        )
    )


def numbered_lines(operator: OperatorClient, log_stream_id: str) -> list[int]:
    """The ``line NNNNNNN`` numbers the control plane stored, in stored order."""
    out: list[int] = []
    for record in operator.logs(log_stream_id):
        match = _LINE.search(str(record.get("body", "")))
        if match:
            out.append(int(match.group(1)))
    return out


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return list(psutil.Process(pid).children(recursive=True))
    except psutil.NoSuchProcess:
        return []


def processes_with(marker: str) -> list[psutil.Process]:
    """Live processes whose command line or working directory contains ``marker`` (leftover
    children of a test: terraform and its provisioners run in the job's workspace)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if marker in " ".join(proc.info["cmdline"] or []) or marker in proc.cwd():
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


# ------------------------------------------------------------------ another identity


def _can_run_as_nobody() -> bool:
    """Whether ``nobody`` can run this Python, import the runner, and start this Python again
    (the probe job does): a venv's interpreter can be a link into a directory nobody may enter."""
    probe = subprocess.run(
        [
            "setpriv",
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "--inh-caps=-all",
            "--",
            sys.executable,
            "-c",
            "import subprocess, sys; import anyio, httpx, runner; "
            "subprocess.run([sys.executable, '-c', 'import runner'], check=True)",
        ],
        capture_output=True,
        check=False,
        cwd="/",
    )
    return probe.returncode == 0


def unprivileged_prefix() -> tuple[list[str], str]:
    """A command prefix that starts the runner as an unprivileged user, and a description.

    As root: ``nobody`` when it can run this Python and import the runner; otherwise uid 0 with
    every capability dropped (no CAP_SYS_PTRACE, no CAP_DAC_*): for the kernel's /proc and
    ptrace checks that is an ordinary user who owns the runner's files. Not root: as is.
    """
    if os.geteuid() != 0:
        return [], f"uid {os.geteuid()} (the test's own user)"
    if _can_run_as_nobody():
        return (
            ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--inh-caps=-all", "--"],
            "nobody",
        )
    return (
        ["setpriv", "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"],
        "uid 0 without any capability (this Python is not readable by nobody)",
    )


class PrefixedRunnerProcess(RunnerProcess):
    """``runner run`` started through a command prefix (``setpriv ...``)."""

    def __init__(self, *args: Any, prefix: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.prefix = prefix

    def start(self) -> PrefixedRunnerProcess:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.touch(exist_ok=True)
        if "--reuid=nobody" in self.prefix:
            for path in (self.state_dir, self.log_path):
                os.chown(path, _uid("nobody"), -1)
        out = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [*self.prefix, sys.executable, "-m", "runner", "run"],
            env=self.env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()
        return self


def _uid(name: str) -> int:
    import pwd

    return pwd.getpwnam(name).pw_uid
