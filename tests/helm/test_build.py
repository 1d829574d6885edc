"""helm-chart-build with the real helm, a real git daemon and a real registry, then the artifact it
pushed deployed by helm-chart-deploy into the real apiserver (the real flow, without the sync)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from handlers.helm.build import HelmChartBuildHandler
from handlers.helm.deploy import HelmDeployHandler
from runner.sdk import ToolSettings
from runner.testing import make_context, run_handler
from tests.helm.conftest import DEFAULT_VALUES, TEMPLATES, deploy_plan, registry_config
from tests.kube.conftest import Cluster
from tests.support.registry import RegistryServer
from tests.support.terraform import GitServer, git_server  # noqa: F401 - fixture

pytestmark = pytest.mark.kube


def chart_files() -> dict[str, str]:
    files = {
        "charts/demo/Chart.yaml": yaml.safe_dump(
            {
                "apiVersion": "v2",
                "name": "demo",
                "version": "0.3.0",
                "dependencies": [{"name": "lib", "version": "0.1.0", "repository": "file://../lib"}],
            }
        ),
        "charts/demo/values.yaml": yaml.safe_dump(DEFAULT_VALUES),
        "charts/lib/Chart.yaml": yaml.safe_dump({"apiVersion": "v2", "name": "lib", "version": "0.1.0"}),
        "charts/lib/templates/lib.yaml": (
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-lib\ndata: {a: b}\n"
        ),
    }
    for name, text in TEMPLATES.items():
        files[f"charts/demo/templates/{name}"] = text
    return files


@pytest.mark.anyio
async def test_build_pushes_chart_tgz_that_deploy_installs(
    git_server: GitServer,  # noqa: F811
    oci_registry: RegistryServer,
    kube_cluster: Cluster,
    kube_namespace: str,
    helm_tools: ToolSettings,
    tmp_path: Path,
) -> None:
    url = git_server.create("helm-chart", chart_files())
    dst = registry_config(oci_registry, "builds/demo")
    plan: dict[str, Any] = {
        "git_source": {"url": url, "ref": "main", "path": "charts/demo"},
        "dst_registry": dst,
        "helm_build_plan": {},
    }
    ws = tmp_path / "build"
    ws.mkdir()
    ctx = make_context("helm-chart-build", plan, workspace=ws, owner_id="bld123", tools=helm_tools)
    run = await run_handler(HelmChartBuildHandler(), ctx=ctx)
    outputs = run.outputs
    assert outputs is not None
    assert outputs["files"] == [{"AbsPath": "", "RelPath": "chart.tgz", "FileType": ""}]
    assert outputs["image"]["tag"] == "bld123"
    assert outputs["digest"].startswith("sha256:")
    assert outputs["chart"] == {"name": "demo", "version": "0.3.0"}
    assert any(m.startswith("$ ") and "dependency build" in m for m in run.log.messages())

    deploy_ws = tmp_path / "deploy"
    deploy_ws.mkdir()
    source = {"src_registry": dst, "src_tag": "bld123"}
    plan_ctx = make_context(
        "helm-chart-deploy",
        deploy_plan(kube_cluster, kube_namespace, source),
        workspace=deploy_ws,
        operation="create-apply-plan",
        tools=helm_tools,
    )
    planned = await run_handler(HelmDeployHandler(), ctx=plan_ctx)
    names = sorted(d["name"] for d in (planned.outputs or {})["diff"])
    assert names == ["demo-hook", "demo-lib", "demo-settings"], "the dependency's objects come with the chart"


@pytest.mark.anyio
async def test_build_without_a_chart_source_fails_clearly(helm_tools: ToolSettings, tmp_path: Path) -> None:
    plan = {
        "dst_registry": {"RegistryType": "private_oci", "Repository": "127.0.0.1:1/x"},
        "helm_build_plan": {"helm_repo_config": {"RepoURL": "", "Chart": "c"}},
    }
    ctx = make_context("helm-chart-build", plan, workspace=tmp_path, owner_id="b1", tools=helm_tools)
    run = await run_handler(HelmChartBuildHandler(), ctx=ctx, raise_errors=False)
    assert run.error is not None
    assert "helm_repo_config" in str(run.error)
    assert json.dumps(run.outputs or {}) == "{}"
