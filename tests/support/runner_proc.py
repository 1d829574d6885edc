"""A real ``runner run`` subprocess against the test's control plane.

Tests that need signals (SIGTERM drain, kill -9) or two runners on one queue run the daemon as
its own process, exactly as a supervisor would.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cred(cp: Any, key: str) -> str:
    creds = cp.credentials
    value = creds[key] if isinstance(creds, dict) else getattr(creds, key)
    return str(value)


class RunnerProcess:
    def __init__(self, cp: Any, state_dir: Path, env: dict[str, str] | None = None) -> None:
        self.cp = cp
        self.state_dir = state_dir
        self.health_port = free_port()
        self.log_path = state_dir.parent / f"{state_dir.name}.log"
        self.extra_env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def runner_token(self) -> str:
        return _cred(self.cp, "runner_token")

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
        env.update(
            {
                "RUNNER_ID": _cred(self.cp, "runner_id"),
                "RUNNER_API_URL": str(self.cp.url),
                "RUNNER_API_TOKEN": self.runner_token,
                "RUNNER_STATE_DIR": str(self.state_dir),
                "RUNNER_HEALTH_ADDR": f"127.0.0.1:{self.health_port}",
                "RUNNER_LOG_FORMAT": "json",
                "RUNNER_POLL_INTERVAL": "0.2",
                "RUNNER_SETTINGS_REFRESH_INTERVAL": "1",
                "RUNNER_CANCEL_POLL_INTERVAL": "0.5",
                "RUNNER_CHILD_GRACE": "3",
                "RUNNER_DRAIN_GRACE": "30",
                "RUNNER_REQUEST_TIMEOUT": "5",
                "RUNNER_LONG_POLL_WAIT": "5",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        return env

    def start(self) -> RunnerProcess:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        out = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "runner", "run"],
            env=self.env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"runner exited early with {self.proc.returncode}:\n{self.output()[-3000:]}"
                )
            try:
                r = httpx.get(f"http://127.0.0.1:{self.health_port}/readyz", timeout=1.0)
                if r.status_code == 200:
                    return
                last = r.text
            except httpx.HTTPError as exc:
                last = str(exc)
            time.sleep(0.1)
        raise AssertionError(f"runner not ready after {timeout}s: {last}\n{self.output()[-3000:]}")

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{self.health_port}{path}", timeout=5.0)

    def send_signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        """Send ``signum`` and wait for the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"runner did not exit within {timeout}s:\n{self.output()[-3000:]}") from None

    def kill(self) -> None:
        """kill -9 the runner (its children are in their own process groups and survive it)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def wait_exit(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def events(self) -> list[dict[str, Any]]:
        """The runner's own JSON log lines."""
        events = []
        for line in self.output().splitlines():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return events


@pytest.fixture
def runner_process_factory(control_plane: Any, tmp_path: Path) -> Iterator[Callable[..., RunnerProcess]]:
    """``factory(**env) -> RunnerProcess`` started and ready; every one is stopped at teardown."""
    started: list[RunnerProcess] = []
    counter = iter(range(1000))

    def factory(*, wait_ready: bool = True, state_dir: Path | None = None, **env: str) -> RunnerProcess:
        proc = RunnerProcess(control_plane, state_dir or tmp_path / f"runner-{next(counter)}", env)
        proc.start()
        started.append(proc)
        if wait_ready:
            proc.wait_ready()
        return proc

    yield factory
    for proc in started:
        if proc.proc is not None and proc.proc.poll() is None:
            proc.proc.send_signal(signal.SIGKILL)
            proc.proc.wait(timeout=10)


@pytest.fixture
def runner_process(runner_process_factory: Callable[..., RunnerProcess]) -> RunnerProcess:
    return runner_process_factory()
