"""Cluster access and sandbox mode of kubernetes-manifest-deploy.

- A runner outside the cluster with the chart's service-account token (a static kubeconfig in
  ``cluster_info``) applies a manifest into the chart's namespace: the chart's RBAC is enough; a
  cluster-scoped object it may not create fails with the object named.
- The job's kubeconfig is written 0600 into the workspace and is gone after cleanup.
- Sandbox mode (the SDK's hook) reports the plan's fake contents and touches no cluster.
"""

from __future__ import annotations

import base64
import gzip
import json
import stat
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest

from handlers.kube.deploy import KubernetesManifestDeployHandler
from runner.sdk.plans import SandboxMode
from runner.testing import make_context, run_handler
from tests.kube.conftest import ServiceAccountAccess

pytestmark = pytest.mark.kube

JOB = "kubernetes-manifest-deploy"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def plan(kubeconfig: str, ns: str, docs: list[dict[str, Any]], contents: str = "") -> dict[str, Any]:
    return {
        "kubernetes_manifest": {
            "namespace": ns,
            "manifest": "\n---\n".join(json.dumps(d) for d in docs),
            "cluster_info": {"kube_config": kubeconfig},
        },
        "apply_plan_contents": contents,
    }


class KubeconfigSpy(KubernetesManifestDeployHandler):
    """Records the job kubeconfig's mode while the job runs."""

    seen: list[int]

    async def execute(self, ctx: Any) -> None:
        async def spy() -> None:
            while not (ctx.workspace / "kubeconfig").exists():
                await anyio.sleep(0.01)
            self.seen.append(stat.S_IMODE((ctx.workspace / "kubeconfig").stat().st_mode))

        async with anyio.create_task_group() as tg:
            tg.start_soon(spy)
            await super().execute(ctx)


@pytest.mark.anyio
async def test_the_chart_service_account_token_is_enough_to_deploy(
    runner_sa: ServiceAccountAccess, tmp_path: Path
) -> None:
    kubeconfig = runner_sa.kubeconfig.read_text()
    # 1.20 server-side apply needs a Service port's protocol spelled out (fixed in 1.21).
    docs = [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app-config"}, "data": {"k": "v"}},
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "app"},
            "spec": {"ports": [{"port": 80, "protocol": "TCP"}], "selector": {"app": "app"}},
        },
    ]
    handler = KubeconfigSpy()
    handler.seen = []
    planned = await run_handler(
        handler,
        plan(kubeconfig, runner_sa.namespace, docs),
        job_type=JOB,
        operation="create-apply-plan",
        workspace=tmp_path / "plan",
    )
    assert handler.seen == [0o600]
    assert not (tmp_path / "plan" / "kubeconfig").exists(), "removed at cleanup"
    assert runner_sa.token not in planned.log.text()
    result = planned.ctx.result
    assert result is not None
    assert result.contents_compressed is not None
    contents = base64.b64encode(base64.urlsafe_b64decode(result.contents_compressed)).decode()
    applied = await run_handler(
        KubernetesManifestDeployHandler(),
        plan(kubeconfig, runner_sa.namespace, docs, contents),
        job_type=JOB,
        operation="apply-plan",
        workspace=tmp_path / "apply",
        deadline=anyio.current_time() + 60,
    )
    assert applied.outputs is not None
    assert [o["name"] for o in applied.outputs["objects"]] == ["app-config", "app"]

    forbidden = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"nope-{uuid.uuid4().hex[:6]}"}}
    ]
    denied = await run_handler(
        KubernetesManifestDeployHandler(),
        plan(kubeconfig, runner_sa.namespace, forbidden),
        job_type=JOB,
        operation="create-apply-plan",
        workspace=tmp_path / "denied",
        raise_errors=False,
    )
    assert "forbidden" in str(denied.error)
    assert "Namespace nope-" in str(denied.error)


@pytest.mark.anyio
async def test_sandbox_mode_reports_the_plans_fake_contents(tmp_path: Path) -> None:
    fake = json.dumps({"op": "apply", "k8s_content_diff": []}).encode()
    block = SandboxMode.model_validate(
        {
            "enabled": True,
            "outputs": {"x": 1},
            "kubernetes_manifest": {"plan_contents": base64.b64encode(fake).decode()},
        }
    )
    ctx = make_context(
        JOB,
        {"kubernetes_manifest": {"namespace": "ns", "manifest": "kind: nothing"}},
        operation="create-apply-plan",
        workspace=tmp_path,
    )
    await KubernetesManifestDeployHandler().sandbox(ctx, block)
    assert ctx.outputs == {"x": 1}
    assert ctx.result is not None
    assert gzip.decompress(base64.urlsafe_b64decode(ctx.result.contents_compressed or "")) == fake
    assert not (tmp_path / "kubeconfig").exists()
