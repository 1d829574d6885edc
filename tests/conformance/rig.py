"""The conformance rig: embedded control plane <- recording proxy <- a real ``runner run``.

``run_job`` submits a job through the operator API (straight to the control plane, so it is not
in the record), waits until it is over, and returns the job's ``Transcript``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controlplane.options import ControlPlaneOptions
from tests.conformance.recorder import RecordingProxy, Transcript
from tests.support.controlplane import EmbeddedControlPlane
from tests.support.runner_proc import RunnerProcess


@dataclass
class ConformanceRig:
    cp: EmbeddedControlPlane
    proxy: RecordingProxy
    runner: RunnerProcess

    def run_job(
        self,
        job_type: str,
        plan: Any = None,
        *,
        timeout: float = 120.0,
        settle: float = 0.3,
        **submit: Any,
    ) -> tuple[dict[str, Any], Transcript]:
        start = len(self.proxy.snapshot())
        with self.cp.operator() as operator:
            job = operator.submit(job_type, plan, **submit)
            done = operator.wait_job(job["id"], timeout=timeout)
        time.sleep(settle)  # the last log batch and the watcher's last read land after the status
        return done, Transcript(self.proxy.snapshot()[start:])


@contextmanager
def conformance_rig(tmp_path: Path, **runner_env: str) -> Iterator[ConformanceRig]:
    options = ControlPlaneOptions(monitor_interval=0.1)
    with ExitStack() as stack:
        cp = stack.enter_context(EmbeddedControlPlane(tmp_path / "cp", options))
        proxy = stack.enter_context(
            RecordingProxy(cp.url, runner_token=cp.runner_token, admin_token=cp.admin_token)
        )
        env = {"RUNNER_API_URL": proxy.url, **runner_env}
        runner = RunnerProcess(cp, tmp_path / "runner", env=env).start()
        stack.callback(runner.kill)
        runner.wait_ready()
        yield ConformanceRig(cp, proxy, runner)
