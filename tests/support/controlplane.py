"""Control plane fixtures for every test tier.

* ``ControlPlaneProcess``: ``python -m controlplane`` as a subprocess on a free loopback port
  with its own state dir; ``stop()``/``start()`` keep the port and the data (a test can take the
  control plane away for a while), ``kill()`` is SIGKILL.
* ``EmbeddedControlPlane``: the same server inside the test process (a background event loop
  thread); starts in milliseconds, for tests that do not need a separate process.
* ``OperatorClient``: the operator API (admin token), synchronous.
* pytest fixtures: ``control_plane`` (a process in ``tmp_path``), ``operator`` (its operator
  client), ``control_plane_factory`` (processes with options), ``embedded_control_plane``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal

from controlplane.operator import TERMINAL_JOB_STATUSES, OperatorClient, OperatorError
from controlplane.options import CREDENTIALS_FILE, ControlPlaneOptions, Credentials
from controlplane.server import RunningControlPlane, serve

__all__ = [
    "TERMINAL_JOB_STATUSES",
    "ControlPlaneProcess",
    "EmbeddedControlPlane",
    "OperatorClient",
    "OperatorError",
    "free_port",
]

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Access:
    """What both kinds of control plane offer a test, given ``url`` and ``credentials``."""

    url: str
    credentials: Credentials

    @property
    def runner_id(self) -> str:
        return self.credentials.runner_id

    @property
    def admin_token(self) -> str:
        return self.credentials.admin_token

    @property
    def runner_token(self) -> str:
        return self.credentials.runner_token

    def operator(self) -> OperatorClient:
        return OperatorClient(self.url, self.admin_token, runner_id=self.runner_id)

    def runner_http(self, token: str | None = None, **kwargs: Any) -> httpx.Client:
        """An httpx client acting as the runner (runner token unless ``token`` is given)."""
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token or self.runner_token}"},
            timeout=kwargs.pop("timeout", 30.0),
            **kwargs,
        )

    def runner_env(self) -> dict[str, str]:
        """Environment for a runner agent pointed at this control plane."""
        return {
            "RUNNER_API_URL": self.url,
            "RUNNER_ID": self.runner_id,
            "RUNNER_API_TOKEN": self.runner_token,
        }


class ControlPlaneProcess(_Access):
    def __init__(
        self,
        state_dir: Path,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        monitor_interval: float | None = None,
        heartbeat_offline_after: float | None = None,
        restart_grace: float | None = None,
        max_body_bytes: int | None = None,
        long_poll_max: float | None = None,
        heart_beat_timeout: float | None = None,
        extra_args: tuple[str, ...] = (),
        start_timeout: float = 15.0,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.host = host
        self.port = port or free_port()
        self.url = f"http://{host}:{self.port}"
        self.start_timeout = start_timeout
        self.args: list[str] = ["--host", host, "--port", str(self.port), "--state-dir", str(self.state_dir)]
        for flag, value in (
            ("--monitor-interval", monitor_interval),
            ("--heartbeat-offline-after", heartbeat_offline_after),
            ("--restart-grace", restart_grace),
            ("--max-body-bytes", max_body_bytes),
            ("--long-poll-max", long_poll_max),
            ("--heart-beat-timeout", heart_beat_timeout),
        ):
            if value is not None:
                self.args += [flag, str(value)]
        self.args += list(extra_args)
        self.proc: subprocess.Popen[bytes] | None = None
        self._credentials: Credentials | None = None
        self.log_path = self.state_dir / "controlplane.log"

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> ControlPlaneProcess:
        """Start (again) on the same port and state dir; returns once it answers."""
        if self.running:
            return self
        self.state_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "controlplane", *self.args],
                stdout=log,
                stderr=log,
                env=env,
                cwd=REPO,
                start_new_session=True,
            )
        self._wait_ready()
        self._credentials = Credentials.load(self.state_dir / CREDENTIALS_FILE)
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"control plane exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(self.url + "/livez", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"control plane not ready after {self.start_timeout}s:\n{self.log_tail()}")
            time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM and wait (SIGKILL after ``timeout``)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.kill()
        self.proc.wait(10)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def credentials(self) -> Credentials:  # type: ignore[override]
        if self._credentials is None:
            self._credentials = Credentials.load(self.state_dir / CREDENTIALS_FILE)
        return self._credentials

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def __enter__(self) -> ControlPlaneProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class EmbeddedControlPlane(_Access, AbstractContextManager["EmbeddedControlPlane"]):
    """The control plane served by ``controlplane.server.serve`` on a background event loop."""

    def __init__(
        self, state_dir: Path | None = None, options: ControlPlaneOptions | None = None, *, port: int = 0
    ) -> None:
        self.state_dir = state_dir
        self.options = options or ControlPlaneOptions()
        self.port = port
        self._stack = ExitStack()
        self.portal: BlockingPortal | None = None
        self.running: RunningControlPlane | None = None

    def __enter__(self) -> EmbeddedControlPlane:
        self.portal = self._stack.enter_context(start_blocking_portal())
        self.running = self._stack.enter_context(
            self.portal.wrap_async_context_manager(
                serve(self.state_dir, port=self.port, options=self.options, quiet=True)
            )
        )
        self.url = self.running.url
        self.credentials = self.running.credentials
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()


# =================================================================== pytest fixtures


@pytest.fixture
def control_plane_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., ControlPlaneProcess]]:
    """Start control plane processes with options (keyword arguments of ControlPlaneProcess)."""
    started: list[ControlPlaneProcess] = []

    def make(**kwargs: Any) -> ControlPlaneProcess:
        state_dir = kwargs.pop("state_dir", None) or tmp_path_factory.mktemp("controlplane")
        cp = ControlPlaneProcess(state_dir, **kwargs)
        started.append(cp)
        return cp.start()

    yield make
    for cp in started:
        cp.stop()


@pytest.fixture
def control_plane(control_plane_factory: Callable[..., ControlPlaneProcess]) -> ControlPlaneProcess:
    return control_plane_factory()


@pytest.fixture
def operator(control_plane: ControlPlaneProcess) -> Iterator[OperatorClient]:
    client = control_plane.operator()
    yield client
    client.close()


@pytest.fixture
def embedded_control_plane_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., EmbeddedControlPlane]]:
    """In-process control planes: ``factory(**ControlPlaneOptions fields, state_dir=…|None)``."""
    with ExitStack() as stack:

        def make(state_dir: Path | None = None, **options: Any) -> EmbeddedControlPlane:
            base = asdict(ControlPlaneOptions())
            base.update(options)
            return stack.enter_context(EmbeddedControlPlane(state_dir, ControlPlaneOptions(**base)))

        yield make


@pytest.fixture
def embedded_control_plane(
    embedded_control_plane_factory: Callable[..., EmbeddedControlPlane],
) -> EmbeddedControlPlane:
    return embedded_control_plane_factory(monitor_interval=0.05)
