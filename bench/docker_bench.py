"""docker-build benchmark: the runner's docker-build job vs bare ``docker build`` + ``docker push``.

The real dockerd of scripts/services.sh (``DOCKER_HOST``), a docker CLI with BuildKit, and a
real registry on loopback. Each round builds two contexts of the same shape but different
content (so neither side gets the other's cache hits): a busybox base image imported from the
static busybox, a seed file, and ``--layers`` RUN steps each writing ``--mb`` MB of random data
(the layers the push must move). The git source stays tiny, so the clone does not dominate.

* **job**: ``DockerBuildHandler`` as the executor drives it (``runner.testing.run_handler``):
  clone from a ``file://`` repository, resolve the paths, probe and choose the builder, build,
  push, read the digest back, remove the local image;
* **bare**: ``DOCKER_BUILDKIT=1 docker build -t REF ctx`` then ``docker push REF``.

Rounds alternate the order. Prints each round, the medians and the ratio job / bare (target
<= 1.10). Then the two push paths the issue asks to compare, on the bare side's image: the
builder pushing to the destination itself (what the job does) vs. the reference's route, a push
to a local loopback registry plus a ``handlers.oci`` copy from there to the destination.

Usage: ``DOCKER_HOST=unix:///tmp/runner-test-svc/docker.sock python bench/docker_bench.py
[--rounds N] [--layers N] [--mb N]``.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import anyio  # noqa: E402
import structlog  # noqa: E402

from handlers.docker.build import DockerBuildHandler  # noqa: E402
from handlers.oci.client import RegistryClient  # noqa: E402
from handlers.oci.copy import copy_image  # noqa: E402
from runner.testing import run_handler  # noqa: E402
from tests.docker.conftest import BASE_IMAGE, buildkit_cli, busybox_rootfs_tar  # noqa: E402
from tests.support.registry import start_registry  # noqa: E402


def dockerfile(layers: int, mb: int) -> str:
    lines = [f"FROM {BASE_IMAGE}", "COPY seed.txt /seed.txt"]
    lines += [f"RUN head -c {mb * 1024 * 1024} /dev/urandom > /data{i}" for i in range(layers)]
    return "\n".join(lines) + "\n"


def make_repo(path: Path, layers: int, mb: int) -> str:
    path.mkdir(parents=True)
    (path / "Dockerfile").write_text(dockerfile(layers, mb))
    (path / "seed.txt").write_text(uuid.uuid4().hex)
    git = ["git", "-C", str(path), "-c", "user.email=bench@local", "-c", "user.name=bench"]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "bench"], check=True)
    return f"file://{path}"


def _child_seconds(records: list[Any], verb: str) -> float:
    """From the ``$ argv`` record of the child whose argv holds ``verb`` to its exit record."""
    for i, record in enumerate(records):
        if record.message.startswith("$ ") and verb in record.message:
            for later in records[i + 1 :]:
                if "exited with code" in later.message:
                    return float(later.at - record.at)
    return float("nan")


class Bench:
    def __init__(self, work: Path, cli: str, host: str, registry: str, local: str) -> None:
        self.work, self.cli, self.host, self.registry, self.local = work, cli, host, registry, local

    def docker(self, *args: str) -> None:
        env = {**os.environ, "DOCKER_HOST": self.host, "DOCKER_BUILDKIT": "1"}
        done = subprocess.run([self.cli, *args], env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{self.cli} {' '.join(args)} failed: {done.stderr[-2000:]}")

    async def job(self, url: str, tag: str) -> tuple[float, float, float]:
        plan = {
            "git_source": {"url": url, "ref": "main"},
            "dst_registry": {"RegistryType": "private_oci", "Repository": f"{self.registry}/bench/job"},
            "docker_build_plan": {},
        }
        workspace = self.work / f"ws-{tag}"
        workspace.mkdir()
        started = time.perf_counter()
        run = await run_handler(
            DockerBuildHandler(),
            plan,
            job_type="docker-build",
            workspace=workspace,
            owner_id=tag,
            env={
                "RUNNER_DOCKER_BUILDER": "docker",
                "RUNNER_DOCKER_CLI": self.cli,
                "RUNNER_DOCKER_HOST": self.host,
            },
        )
        elapsed = time.perf_counter() - started
        assert run.outputs is not None
        assert run.outputs["image"]["digest"].startswith("sha256:")
        shutil.rmtree(workspace, ignore_errors=True)
        return elapsed, _child_seconds(run.log.records, " build "), _child_seconds(run.log.records, " push ")

    def bare(self, context: Path, tag: str) -> tuple[float, float]:
        ref = f"{self.registry}/bench/bare:{tag}"
        started = time.perf_counter()
        self.docker("build", "--network", "host", "--progress", "plain", "-t", ref, str(context))
        built = time.perf_counter()
        self.docker("push", ref)
        return time.perf_counter() - started, time.perf_counter() - built

    async def push_via_local(self, tag: str) -> float:
        """The reference's route for the image the bare side built: a push to a loopback
        registry, then a ``handlers.oci`` copy to the destination."""
        src_ref = f"{self.registry}/bench/bare:{tag}"
        local_ref = f"{self.local}/bench/stage:{tag}"
        started = time.perf_counter()
        self.docker("tag", src_ref, local_ref)
        self.docker("push", local_ref)
        async with RegistryClient(self.local) as src, RegistryClient(self.registry) as dst:
            await copy_image(src, "bench/stage", tag, dst, "bench/via-local", tag)
        return time.perf_counter() - started


async def measure(bench: Bench, rounds: int, layers: int, mb: int) -> None:
    jobs: list[float] = []
    bares: list[float] = []
    direct: list[float] = []
    via_local: list[float] = []
    for i in range(rounds):
        job_url = make_repo(bench.work / f"job-{i}", layers, mb)
        bare_ctx = bench.work / f"bare-{i}"
        make_repo(bare_ctx, layers, mb)
        if i % 2 == 0:
            job, job_build, job_push = await bench.job(job_url, f"r{i}")
            bare, push = bench.bare(bare_ctx, f"r{i}")
        else:
            bare, push = bench.bare(bare_ctx, f"r{i}")
            job, job_build, job_push = await bench.job(job_url, f"r{i}")
        local = await bench.push_via_local(f"r{i}")
        bench.docker(
            "image", "rm", "--force", f"{bench.registry}/bench/bare:r{i}", f"{bench.local}/bench/stage:r{i}"
        )
        jobs.append(job)
        bares.append(bare)
        direct.append(push)
        via_local.append(local)
        print(
            f"round {i}: job {job:.3f}s (build {job_build:.3f}, push {job_push:.3f})  "
            f"bare build+push {bare:.3f}s (push {push:.3f})  "
            f"push via local registry + oci copy {local:.3f}s",
            flush=True,
        )
    job_m, bare_m = statistics.median(jobs), statistics.median(bares)
    direct_m, local_m = statistics.median(direct), statistics.median(via_local)
    print(f"median  job {job_m:.3f}s  bare docker build + docker push {bare_m:.3f}s")
    print(f"ratio   job / bare {job_m / bare_m:.3f}  (target <= 1.10)")
    paired = statistics.median(j / b for j, b in zip(jobs, bares, strict=True))
    print(f"ratio   median of the rounds' job / bare {paired:.3f}  (each round's pair ran back to back)")
    print(f"median  push: builder push {direct_m:.3f}s, local registry + handlers.oci copy {local_m:.3f}s")
    print(
        f"ratio   push via local registry + copy / builder push {local_m / direct_m:.3f}"
        "  (the job pushes directly)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--layers", type=int, default=3, help="RUN steps writing random data")
    parser.add_argument("--mb", type=int, default=8, help="MB of random data per layer")
    args = parser.parse_args()
    host = os.environ.get("DOCKER_HOST", "")
    if not host:
        sys.exit('DOCKER_HOST is not set: eval "$(scripts/services.sh env)"')
    cli = buildkit_cli()
    if cli is None:
        sys.exit("no docker CLI with BuildKit (buildx, or the docker.io 20.10 CLI at /usr/bin/docker)")
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    work = Path(tempfile.mkdtemp(prefix="docker-bench-"))
    registry = start_registry(work / "registry")
    local = start_registry(work / "local-registry")
    try:
        tar = work / "rootfs.tar"
        tar.write_bytes(busybox_rootfs_tar())
        bench = Bench(work, cli, host, registry.host, local.host)
        bench.docker("import", str(tar), BASE_IMAGE)
        print(f"docker CLI {cli}, dockerd at {host}; {args.layers} layers of {args.mb} MB per image")
        anyio.run(measure, bench, args.rounds, args.layers, args.mb)
    finally:
        registry.stop()
        local.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
