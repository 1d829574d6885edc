"""helm-chart-build: the chart of ``git_source.path``, packaged and pushed as the reference packs it.

The chart is cloned (handlers.sources), its dependencies built when ``Chart.yaml`` declares any
(``helm dependency build``, repositories from the chart's own ``dependencies``, written into the
job's 0600 repository config), packaged (``helm package``) and pushed to ``dst_registry`` tagged
``job.owner_id`` (else ``dst_tag``) as an OCI artifact of type ``artifact/nuon`` holding one file,
``chart.tgz`` (reference-runner.md §4.6), which ``oci-sync`` copies and ``helm-chart-deploy``
pulls. Outputs: the reference's ``files`` and ``image.tag``, plus the artifact's ``digest`` and
the chart's name and version. Without ``git_source.url``, the chart comes from
``helm_repo_config`` (a classic HTTP repository, handlers/helm/repo.py: basic auth from the URL's
userinfo, only in the job's 0600 repositories.yaml); its packaged dependencies come with it.
With ``RUNNER_HELM_PUSH_OCI_CHART=true`` the chart is also pushed as a native Helm OCI chart
(handlers/helm/oci_chart.py; output ``oci_chart``).
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any, ClassVar

import yaml

from handlers.helm.binary import requested_version, resolve_helm
from handlers.helm.cli import Helm, helm_env, write_private
from handlers.helm.oci_chart import push_oci_chart
from handlers.helm.repo import parse_repo, pull_chart
from handlers.helm.settings import HelmSettings
from handlers.oci.artifacts import push_directory
from handlers.oci.registry import open_registry
from handlers.sources import fetch_job_source
from runner.sdk import Handler, HandlerError, JobContext
from runner.sdk.plans import BasePlan, BuildPlan

ARTIFACT_TYPE = "artifact/nuon"
CHART_FILE = "chart.tgz"


def chart_metadata(chart_dir: Path) -> dict[str, Any]:
    path = chart_dir / "Chart.yaml"
    if not path.is_file():
        raise HandlerError(f"no Chart.yaml in {chart_dir.name or 'the source'}: not a helm chart")
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict) or not data.get("name") or not data.get("version"):
        raise HandlerError("Chart.yaml has no name or version")
    return data


def dependency_repositories(metadata: dict[str, Any]) -> dict[str, str]:
    """``{name: url}`` for each http(s) repository the chart's dependencies name."""
    out: dict[str, str] = {}
    for dep in metadata.get("dependencies") or []:
        url = str((dep or {}).get("repository") or "")
        if url.startswith(("http://", "https://")):
            out["dep-" + hashlib.sha256(url.encode()).hexdigest()[:12]] = url
    return out


def repositories_yaml(repos: dict[str, str]) -> bytes:
    entries = [{"name": name, "url": url} for name, url in sorted(repos.items())]
    return yaml.safe_dump({"apiVersion": "v1", "repositories": entries}).encode()


class HelmChartBuildHandler(Handler):
    plan_model: ClassVar[type[BasePlan] | None] = BuildPlan
    settings_model = HelmSettings

    async def prepare(self, ctx: JobContext) -> None:
        plan = ctx.plan_as(BuildPlan)
        if plan.dst_registry is None:
            raise HandlerError("the build plan has no dst_registry")
        if not (ctx.job.owner_id or plan.dst_tag):
            raise HandlerError(
                "no tag for the chart artifact: the job has no owner_id and the plan no dst_tag"
            )
        repo_config = plan.helm_build_plan.helm_repo_config if plan.helm_build_plan else None
        if not (plan.git_source and plan.git_source.url):
            if repo_config is None or not repo_config.repo_url:
                raise HandlerError(
                    "the build plan names no chart: neither git_source.url nor helm_repo_config is set"
                )
            parse_repo(repo_config.repo_url, repo_config.chart, repo_config.version)  # fails early

    async def execute(self, ctx: JobContext) -> None:
        plan = ctx.plan_as(BuildPlan)
        tag = ctx.job.owner_id or plan.dst_tag
        request = await requested_version(ctx, app_id="", app_config_id="", component_id="", plan_version="")
        binary = await resolve_helm(
            request,
            tools_dir=ctx.tools.tools_dir,
            mirror_url=ctx.handler_settings(HelmSettings).mirror_url,
            processes=ctx.processes,
            log=ctx.log,
        )
        env = helm_env(ctx.workspace / "helm", kubeconfig=None, driver="secret")
        helm = Helm(binary.path, env, ctx.processes, ctx.log)
        repo_config = plan.helm_build_plan.helm_repo_config if plan.helm_build_plan else None
        vendored = False
        if plan.git_source and plan.git_source.url:
            fetched = await fetch_job_source(ctx, plan.git_source)
            chart_dir = fetched.directory
        else:
            assert repo_config is not None  # prepare() checked
            repo = parse_repo(repo_config.repo_url, repo_config.chart, repo_config.version)
            chart_dir = await pull_chart(helm, repo, ctx.workspace / "source", log=ctx.log)
            vendored = (chart_dir / "charts").is_dir()  # a packaged chart carries its dependencies
        metadata = chart_metadata(chart_dir)
        repos = dependency_repositories(metadata)
        if metadata.get("dependencies") and not vendored:
            write_private(Path(env["HELM_REPOSITORY_CONFIG"]), repositories_yaml(repos))
            await helm.run(["dependency", "build", str(chart_dir)])
        out = ctx.workspace / "package"
        out.mkdir(parents=True, exist_ok=True)
        await helm.run(["package", str(chart_dir), "--destination", str(out)])
        packaged = out / f"{metadata['name']}-{metadata['version']}.tgz"
        if not packaged.is_file():
            raise HandlerError(f"helm package wrote no {packaged.name}")
        artifact = ctx.workspace / "artifact"
        artifact.mkdir(exist_ok=True)
        shutil.move(packaged, artifact / CHART_FILE)
        target = await open_registry(plan.dst_registry, config=ctx.tools, secrets=ctx.secrets, log=ctx.log)
        outputs: dict[str, Any] = {}
        async with target:
            pushed = await push_directory(target, tag, artifact, artifact_type=ARTIFACT_TYPE, log=ctx.log)
            where = target.display(tag)
            chart_name = f"{metadata['name']} {metadata['version']}"
            ctx.log.info(f"chart {chart_name} pushed as {where} ({pushed.digest})")
            if ctx.handler_settings(HelmSettings).push_oci_chart:
                native = await push_oci_chart(target, artifact / CHART_FILE, metadata)
                reference = native.reference(target.registry)
                ctx.log.info(
                    f"chart also pushed as a Helm OCI chart: {reference} --version {metadata['version']} "
                    f"({native.digest})"
                )
                outputs["oci_chart"] = {
                    "reference": reference,
                    "repository": f"{target.registry}/{native.repository}",
                    "tag": native.tag,
                    "digest": native.digest,
                }
        ctx.set_outputs(
            {
                "files": [{"AbsPath": "", "RelPath": CHART_FILE, "FileType": ""}],
                "image": {"tag": tag, "digest": pushed.digest, "repository": target.name},
                "digest": pushed.digest,
                "chart": {"name": metadata["name"], "version": metadata["version"]},
                **outputs,
            }
        )
