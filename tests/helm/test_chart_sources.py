"""Charts from a classic HTTP helm repository (index.yaml, basic auth) served on loopback:
helm-chart-build's ``helm_repo_config``, with the real helm and the real registry."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from handlers.helm.build import HelmChartBuildHandler
from handlers.helm.deploy import HelmDeployHandler
from handlers.helm.repo import display_url, parse_repo, repositories_yaml
from runner.sdk import ToolSettings
from runner.testing import make_context, run_handler
from tests.helm.chart_repo import PASSWORD, USER, ChartRepoServer, chart_repo  # noqa: F401 - fixture
from tests.helm.conftest import deploy_plan, registry_config
from tests.helm.test_deploy import decode
from tests.kube.conftest import Cluster
from tests.support.registry import RegistryServer


def test_credentials_leave_the_url() -> None:
    repo = parse_repo("https://u%40x:p%2Fw@charts.example.com:8443/stable/", "web", "1.2.3")
    assert repo.url == "https://charts.example.com:8443/stable"
    assert (repo.username, repo.password) == ("u@x", "p/w")
    assert "p/w" not in repr(repo)
    assert display_url("https://u:p@h/x") == "https://h/x"
    assert b"password: p/w" in repositories_yaml(repo)
    assert b"password" not in repositories_yaml(parse_repo("http://h/c", "web"))


def build_plan(registry: RegistryServer, repo_url: str, version: str = "0.4.0") -> dict[str, Any]:
    return {
        "dst_registry": registry_config(registry, "builds/from-repo"),
        "helm_build_plan": {"HelmRepoConfig": {"RepoURL": repo_url, "Chart": "demo", "Version": version}},
    }


async def build(plan: dict[str, Any], tmp_path: Path, tools: ToolSettings, tag: str) -> Any:
    ws = tmp_path / f"build-{uuid.uuid4().hex[:6]}"
    ws.mkdir()
    ctx = make_context("helm-chart-build", plan, workspace=ws, owner_id=tag, tools=tools)
    return await run_handler(HelmChartBuildHandler(), ctx=ctx, raise_errors=False)


@pytest.mark.kube
@pytest.mark.anyio
async def test_build_from_a_classic_repository_with_basic_auth(
    chart_repo: ChartRepoServer,  # noqa: F811
    helm_bin: str,
    oci_registry: RegistryServer,
    kube_cluster: Cluster,
    kube_namespace: str,
    helm_tools: ToolSettings,
    tmp_path: Path,
) -> None:
    chart_repo.add_chart(helm_bin, version="0.3.0")
    chart_repo.add_chart(helm_bin, version="0.4.0")
    run = await build(build_plan(oci_registry, chart_repo.url_with_auth), tmp_path, helm_tools, "bld-repo")
    assert run.error is None, run.error
    assert run.outputs["chart"] == {"name": "demo", "version": "0.4.0"}
    assert run.outputs["digest"].startswith("sha256:")
    assert "/charts/index.yaml" in chart_repo.paths
    assert "/charts/demo-0.4.0.tgz" in chart_repo.paths
    assert PASSWORD not in run.log.text()
    commands = [m for m in run.log.messages() if m.startswith("$ ")]
    assert commands
    assert not any(USER in m for m in commands), "no credential on argv"

    # The pushed artifact is a chart helm-chart-deploy plans from.
    ws = tmp_path / "deploy"
    ws.mkdir()
    source = {"src_registry": registry_config(oci_registry, "builds/from-repo"), "src_tag": "bld-repo"}
    ctx = make_context(
        "helm-chart-deploy",
        deploy_plan(kube_cluster, kube_namespace, source),
        workspace=ws,
        operation="create-apply-plan",
        tools=helm_tools,
    )
    planned = await run_handler(HelmDeployHandler(), ctx=ctx)
    assert decode(planned.result)["op"] == "install"


@pytest.mark.anyio
async def test_build_from_a_repository_with_a_wrong_password_fails(
    chart_repo: ChartRepoServer,  # noqa: F811
    helm_bin: str,
    oci_registry: RegistryServer,
    helm_tools: ToolSettings,
    tmp_path: Path,
) -> None:
    chart_repo.add_chart(helm_bin)
    wrong = chart_repo.url_with_auth.replace(PASSWORD, "wrong-pass")
    run = await build(build_plan(oci_registry, wrong), tmp_path, helm_tools, "bld-bad")
    assert run.error is not None
    assert "401" in str(run.error) or "Unauthorized" in str(run.error)
    assert "wrong-pass" not in str(run.error)
    assert "wrong-pass" not in run.log.text()
    assert chart_repo.refused >= 1
    assert not chart_repo.paths
