"""``runner mng`` in container mode against the real dockerd (scripts/services.sh).

No image can be pulled here, so the runner image is a stand-in made locally: a root filesystem
with the static busybox, imported with ``docker import`` under three tags of one repository.
Its ``run`` serves ``/readyz`` with busybox httpd on the port of ``RUNNER_HEALTH_ADDR``, after
checking that the workload's token file is mounted where ``RUNNER_API_TOKEN_FILE`` says; the
``broken`` tag has no ``readyz`` file (404 forever): the version that fails its health check.
"""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.mng.harness import MngHarness, wait_until
from tests.support.controlplane import ControlPlaneProcess
from tests.support.tools import in_ci, require_tool

pytestmark = [pytest.mark.mng, pytest.mark.docker]

IMAGE = "byoc-test/mng-runner"
ENTRY = """#!/bin/sh
[ "$1" = run ] || exit 64
[ -r "$RUNNER_API_TOKEN_FILE" ] || { echo "no token file at $RUNNER_API_TOKEN_FILE" >&2; exit 3; }
mkdir -p /www
[ -f /ready ] && echo '{"ok": true}' > /www/readyz
echo "stand-in runner $(cat /version) on ${RUNNER_HEALTH_ADDR}"
exec httpd -f -p "127.0.0.1:${RUNNER_HEALTH_ADDR##*:}" -h /www
"""


def _rootfs(version: str, ready: bool) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:

        def add(name: str, data: bytes, mode: int = 0o644) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))

        for name in ("bin", "tmp"):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        add("bin/busybox", Path("/bin/busybox").read_bytes(), 0o755)
        for applet in ("sh", "mkdir", "echo", "cat", "httpd"):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
        add("entry.sh", ENTRY.encode(), 0o755)
        add("version", version.encode())
        if ready:
            add("ready", b"")
    return buf.getvalue()


@pytest.fixture(scope="module")
def stand_in_images(tmp_path_factory: pytest.TempPathFactory) -> str:
    require_tool("docker")
    if not os.environ.get("DOCKER_HOST"):
        message = 'DOCKER_HOST is not set (eval "$(scripts/services.sh env)")'
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    if not Path("/bin/busybox").is_file():
        pytest.fail("static busybox (/bin/busybox) is missing", pytrace=False)
    base = tmp_path_factory.mktemp("images")
    for tag, ready in (("1", True), ("2", True), ("broken", False)):
        tar = base / f"{tag}.tar"
        tar.write_bytes(_rootfs(tag, ready))
        subprocess.run(
            [
                "docker",
                "import",
                "--change",
                'ENTRYPOINT ["/bin/sh", "/entry.sh"]',
                str(tar),
                f"{IMAGE}:{tag}",
            ],
            check=True,
            capture_output=True,
        )
    return IMAGE


def _docker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=False)


@pytest.fixture
def container_mng(
    mng_cp: ControlPlaneProcess, stand_in_images: str, tmp_path: Path
) -> Iterator[Callable[..., MngHarness]]:
    name = f"mng-test-{tmp_path.name[-12:].replace('_', '-').strip('-')}-{os.getpid()}"
    made: list[MngHarness] = []

    def make(**env: str) -> MngHarness:
        harness = MngHarness(mng_cp, tmp_path / "mng", mode="container")
        harness.extra.update(
            {
                "RUNNER_MNG_IMAGE": stand_in_images,
                "RUNNER_MNG_VERSION": "1",
                "RUNNER_MNG_CONTAINER_NAME": name,
                "RUNNER_MNG_STATE_VOLUME": f"{name}-state",
                "RUNNER_MNG_HEALTH_DEADLINE": "8",
                **env,
            }
        )
        made.append(harness)
        return harness

    yield make
    for harness in made:
        harness.kill()
        harness.operator.close()
    _docker("rm", "-f", name)
    _docker("volume", "rm", "-f", f"{name}-state")


def _container(name: str) -> dict[str, str]:
    out = _docker(
        "inspect",
        "--format",
        '{{.Id}} {{.State.Running}} {{index .Config.Labels "io.byoc-runner.version"}}',
        name,
    )
    if out.returncode != 0:
        return {}
    cid, running, version = out.stdout.split()
    return {"id": cid, "running": running, "version": version}


def test_container_mode_update_rollback_crash_and_adoption(container_mng: Callable[..., MngHarness]) -> None:
    mng = container_mng().start()
    name = mng.extra["RUNNER_MNG_CONTAINER_NAME"]
    mng.wait_mng_ready()
    mng.wait_workload_ready(30)
    first = _container(name)
    assert first["version"] == "1", mng.tail()

    # Update to tag 2 (present locally, so nothing is pulled) recreates the container.
    job = mng.submit("mng-runner-update-version", metadata={"version": "2"})
    assert mng.wait_job(job, timeout=60)["status"] == "finished", mng.tail()
    second = _container(name)
    assert second["version"] == "2"
    assert second["id"] != first["id"]
    assert mng.workload_ready()

    # The broken tag never answers /readyz 200: rolled back to 2, the job fails saying so.
    job = mng.submit("mng-runner-update-version", metadata={"version": "broken"})
    assert mng.wait_job(job, timeout=60)["status"] == "failed", mng.tail()
    message = str(mng.result(job).get("error_metadata", {}).get("message", ""))
    assert "version broken failed its health check (/readyz)" in message
    assert "rolled back to 2 and is ready again" in message
    assert _container(name)["version"] == "2"
    assert mng.workload_ready()

    # kill -9 of the container's processes: a crash, reported, and the container recreated.
    before = _container(name)["id"]
    assert _docker("kill", "--signal", "KILL", name).returncode == 0
    wait_until(lambda: mng.events("runner workload crashed; restarting it"), 20, "the crash report", mng.tail)
    mng.wait_workload_ready(30)
    assert _container(name)["id"] != before
    assert mng.metric("byoc_runner_mng_workload_crashes_total") == 1

    # kill -9 of mng: dockerd keeps the container; a new mng adopts it by name and label.
    running = _container(name)["id"]
    mng.kill()
    assert mng.workload_ready()
    mng.start()
    mng.wait_mng_ready()
    wait_until(lambda: mng.events("adopted the running workload"), 15, "adoption", mng.tail)
    assert _container(name)["id"] == running

    # mng-shut-down drains (docker stop: SIGTERM) and mng exits 0.
    job = mng.submit("mng-shut-down")
    assert mng.wait_job(job)["status"] == "finished"
    assert mng.wait_exit(30) == 0
    assert _container(name) == {}
