"""Fixtures of the docker tier: the real dockerd of scripts/services.sh, podman, a base image.

No base image can be pulled here, so the tier makes its own: a root filesystem holding the
static busybox (``/bin/busybox`` of apt ``busybox-static``) and its applet links, imported into
dockerd (``docker import``) and into a per-session podman store as ``byoc-test/busybox:1``.
In CI (``CI=true``) a missing dockerd, docker CLI, podman or busybox fails the test.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.tools import in_ci, require_tool

BASE_IMAGE = "byoc-test/busybox:1"
APPLETS = (
    "sh", "cat", "echo", "sleep", "wc", "ls", "mkdir", "cp", "printf", "grep", "true", "false",
    "env", "rm", "test", "tr", "head", "id",
)  # fmt: skip
PODMAN_FLAGS = ("--cgroup-manager=cgroupfs", "--events-backend=file", "--storage-driver=vfs")


def _unavailable(message: str) -> None:
    if in_ci():
        pytest.fail(message + " - .ci/run must provide it", pytrace=False)
    pytest.skip(message)


def busybox_rootfs_tar() -> bytes:
    """A tar of ``/bin/busybox`` plus a symlink per applet the tests' Dockerfiles use."""
    busybox = Path("/bin/busybox")
    if not busybox.is_file():
        _unavailable("static busybox (/bin/busybox) is not installed (apt-get install busybox-static)")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in ("bin", "tmp", "run"):
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if name == "tmp" else 0o755
            tar.addfile(info)
        data = busybox.read_bytes()
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
        for applet in APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
    return buf.getvalue()


@dataclass(frozen=True)
class DockerEnv:
    host: str
    #: A docker CLI with BuildKit (buildx, or a 20.10-22.x CLI): the one secret mounts need.
    buildkit_cli: str
    #: The docker CLI first on PATH (may be a newer client without buildx: the legacy builder).
    path_cli: str

    def run(self, *args: str, cli: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "DOCKER_HOST": self.host}
        return subprocess.run(
            [cli or self.buildkit_cli, *args],
            env=env,
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
        )


def buildkit_cli() -> str | None:
    """A docker CLI that builds with BuildKit: buildx on PATH's docker, else Debian's 20.10 CLI."""
    candidates = [shutil.which("docker"), "/usr/bin/docker"]
    for cli in dict.fromkeys(c for c in candidates if c and os.access(c, os.X_OK)):
        if subprocess.run([cli, "buildx", "version"], capture_output=True).returncode == 0:
            return cli
        out = subprocess.run(
            [cli, "version", "--format", "{{.Client.Version}}"], capture_output=True, text=True
        )
        try:
            major = int(out.stdout.strip().split(".", 1)[0])
        except ValueError:
            continue
        if 18 < major < 23:
            return cli
    return None


@pytest.fixture(scope="session")
def docker_env(tmp_path_factory: pytest.TempPathFactory) -> DockerEnv:
    """dockerd reachable through DOCKER_HOST, with the busybox base image imported."""
    path_cli = require_tool("docker", hint="apt-get install docker.io")
    host = os.environ.get("DOCKER_HOST", "")
    if not host:
        _unavailable('DOCKER_HOST is not set (eval "$(scripts/services.sh env)")')
    cli = buildkit_cli()
    if cli is None:
        _unavailable("no docker CLI with BuildKit (buildx, or the docker.io 20.10 CLI at /usr/bin/docker)")
    assert cli is not None
    env = DockerEnv(host=host, buildkit_cli=cli, path_cli=path_cli)
    if env.run("version", check=False).returncode != 0:
        _unavailable(f"dockerd does not answer at {host} (scripts/services.sh start)")
    tar = tmp_path_factory.mktemp("base") / "rootfs.tar"
    tar.write_bytes(busybox_rootfs_tar())
    env.run("import", str(tar), BASE_IMAGE)
    return env


@dataclass(frozen=True)
class PodmanEnv:
    binary: str
    root: Path

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [self.binary, *PODMAN_FLAGS, "--root", str(self.root), "--runroot", f"{self.root}/run", *args]
        return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=120)


@pytest.fixture(scope="session")
def podman_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PodmanEnv]:
    """A podman store of this session (vfs) with the busybox base image imported."""
    binary = require_tool("podman", hint="apt-get install podman (scripts/install-tools.sh)")
    root = tmp_path_factory.mktemp("podman")
    env = PodmanEnv(binary=binary, root=root / "store")
    tar = root / "rootfs.tar"
    tar.write_bytes(busybox_rootfs_tar())
    env.run("import", str(tar), BASE_IMAGE)
    yield env
    env.run("system", "reset", "--force", check=False)
