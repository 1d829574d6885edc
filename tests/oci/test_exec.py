"""End to end: ``runner exec`` (embedded control plane, real executor) runs the oci handlers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from handlers.oci.client import RegistryClient
from tests.support.registry import PASSWORD, USER, RegistryServer, push_random_image, skopeo_raw_digest

pytestmark = [pytest.mark.oci, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]


def runner_exec(
    tmp_path: Path, job_type: str, plan: dict[str, Any], *extra: str
) -> subprocess.CompletedProcess[str]:
    plan_file = tmp_path / f"{job_type}.json"
    plan_file.write_text(json.dumps(plan))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "runner",
            "exec",
            "--type",
            job_type,
            "--plan",
            str(plan_file),
            "--state-dir",
            str(tmp_path / "state"),
            "--log-format",
            "console",
            *extra,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def _push(host: str, repo: str, tag: str, seed: str) -> Any:
    async with RegistryClient(host) as client:
        return await push_random_image(client, repo, tag, [50_000, 1234], seed=seed)


def test_oci_sync_through_runner_exec(
    oci_registry: RegistryServer, oci_basic_registry: RegistryServer, tmp_path: Path
) -> None:
    import anyio

    pushed = anyio.run(_push, oci_registry.host, "e2e/app", "bld1", "e2e-sync")
    plan = {
        "src_registry": {"RegistryType": "private_oci", "Repository": f"{oci_registry.host}/e2e/app"},
        "src_tag": "bld1",
        "dst_registry": {
            "RegistryType": "private_oci",
            "Repository": "e2e/install",
            "LoginServer": oci_basic_registry.host,
            "OCIAuth": {"Username": USER, "Password": PASSWORD},
        },
        "dst_tag": "dpl1",
    }
    done = runner_exec(tmp_path, "oci-sync", plan)
    assert done.returncode == 0, done.stderr[-3000:]
    outputs = json.loads(done.stdout)
    assert outputs["image"]["digest"] == pushed.digest
    assert outputs["image"]["repository"] == f"{oci_basic_registry.host}/e2e/install"
    assert outputs["image"]["platform"]["architecture"] == "amd64"
    assert "copied blob" in done.stderr
    assert PASSWORD not in done.stderr
    assert PASSWORD not in done.stdout
    oracle = skopeo_raw_digest(f"{oci_basic_registry.host}/e2e/install:dpl1", creds=f"{USER}:{PASSWORD}")
    assert oracle == pushed.digest


def test_container_image_build_through_runner_exec(
    oci_registry: RegistryServer, oci_registry_b: RegistryServer, tmp_path: Path
) -> None:
    import anyio

    pushed = anyio.run(_push, oci_registry.host, "e2e/upstream", "1.0", "e2e-cib")
    plan = {
        "dst_registry": {"RegistryType": "private_oci", "Repository": f"{oci_registry_b.host}/e2e/build"},
        "dst_tag": "unused",
        "container_image_pull_plan": {
            "image": f"{oci_registry.host}/e2e/upstream",
            "tag": "1.0",
            "repo_config": {"RegistryType": "public_oci", "Repository": f"{oci_registry.host}/e2e/upstream"},
        },
    }
    done = runner_exec(tmp_path, "container-image-build", plan, "--owner-id", "bldE2E")
    assert done.returncode == 0, done.stderr[-3000:]
    outputs = json.loads(done.stdout)
    assert outputs == {
        "image": {"tag": "bldE2E", "digest": pushed.digest, "repository": f"{oci_registry_b.host}/e2e/build"}
    }
    assert skopeo_raw_digest(f"{oci_registry_b.host}/e2e/build:bldE2E") == pushed.digest


def test_bad_input_fails_the_job_with_a_clear_message(oci_registry: RegistryServer, tmp_path: Path) -> None:
    plan = {
        "src_registry": {"RegistryType": "quay", "Repository": f"{oci_registry.host}/e2e/app"},
        "src_tag": "bld1",
        "dst_registry": {"RegistryType": "private_oci", "Repository": f"{oci_registry.host}/e2e/x"},
        "dst_tag": "dpl1",
    }
    done = runner_exec(tmp_path, "oci-sync", plan)
    assert done.returncode == 1
    assert "unknown registry type 'quay'" in done.stderr
