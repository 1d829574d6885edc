"""Which builder builds, and its command lines.

python-on-whales turns a builder choice into the command a job runs: ``DockerClient`` with
``client_call=["docker"]`` and ``host=DOCKER_HOST`` for dockerd, or ``client_call=["podman",
...global flags]`` for podman. The job runs those command lines through its own process runner
rather than through python-on-whales' ``build``/``push``, because python-on-whales runs them
synchronously, prints their output to the runner's stdout and hands them the runner's whole
environment (its API token included); the job needs them in their own process group (a cancel
stops the whole build), streamed line by line into the job log, with a minimal environment.

Podman runs rootless-friendly: cgroupfs (no systemd in a pod), file events, vfs storage and
chroot isolation, so that it needs no privileges, overlay mounts or user namespaces beyond what
a container has. The docker CLI builds with BuildKit when it has it (a buildx plugin, or a
20.10-22.x CLI, which carries BuildKit itself); a newer CLI without buildx has only the legacy
builder, which cannot mount secrets: a plan with secrets is then refused, not built without them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from handlers.docker.settings import DockerSettings
from runner.sdk import HandlerError

PODMAN_GLOBAL_FLAGS = ("--cgroup-manager=cgroupfs", "--events-backend=file", "--storage-driver=vfs")


@dataclass(frozen=True)
class Probe:
    """What is present: the facts ``choose_builder`` decides on."""

    docker_cli: bool = False
    docker_daemon: bool = False
    docker_detail: str = ""
    docker_client_version: str = ""
    docker_server_version: str = ""
    docker_buildx: bool = False
    podman: bool = False
    podman_version: str = ""
    podman_detail: str = ""


def choose_builder(setting: str, probe: Probe) -> tuple[str, str]:
    """``(kind, why)``: the builder to use for ``RUNNER_DOCKER_BUILDER=setting``."""
    docker_why = probe.docker_detail or (
        "no docker CLI" if not probe.docker_cli else "dockerd did not answer"
    )
    if setting == "docker":
        if not probe.docker_daemon:
            raise HandlerError(f"RUNNER_DOCKER_BUILDER=docker but dockerd is not usable: {docker_why}")
        return "docker", "RUNNER_DOCKER_BUILDER=docker"
    if setting == "podman":
        if not probe.podman:
            raise HandlerError(
                f"RUNNER_DOCKER_BUILDER=podman but podman is not usable: {probe.podman_detail or 'not found'}"
            )
        return "podman", "RUNNER_DOCKER_BUILDER=podman"
    if probe.docker_daemon:
        return "docker", "auto: dockerd answered"
    if probe.podman:
        return "podman", f"auto: no dockerd ({docker_why})"
    raise HandlerError(
        "no container builder: dockerd is not usable "
        f"({docker_why}) and podman is not usable ({probe.podman_detail or 'not found'}); "
        "set DOCKER_HOST or install podman"
    )


def docker_has_buildkit(client_version: str, buildx: bool) -> bool:
    """A buildx plugin, or a 20.10-22.x CLI (BuildKit built in; 23+ moved it to buildx)."""
    if buildx:
        return True
    try:
        major = int(client_version.split(".", 1)[0])
    except ValueError:
        return False
    return 18 < major < 23


def parse_docker_version(stdout: bytes | None) -> tuple[str, str]:
    """``(client version, server version)`` from ``docker version --format '{{json .}}'``."""
    try:
        doc = json.loads((stdout or b"{}").decode(errors="replace") or "{}")
    except ValueError:
        return "", ""
    if not isinstance(doc, dict):
        return "", ""
    client = doc.get("Client") or {}
    server = doc.get("Server") or {}
    return str(client.get("Version") or ""), str(server.get("Version") or "") if isinstance(
        server, dict
    ) else ""


def base_command(kind: str, settings: DockerSettings, *, config_dir: Path | None = None) -> list[str]:
    """The builder's command prefix, as python-on-whales composes it (global flags included)."""
    from python_on_whales import DockerClient
    from python_on_whales.client_config import ClientNotFoundError

    try:
        if kind == "docker":
            client = DockerClient(
                client_call=[settings.cli],
                host=settings.host or None,
                config=str(config_dir) if config_dir is not None else None,
                client_type="docker",
            )
        else:
            call = [settings.podman, *PODMAN_GLOBAL_FLAGS]
            if settings.podman_root:
                call += ["--root", settings.podman_root, "--runroot", f"{settings.podman_root}/run"]
            client = DockerClient(client_call=call, client_type="podman")
        return [str(part) for part in client.client_config.docker_cmd]
    except ClientNotFoundError:
        binary = settings.cli if kind == "docker" else settings.podman
        raise HandlerError(f"{kind} builder: {binary!r} is not installed (not on PATH)") from None


@dataclass(frozen=True)
class BuildSpec:
    context: Path
    dockerfile: Path
    tags: Sequence[str]
    iidfile: Path
    target: str = ""
    network: str = ""
    #: ``--build-arg``, ``--label`` and ``--secret`` flags, already composed.
    flags: Sequence[str] = field(default_factory=tuple)


@dataclass(frozen=True)
class Builder:
    kind: str
    command: tuple[str, ...]
    version: str
    buildkit: bool

    @property
    def env(self) -> dict[str, str]:
        """The builder's environment on top of the minimal one."""
        if self.kind == "docker":
            return {"DOCKER_BUILDKIT": "1" if self.buildkit else "0"}
        return {"BUILDAH_ISOLATION": "chroot"}

    @property
    def supports_secrets(self) -> bool:
        return self.kind == "podman" or self.buildkit

    def describe(self) -> str:
        mode = "" if self.kind == "podman" else (" with BuildKit" if self.buildkit else " (legacy builder)")
        return f"{self.kind} {self.version}{mode}".strip()

    def build_argv(self, spec: BuildSpec) -> list[str]:
        argv = [*self.command, "build", "--file", str(spec.dockerfile), "--iidfile", str(spec.iidfile)]
        if self.kind == "podman":
            argv += ["--isolation", "chroot", "--layers", "--format", "docker"]
        elif self.buildkit:
            argv += ["--progress", "plain"]
        else:  # the legacy builder keeps a failed step's container unless told otherwise
            argv += ["--force-rm"]
        for tag in spec.tags:
            argv += ["--tag", tag]
        if spec.target:
            argv += ["--target", spec.target]
        if spec.network:
            argv += ["--network", spec.network]
        argv += list(spec.flags)
        argv.append(str(spec.context))
        return argv

    def push_argv(
        self, ref: str, *, auth_file: Path | None, tls_verify: bool, digest_file: Path
    ) -> list[str]:
        if self.kind == "podman":
            argv = [*self.command, "push", f"--tls-verify={'true' if tls_verify else 'false'}"]
            argv += ["--digestfile", str(digest_file)]
            if auth_file is not None:
                argv += ["--authfile", str(auth_file)]
            return [*argv, ref]
        return [*self.command, "push", ref]

    def remove_argv(self, refs: Sequence[str]) -> list[str]:
        return [*self.command, "image", "rm", "--force", *refs]

    def prune_argv(self, label: str) -> list[str]:
        return [*self.command, "image", "prune", "--force", "--filter", f"label={label}"]
