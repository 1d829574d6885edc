"""Container mode: the runner image under dockerd, run and recreated through python-on-whales.

One container, named ``--container-name`` and labelled as mng's, runs ``<image>:<version>`` with
the workload's environment, the workload's token file mounted read-only (and named by
``RUNNER_API_TOKEN_FILE``), a named volume for its state dir, ``--init`` (reaps a cancelled job's
grandchildren) and the host network (so ``RUNNER_HEALTH_ADDR`` is reachable on loopback, as the
reference's VMs do). dockerd owns the container, so it outlives mng; a restarted mng finds it by
name and label. Updating pulls the tag (unless it is present already) and recreates it.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import anyio

from runner.mng.state import WorkloadState

LABEL = "io.byoc-runner.mng"
VERSION_LABEL = "io.byoc-runner.version"
TOKEN_MOUNT = "/run/secrets/byoc-runner-token"  # noqa: S105 - a path, not a token
STATE_MOUNT = "/var/lib/byoc-runner"


class ContainerError(Exception):
    """dockerd refused an operation; the message carries docker's own."""


def _client(host: str | None) -> Any:
    from python_on_whales import DockerClient

    return DockerClient(host=host) if host else DockerClient()


class ContainerHandle:
    def __init__(self, workload: ContainerWorkload, name: str, container_id: str) -> None:
        self.workload = workload
        self.name = name
        self.container_id = container_id
        self.intentional = False
        self._code: int | None = None
        self._exited = False

    def _inspect_state(self) -> tuple[bool, int | None]:
        try:
            container = self.workload.docker.container.inspect(self.container_id)
        except Exception:  # noqa: BLE001 - removed behind our back: gone
            return False, None
        return bool(container.state.running), container.state.exit_code

    def exited(self) -> bool:
        if not self._exited:
            running, code = self._inspect_state()
            if not running:
                self._exited, self._code = True, code
        return self._exited

    async def wait(self) -> int | None:
        """``docker wait`` as a child process that is killed if the wait is cancelled."""
        if self._exited:
            return self._code
        argv = [str(a) for a in self.workload.docker.client_config.docker_cmd]
        result = await anyio.run_process([*argv, "wait", self.container_id], check=False)
        try:
            self._code = int(result.stdout.decode().strip().splitlines()[0])
        except (ValueError, IndexError):
            _running, self._code = await anyio.to_thread.run_sync(self._inspect_state)
        self._exited = True
        return self._code

    async def stop(self, timeout: float) -> int | None:
        docker = self.workload.docker
        if not self._exited:
            with contextlib.suppress(Exception):  # already stopped or gone
                await anyio.to_thread.run_sync(
                    partial(docker.container.stop, self.container_id, time=max(1, int(timeout)))
                )
            _running, self._code = await anyio.to_thread.run_sync(self._inspect_state)
            self._exited = True
        await anyio.to_thread.run_sync(self.workload.remove_container, self.container_id)
        return self._code

    def remember(self, state: WorkloadState) -> None:
        state.container, state.pid, state.pid_start = self.name, 0, 0

    def describe(self) -> str:
        return f"container {self.name} ({self.container_id[:12]})"


@dataclass
class ContainerWorkload:
    #: The image repository; the version is its tag.
    image: str
    #: Read at each (re)creation, like process mode's.
    env: Callable[[], Mapping[str, str]]
    token_file: Path | None
    health_url: str
    name: str = "byoc-runner"
    network: str = "host"
    state_volume: str = "byoc-runner-state"
    docker_host: str | None = None
    mode: str = field(default="container", init=False)
    docker: Any = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.docker = _client(self.docker_host)

    def ref(self, version: str) -> str:
        return f"{self.image}:{version}"

    async def adopt(self, state: WorkloadState) -> ContainerHandle | None:
        def find() -> ContainerHandle | None:
            try:
                container = self.docker.container.inspect(self.name)
            except Exception:  # noqa: BLE001 - no such container
                return None
            if container.config.labels.get(LABEL) != "1":
                raise ContainerError(f"a container named {self.name} exists that mng did not start")
            if not container.state.running:
                self.remove_container(container.id)
                return None
            return ContainerHandle(self, self.name, container.id)

        return await anyio.to_thread.run_sync(find)

    async def install(self, version: str) -> None:
        ref = self.ref(version)

        def pull() -> None:
            if self.docker.image.exists(ref):
                return
            try:
                self.docker.image.pull(ref, quiet=True)
            except Exception as exc:  # noqa: BLE001 - python-on-whales raises DockerException
                raise ContainerError(f"cannot pull {ref}: {_docker_message(exc)}") from None

        await anyio.to_thread.run_sync(pull)

    def installed_version(self) -> str | None:
        return None

    def remove_container(self, container: str) -> None:
        with contextlib.suppress(Exception):  # gone already
            self.docker.container.remove(container, force=True)

    async def start(self, version: str) -> ContainerHandle:
        ref = self.ref(version)
        envs = dict(self.env())
        volumes: list[tuple[str, str] | tuple[str, str, str]] = [(self.state_volume, STATE_MOUNT)]
        if self.token_file is not None:
            envs["RUNNER_API_TOKEN_FILE"] = TOKEN_MOUNT
            volumes.append((str(self.token_file), TOKEN_MOUNT, "ro"))

        def run() -> ContainerHandle:
            self.remove_container(self.name)
            try:
                container = self.docker.run(
                    ref,
                    ["run"],
                    detach=True,
                    name=self.name,
                    labels={LABEL: "1", VERSION_LABEL: version},
                    envs=envs,
                    volumes=volumes,
                    networks=[self.network],
                    init=True,
                    stop_signal=signal.SIGTERM.name,
                )
            except Exception as exc:  # noqa: BLE001 - python-on-whales raises DockerException
                raise ContainerError(f"cannot start {ref}: {_docker_message(exc)}") from None
            return ContainerHandle(self, self.name, container.id)

        return await anyio.to_thread.run_sync(run)


def _docker_message(exc: Exception) -> str:
    stderr = getattr(exc, "stderr", None)
    text = stderr if isinstance(stderr, str) and stderr.strip() else str(exc)
    return " ".join(text.strip().splitlines()[-3:])[:500]
