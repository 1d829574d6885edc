"""The Dockerfile, built for real by dockerd and run.

The production base (python:3.11-slim-bookworm) cannot be pulled here, so the build uses a
stand-in with the same OS and Python minor version: a debootstrap'ed Debian bookworm with
python3.11, made once by scripts/install-tools.sh and `docker import`ed. Everything else is the
real Dockerfile: the checksum-verified tool downloads (served from loopback, with the checksums of
those archives), the pip install of the locked set (from a wheelhouse on loopback instead of
PyPI), the apt step, the user, the entrypoint and the health check. The built image then runs `runner run`.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from runner import __version__
from tests.deploy.conftest import REPO, TOOLS_DIR
from tests.support.tools import in_ci, require_tool

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]

BASE_TAR = TOOLS_DIR / "images" / "py311-bookworm-rootfs.tar"
BASE_IMAGE = "local/byoc-runner-base:py311-bookworm"
IMAGE = "local/byoc-runner:test"
CONTEXT_PATHS = [
    "pyproject.toml",
    "runner",
    "handlers",
    "controlplane",
    "requirements/runtime.txt",
    "scripts/fetch-verified.py",
    "Dockerfile",
    ".dockerignore",
]
TOKEN = "tok-image-test-5e1d9c0b7a"


def missing(message: str) -> None:
    if in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def docker(
    *args: str, timeout: float = 120, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **env} if env else None
    proc = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False, env=full_env
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:2])} failed ({proc.returncode}): {proc.stderr[-3000:]}")
    return proc


@dataclass(frozen=True)
class BuildInputs:
    context: Path
    build_args: dict[str, str]


def _serve(root: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a: object, **kw: object) -> None:
            super().__init__(*a, directory=str(root), **kw)  # type: ignore[arg-type]

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _prepare(tmp: Path) -> tuple[Path, Path]:
    """The build context (the repo's files) and a web root with the tools and a wheelhouse."""
    context = tmp / "context"
    for rel in CONTEXT_PATHS:
        src, dst = REPO / rel, context / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, dst)
    readme = REPO / "README.md"
    (context / "README.md").write_text(readme.read_text() if readme.exists() else "# byoc-runner\n")

    www = tmp / "www"
    wheels = www / "wheels"
    wheels.mkdir(parents=True)
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    lock = context / "requirements" / "runtime.txt"
    for cmd in (
        # The locked files themselves (the build checks their hashes), and the build backend.
        [*pip, "download", "--only-binary", ":all:", "--require-hashes", "-r", str(lock), "-d", str(wheels)],
        [*pip, "download", "--only-binary", ":all:", "-d", str(wheels), "setuptools>=68", "wheel"],
    ):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
        assert proc.returncode == 0, proc.stderr[-3000:]

    terraform = Path(require_tool("terraform"))
    helm = TOOLS_DIR / "bin" / "helm"
    if not helm.is_file():
        helm = Path(require_tool("helm", hint="scripts/install-tools.sh installs it"))
    with zipfile.ZipFile(www / "terraform_linux_amd64.zip", "w", compression=zipfile.ZIP_STORED) as zf:
        zf.write(terraform, "terraform")
    with tarfile.open(www / "helm-linux-amd64.tar.gz", "w:gz", compresslevel=1) as tf:
        tf.add(helm, "linux-amd64/helm")
    return context, www


