"""helm-chart-build's native Helm OCI chart (``RUNNER_HELM_PUSH_OCI_CHART``), read back by the real
``helm pull``/``helm show`` from a real registry, byte for byte the reference-style artifact's
``chart.tgz``."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from handlers.helm.build import HelmChartBuildHandler
from handlers.oci.artifacts import pull_directory
from handlers.oci.registry import open_registry
from runner.sdk import ToolSettings
from runner.sdk.plans import OCIRegistryRepository
from runner.testing import make_context, run_handler
from tests.helm.conftest import DEFAULT_VALUES, TEMPLATES, registry_config
from tests.support.registry import RegistryServer
from tests.support.terraform import GitServer, git_server  # noqa: F401 - fixture

pytestmark = pytest.mark.kube

VERSION = "0.4.1+build.7"


def chart_repo(git: GitServer) -> str:
    files = {
        "chart/Chart.yaml": yaml.safe_dump(
            {"apiVersion": "v2", "name": "native", "version": VERSION, "description": "a native chart"}
        ),
        "chart/values.yaml": yaml.safe_dump(DEFAULT_VALUES),
        **{f"chart/templates/{name}": text for name, text in TEMPLATES.items()},
    }
    return git.create(f"native-{uuid.uuid4().hex[:6]}", files)


async def build(
    url: str, dst: dict[str, Any], tmp_path: Path, tools: ToolSettings, env: dict[str, str]
) -> dict[str, Any]:
    plan = {
        "git_source": {"url": url, "ref": "main", "path": "chart"},
        "dst_registry": dst,
        "helm_build_plan": {},
    }
    ws = tmp_path / f"ws-{uuid.uuid4().hex[:6]}"
    ws.mkdir()
    ctx = make_context("helm-chart-build", plan, workspace=ws, owner_id="bld9", tools=tools, env=env)
    run = await run_handler(HelmChartBuildHandler(), ctx=ctx)
    assert run.outputs is not None
    return run.outputs


def helm(helm_bin: str, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "HELM_CACHE_HOME": str(home / "c")}
    env |= {"HELM_CONFIG_HOME": str(home / "cf"), "HELM_DATA_HOME": str(home / "d")}
    return subprocess.run([helm_bin, *args], env=env, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.anyio
async def test_build_also_pushes_a_helm_oci_chart_that_helm_pulls(
    git_server: GitServer,  # noqa: F811
    oci_registry: RegistryServer,
    helm_bin: str,
    helm_tools: ToolSettings,
    tmp_path: Path,
) -> None:
    repository = f"builds/n-{uuid.uuid4().hex[:6]}"
    dst = registry_config(oci_registry, repository)
    outputs = await build(
        chart_repo(git_server), dst, tmp_path, helm_tools, {"RUNNER_HELM_PUSH_OCI_CHART": "true"}
    )
    native = outputs["oci_chart"]
    assert native["reference"] == f"oci://{oci_registry.host}/{repository}/native"
    assert native["repository"] == f"{oci_registry.host}/{repository}/native"
    assert native["tag"] == "0.4.1_build.7"
    assert native["digest"].startswith("sha256:")
    assert outputs["image"]["tag"] == "bld9"  # the reference's artifact is still the main output

    home = tmp_path / "helm-home"
    shown = helm(helm_bin, home, "show", "chart", native["reference"], "--version", VERSION, "--plain-http")
    assert shown.returncode == 0, shown.stderr
    chart = yaml.safe_load(shown.stdout)
    assert (chart["name"], chart["version"], chart["description"]) == ("native", VERSION, "a native chart")
    (tmp_path / "p").mkdir()
    pulled = helm(
        helm_bin,
        home,
        "pull",
        native["reference"],
        "--version",
        VERSION,
        "--plain-http",
        "-d",
        str(tmp_path / "p"),
    )
    assert pulled.returncode == 0, pulled.stderr
    assert f"Digest: {native['digest']}" in pulled.stdout + pulled.stderr

    # The same bytes as the reference-style artifact's chart.tgz.
    artifact = tmp_path / "artifact"
    repo = OCIRegistryRepository.model_validate(dst)
    async with await open_registry(repo, config=helm_tools) as target:
        await pull_directory(target, "bld9", artifact)
    [tgz] = list((tmp_path / "p").glob("*.tgz"))
    assert tgz.read_bytes() == (artifact / "chart.tgz").read_bytes()


@pytest.mark.anyio
async def test_no_helm_oci_chart_unless_asked(
    git_server: GitServer,  # noqa: F811
    oci_registry: RegistryServer,
    helm_tools: ToolSettings,
    tmp_path: Path,
) -> None:
    repository = f"builds/n-{uuid.uuid4().hex[:6]}"
    outputs = await build(
        chart_repo(git_server), registry_config(oci_registry, repository), tmp_path, helm_tools, {}
    )
    assert "oci_chart" not in outputs
    tags = httpx.get(f"{oci_registry.url}/v2/{repository}/native/tags/list", timeout=10)
    assert tags.status_code == 404
