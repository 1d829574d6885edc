"""``runner mng`` as a real process against a real control plane, supervising a real runner.

``MngHarness`` owns two runner identities on one control plane (mng's, and the workload's: the
control plane's first runner), their token files (0600, handed over by path only), the
workload's environment file, and the directories; it starts and kills mng, reads its JSON log,
its state file and its ``/metrics``, and at teardown stops whatever workload is left (by the pid
or the container the state file names), since the workload outlives mng by design.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.support.controlplane import ControlPlaneProcess, OperatorClient, free_port

REPO = Path(__file__).resolve().parents[2]


def wait_until(
    predicate: Callable[[], Any], timeout: float, what: str, on_fail: Callable[[], str] = str
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{on_fail()}")
        time.sleep(0.1)


def _write_secret(path: Path, value: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return path


class MngHarness:
    def __init__(self, cp: ControlPlaneProcess, root: Path, *, mode: str = "process") -> None:
        self.cp = cp
        self.root = root
        self.mode = mode
        self.operator: OperatorClient = cp.operator()
        created = self.operator.create_runner("mng")
        self.mng_id: str = created["id"]
        self.workload_id = cp.runner_id
        self.mng_token_file = _write_secret(root / "secrets" / "mng-token", created["token"])
        self.workload_token_file = _write_secret(root / "secrets" / "runner-token", cp.runner_token)
        self.workload_health_port = free_port()
        self.mng_health_port = free_port()
        self.state_dir = root / "mng-state"
        self.log_path = root / "mng.log"
        self.workload_log = root / "workload.log"
        self.env_file = root / "workload.env"
        self.write_workload_env()
        self.proc: subprocess.Popen[bytes] | None = None
        self.extra: dict[str, str] = {}

    # ---------------------------------------------------------------- configuration
    def write_workload_env(self, **extra: str) -> None:
        values = {
            "RUNNER_ID": self.workload_id,
            "RUNNER_API_URL": self.cp.url,
            "RUNNER_STATE_DIR": str(self.root / "workload-state"),
            "RUNNER_HEALTH_ADDR": f"127.0.0.1:{self.workload_health_port}",
            "RUNNER_LOG_FORMAT": "json",
            "RUNNER_POLL_INTERVAL": "0.2",
            "RUNNER_SETTINGS_REFRESH_INTERVAL": "1",
            "RUNNER_DRAIN_GRACE": "5",
            "RUNNER_REQUEST_TIMEOUT": "5",
            "RUNNER_LONG_POLL_WAIT": "5",
            **extra,
        }
        self.env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
        env.update(
            {
                "PYTHONPATH": str(REPO),
                "PYTHONUNBUFFERED": "1",
                "RUNNER_ID": self.mng_id,
                "RUNNER_API_URL": self.cp.url,
                "RUNNER_API_TOKEN_FILE": str(self.mng_token_file),
                "RUNNER_STATE_DIR": str(self.state_dir),
                "RUNNER_HEALTH_ADDR": f"127.0.0.1:{self.mng_health_port}",
                "RUNNER_LOG_FORMAT": "json",
                "RUNNER_POLL_INTERVAL": "0.2",
                "RUNNER_SETTINGS_REFRESH_INTERVAL": "1",
                "RUNNER_REQUEST_TIMEOUT": "5",
                "RUNNER_LONG_POLL_WAIT": "5",
                "RUNNER_DRAIN_GRACE": "30",
                "RUNNER_MNG_MODE": self.mode,
                "RUNNER_MNG_WORKLOAD_ENV": str(self.env_file),
                "RUNNER_MNG_WORKLOAD_TOKEN_FILE": str(self.workload_token_file),
                "RUNNER_MNG_WORKLOAD_LOG": str(self.workload_log),
                "RUNNER_MNG_HEALTH_DEADLINE": "30",
                "RUNNER_MNG_STOP_TIMEOUT": "20",
                "RUNNER_MNG_RESTART_BACKOFF": "0.2",
                "RUNNER_MNG_RESTART_BACKOFF_MAX": "1",
                "RUNNER_MNG_POWER_OFF_COMMAND": "true",
            }
        )
        env.update(self.extra)
        return env

    # ---------------------------------------------------------------- mng
    def start(self, **extra: str) -> MngHarness:
        self.extra.update(extra)
        out = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "runner", "mng"],
            env=self.env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=self.root,
        )
        out.close()
        return self

    def wait_mng_ready(self, timeout: float = 30.0) -> None:
        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"mng exited with {self.proc.returncode}\n{self.tail()}")
            try:
                return (
                    httpx.get(f"http://127.0.0.1:{self.mng_health_port}/readyz", timeout=1).status_code == 200
                )
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout, "mng /readyz", self.tail)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def wait_exit(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"mng did not exit within {timeout}s\n{self.tail()}") from None

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.mng_health_port}/metrics", timeout=5).text

    def metric(self, name: str) -> float:
        for line in self.metrics().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    # ---------------------------------------------------------------- logs and state
    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 60) -> str:
        workload = self.workload_log.read_text(errors="replace") if self.workload_log.exists() else ""
        return (
            "--- mng log\n"
            + "\n".join(self.output().splitlines()[-lines:])
            + "\n--- workload log\n"
            + "\n".join(workload.splitlines()[-25:])
        )

    def events(self, message: str | None = None) -> list[dict[str, Any]]:
        found = []
        for line in self.output().splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(event, dict) and (message is None or event.get("event") == message):
                found.append(event)
        return found

    def state(self) -> dict[str, Any]:
        path = self.state_dir / "supervisor" / "workload.json"
        try:
            data: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        return data

    # ---------------------------------------------------------------- the workload
    def workload_ready(self) -> bool:
        try:
            url = f"http://127.0.0.1:{self.workload_health_port}/readyz"
            return httpx.get(url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_workload_ready(self, timeout: float = 60.0) -> None:
        wait_until(self.workload_ready, timeout, "the workload's /readyz", self.tail)

    def workload_pid(self) -> int:
        return int(self.state().get("pid") or 0)

    def workload_version(self) -> str:
        """The version the workload's heartbeats report to the control plane."""
        try:
            beat = self.operator.json("GET", f"/v1/runners/{self.workload_id}/heart-beats/latest")
        except Exception:  # noqa: BLE001 - no heartbeat yet
            return ""
        return str(beat.get("version") or "")

    # ---------------------------------------------------------------- jobs
    def submit(self, job_type: str, **fields: Any) -> str:
        job = self.operator.submit(job_type, runner_id=self.mng_id, **fields)
        return str(job["id"])

    def wait_job(self, job_id: str, timeout: float = 90.0) -> dict[str, Any]:
        try:
            return self.operator.wait_job(job_id, timeout=timeout)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{self.tail()}") from None

    def result(self, job_id: str) -> dict[str, Any]:
        return self.operator.result(job_id)

    # ---------------------------------------------------------------- teardown
    def close(self) -> None:
        self.kill()
        pid, start = self.state().get("pid"), self.state().get("pid_start")
        if pid:
            try:
                stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
                if int(stat[19]) == start:
                    os.kill(int(pid), signal.SIGKILL)
            except (OSError, ValueError, IndexError):
                pass
        self.operator.close()