@pytest.fixture(scope="module")
def build_inputs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BuildInputs]:
    require_tool("docker")
    if docker("info", check=False).returncode != 0:
        missing("dockerd is not reachable (scripts/services.sh start; DOCKER_HOST)")
    if docker("image", "inspect", BASE_IMAGE, check=False).returncode != 0:
        if not BASE_TAR.is_file():
            missing(f"{BASE_TAR} is missing (scripts/install-tools.sh builds it)")
        proc = subprocess.run(
            ["docker", "import", str(BASE_TAR), BASE_IMAGE], capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, proc.stderr
    context, www = _prepare(tmp_path_factory.mktemp("image"))
    server, base = _serve(www)
    try:
        yield BuildInputs(
            context,
            {
                "PYTHON_IMAGE": BASE_IMAGE,
                "TERRAFORM_URL": f"{base}/terraform_linux_amd64.zip",
                "TERRAFORM_SHA256": _sha256(www / "terraform_linux_amd64.zip"),
                "HELM_URL": f"{base}/helm-linux-amd64.tar.gz",
                "HELM_SHA256": _sha256(www / "helm-linux-amd64.tar.gz"),
                "PIP_ARGS": f"--no-index --find-links {base}/wheels/",
            },
        )
    finally:
        server.shutdown()
        server.server_close()


def build(inputs: BuildInputs, tag: str, *extra: str, **overrides: str) -> subprocess.CompletedProcess[str]:
    args = {**inputs.build_args, **overrides}
    flags = [f"--build-arg={k}={v}" for k, v in args.items()]
    # --network host: the build reaches the loopback web root; nothing else is served to it.
    return docker(
        "build", "--network", "host", "-t", tag, *flags, *extra, str(inputs.context), timeout=840, check=False
    )


@pytest.fixture(scope="module")
def image(build_inputs: BuildInputs) -> Iterator[str]:
    proc = build(build_inputs, IMAGE)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    yield IMAGE
    # About 700 MB a build: do not let repeated runs fill the dockerd data root.
    docker("rmi", "-f", IMAGE, "local/byoc-runner:bad-sum", check=False)
    docker("image", "prune", "-f", check=False)


def test_image_config(image: str) -> None:
    config = json.loads(docker("image", "inspect", image).stdout)[0]["Config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["runner"]
    assert config["Cmd"] == ["run"]
    assert "/var/lib/byoc-runner" in config["Volumes"]
    assert config["StopSignal"] == "SIGTERM"
    env = dict(e.split("=", 1) for e in config["Env"])
    assert env["RUNNER_IN_CONTAINER"] == "1"
    assert env["RUNNER_STATE_DIR"] == "/var/lib/byoc-runner"
    assert not [k for k in env if "TOKEN" in k or "PASSWORD" in k]
    assert config["Healthcheck"]["Test"][0] == "CMD"
    assert "/healthz" in config["Healthcheck"]["Test"][-1]


def test_image_runs_unprivileged_with_its_tools(image: str) -> None:
    assert (
        docker("run", "--rm", "--pull", "never", "--network", "none", image, "version").stdout.strip()
        == __version__
    )
    script = (
        "id -u; id -g; terraform version | sed -n 1p; helm version --short; git --version;"
        " touch $RUNNER_STATE_DIR/w && echo writable"
    )
    out = docker(
        "run", "--rm", "--pull", "never", "--network", "none", "--entrypoint", "sh", image, "-c", script
    ).stdout
    lines = out.splitlines()
    assert lines[:2] == ["10001", "10001"]
    assert lines[2].startswith("Terraform v")
    assert lines[3].startswith("v3.17.2")
    assert lines[4].startswith("git version")
    assert lines[5] == "writable"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_daemon_answers_its_health_check_and_drains_on_sigterm(image: str) -> None:
    port = _free_port()
    name = f"byoc-runner-test-{os.getpid()}"
    docker("rm", "-f", name, check=False)
    docker(
        "run", "-d", "--name", name, "--pull", "never", "--network", "host",
        "-e", "RUNNER_ID=runr-image-test", "-e", "RUNNER_API_URL=http://127.0.0.1:9",  # nothing listens there
        "-e", "RUNNER_API_TOKEN",  # from the environment below, never in argv
        "-e", f"RUNNER_HEALTH_ADDR=127.0.0.1:{port}", "-e", "RUNNER_DRAIN_GRACE=5",
        image,
        env={"RUNNER_API_TOKEN": TOKEN},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        body = None
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                    body = json.loads(response.read())
                    break
            except OSError:
                time.sleep(0.3)
        assert body is not None, docker("logs", name, check=False).stderr[-2000:]
        assert body["ok"] is True
        # The image's own HEALTHCHECK command, run inside the container, passes.
        test = json.loads(docker("inspect", name).stdout)[0]["Config"]["Healthcheck"]["Test"]
        assert docker("exec", name, *test[1:], check=False).returncode == 0
        started = time.monotonic()
        docker("stop", "-t", "30", name)
        assert time.monotonic() - started < 20, "SIGTERM should drain an idle runner at once"
        state = json.loads(docker("inspect", name).stdout)[0]["State"]
        assert state["ExitCode"] == 0
        logs = docker("logs", name).stdout + docker("logs", name).stderr
        assert "SIGTERM" in logs
        assert TOKEN not in logs
    finally:
        docker("rm", "-f", name, check=False)


def test_a_wrong_tool_checksum_fails_the_build(build_inputs: BuildInputs) -> None:
    proc = build(build_inputs, "local/byoc-runner:bad-sum", "--target", "tools", TERRAFORM_SHA256="0" * 64)
    assert proc.returncode != 0
    assert "SHA256 mismatch" in proc.stdout + proc.stderr
