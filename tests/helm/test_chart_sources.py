"""Charts from a classic HTTP helm repository (index.yaml, basic auth) served on loopback:
helm-chart-build's ``helm_repo_config``; and helm-chart-deploy's ``helm.chart_source`` (ours, for
``runner exec``): git, ``oci://`` and a classic repository. The real helm, registry and apiserver."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from handlers.helm.build import HelmChartBuildHandler
from handlers.helm.chart_source import parse_chart_source
from handlers.helm.repo import display_url, parse_repo, repositories_yaml
from runner.sdk import HandlerError, ToolSettings
from runner.testing import make_context, run_handler
from tests.helm.chart_repo import PASSWORD, USER, ChartRepoServer, chart_repo  # noqa: F401 - fixture
from tests.helm.conftest import (
    DEFAULT_VALUES,
    TEMPLATES,
    artifact_source,
    deploy_plan,
    registry_config,
    write_chart,
)
from tests.helm.test_deploy import decode, job, plan_and_apply
from tests.kube.conftest import Cluster
from tests.support.registry import RegistryServer
from tests.support.terraform import GitServer, git_server  # noqa: F401 - fixture


def test_credentials_leave_the_url() -> None:
    repo = parse_repo("https://u%40x:p%2Fw@charts.example.com:8443/stable/", "web", "1.2.3")
    assert repo.url == "https://charts.example.com:8443/stable"
    assert (repo.username, repo.password) == ("u@x", "p/w")
    assert "p/w" not in repr(repo)
    assert display_url("https://u:p@h/x") == "https://h/x"
    assert b"password: p/w" in repositories_yaml(repo)
    assert b"password" not in repositories_yaml(parse_repo("http://h/c", "web"))


#: Where helm-chart-build pushes the charts it fetched from a classic repository.
BUILDS = "builds/from-repo"


def build_plan(registry: RegistryServer, repo_url: str, version: str = "0.4.0") -> dict[str, Any]:
    return {
        "dst_registry": registry_config(registry, BUILDS),
        "helm_build_plan": {"HelmRepoConfig": {"RepoURL": repo_url, "Chart": "demo", "Version": version}},
    }


def repo_source(repo: ChartRepoServer, helm: str, version: str) -> dict[str, Any]:
    """``chart_source`` for the chart ``demo`` ``version``, added to ``repo`` (basic auth)."""
    repo.add_chart(helm, version=version)
    return {
        "repo": {
            "url": repo.url,
            "chart": "demo",
            "version": version,
            "username": USER,
            "password": PASSWORD,
        }
    }


@dataclass(frozen=True)
class Deployer:
    """helm-chart-deploy jobs into one test namespace (runner.testing, as tests/helm/test_deploy.py)."""

    cluster: Cluster
    namespace: str
    tools: ToolSettings
    tmp_path: Path

    async def plan(self, source: dict[str, Any]) -> Any:
        """create-apply-plan of the chart artifact ``source`` names (``src_registry``/``src_tag``)."""
        return await job(
            deploy_plan(self.cluster, self.namespace, source), "create-apply-plan", self.tmp_path, self.tools
        )

    async def plan_and_apply(self, chart_source: dict[str, Any], chart_version: str) -> tuple[Any, Any]:
        """Plan then apply the chart ``chart_source`` names; it is deployed at ``chart_version``."""
        planned, applied = await plan_and_apply(
            self.cluster, self.namespace, {}, self.tmp_path, self.tools, chart_source=chart_source
        )
        assert applied.outputs["chart_version"] == chart_version
        assert applied.outputs["status"] == "deployed"
        return planned, applied


@pytest.fixture
def deployer(
    kube_cluster: Cluster, kube_namespace: str, helm_tools: ToolSettings, tmp_path: Path
) -> Deployer:
    return Deployer(kube_cluster, kube_namespace, helm_tools, tmp_path)


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
    deployer: Deployer,
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
    planned = await deployer.plan(artifact_source(oci_registry, BUILDS, "bld-repo"))
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


def test_chart_source_names_exactly_one_source() -> None:
    assert parse_chart_source({"oci": {"ref": "oci://h/c/demo"}}).oci is not None
    for bad in (
        {},
        {"oci": {"ref": "https://h/c"}},
        {"git": {"url": "u"}, "repo": {"url": "u", "chart": "c"}},
    ):
        with pytest.raises(HandlerError, match="chart_source"):
            parse_chart_source(bad)


@pytest.mark.kube
@pytest.mark.anyio
async def test_deploy_chart_from_git(git_server: GitServer, deployer: Deployer) -> None:  # noqa: F811
    files = {
        "deploy/demo/Chart.yaml": yaml.safe_dump({"apiVersion": "v2", "name": "demo", "version": "0.5.0"}),
        "deploy/demo/values.yaml": yaml.safe_dump(DEFAULT_VALUES),
        **{f"deploy/demo/templates/{name}": text for name, text in TEMPLATES.items()},
    }
    url = git_server.create("chart-in-git", files)
    await deployer.plan_and_apply({"git": {"url": url, "ref": "main", "path": "deploy/demo"}}, "0.5.0")


@pytest.mark.kube
@pytest.mark.anyio
async def test_deploy_chart_from_oci(
    helm_bin: str, oci_registry: RegistryServer, deployer: Deployer, tmp_path: Path
) -> None:
    chart = write_chart(tmp_path / "src", version="0.6.0")
    done = subprocess.run(
        [helm_bin, "package", str(chart), "-d", str(tmp_path / "pkg")], capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    push = [
        helm_bin,
        "push",
        str(tmp_path / "pkg" / "demo-0.6.0.tgz"),
        f"oci://{oci_registry.host}/charts",
        "--plain-http",
    ]
    done = subprocess.run(
        push, capture_output=True, timeout=60, env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    )
    assert done.returncode == 0, done.stderr
    source = {
        "oci": {"ref": f"oci://{oci_registry.host}/charts/demo", "version": "0.6.0", "plain_http": True}
    }
    await deployer.plan_and_apply(source, "0.6.0")


@pytest.mark.kube
@pytest.mark.anyio
async def test_deploy_chart_from_a_classic_repository_with_basic_auth(
    chart_repo: ChartRepoServer,  # noqa: F811
    helm_bin: str,
    deployer: Deployer,
) -> None:
    planned, applied = await deployer.plan_and_apply(repo_source(chart_repo, helm_bin, "0.7.0"), "0.7.0")
    assert "/charts/demo-0.7.0.tgz" in chart_repo.paths
    assert PASSWORD not in planned.log.text()
    assert PASSWORD not in applied.log.text()


@pytest.mark.kube
def test_runner_exec_deploys_a_chart_from_a_classic_repository(
    chart_repo: ChartRepoServer,  # noqa: F811
    helm_bin: str,
    kube_cluster: Cluster,
    kube_namespace: str,
    tmp_path: Path,
) -> None:
    """``runner exec`` as a developer runs it: plan, then apply that plan, two real processes."""
    source = repo_source(chart_repo, helm_bin, "0.8.0")
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(deploy_plan(kube_cluster, kube_namespace, {}, chart_source=source)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
    base = [
        sys.executable,
        "-m",
        "runner",
        "exec",
        "--state-dir",
        str(tmp_path / "state"),
        "--log-format",
        "json",
    ]
    base += ["--type", "helm-chart-deploy", "--plan", str(plan)]

    def runner_exec(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([*base, *args], capture_output=True, text=True, env=env, timeout=180)
        assert done.returncode == 0, done.stderr[-3000:]
        return done

    planned = runner_exec("--operation", "create-apply-plan", "--result-out", str(tmp_path / "r.json"))
    applied = runner_exec("--operation", "apply-plan", "--apply-plan", str(tmp_path / "r.json"))
    outputs = json.loads(applied.stdout)
    assert outputs["chart_version"] == "0.8.0"
    assert outputs["status"] == "deployed"
    assert PASSWORD not in planned.stderr + applied.stderr + applied.stdout
