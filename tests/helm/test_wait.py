"""helm-chart-deploy's ``--wait`` on a Deployment, for helm 3.17 and helm 4.1 (``--wait=watcher``).

No pods run here: there is no kubelet, and the tier's controller manager runs only the namespace
and garbage-collector controllers, so no ReplicaSet or pod ever appears by itself. The test stands
in for the deployment and replicaset controllers: once helm has applied the chart's Deployment
(``web=true``, ``replicas=N``) and waits, it creates the ReplicaSet the deployment controller
would (controlled by the Deployment, the Deployment's pod template plus a ``pod-template-hash``
label, a selector matching it) and patches the status subresources of both as the controllers
would once N pods were ready. That satisfies both waiters, read from helm's source:

- helm 3.17 (pkg/kube/ready.go): the oldest ReplicaSet controlled by the Deployment whose
  template equals the Deployment's, ignoring ``pod-template-hash``; its ``observedGeneration``
  equals its ``generation``, the Deployment's too, and its ``readyReplicas`` is at least
  ``replicas - maxUnavailable``;
- helm 4.1 (kstatus, fluxcd/cli-utils): the Deployment's ``observedGeneration`` equals its
  ``generation``; ``replicas``, ``updatedReplicas``, ``readyReplicas`` and ``availableReplicas``
  reach ``spec.replicas``; conditions ``Progressing=True`` (``NewReplicaSetAvailable``; the
  apiserver defaults ``progressDeadlineSeconds``) and ``Available=True``.

Until then the job is held in helm's wait with the release ``pending-install``/``pending-upgrade``;
never made ready, it fails at the deadline with helm's message and the release is rolled back.
"""

from __future__ import annotations

import hashlib
import json
import ssl
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from handlers.helm.deploy import HelmDeployHandler
from runner.sdk import ToolSettings
from runner.testing import HandlerRun, make_context, run_handler
from tests.helm.conftest import (
    HELM4,
    HELM_VERSION,
    ChartSource,
    deploy_plan,
    helm4_first_on_path,
    op_contents,
)
from tests.helm.test_deploy import JOB, as_apply_contents, decode, helm_processes, job, plan_and_apply, types
from tests.kube.conftest import Cluster

pytestmark = pytest.mark.kube

DEPLOYMENT = "demo-web"
#: How long the job must stay in helm's wait before the test makes the Deployment ready (helm 3
#: polls every 2 s; helm 4 watches, so anything it would finish early on shows at once).
HOLD = 4.0
MERGE = {"Content-Type": "application/merge-patch+json"}


@dataclass(frozen=True)
class HelmUnderTest:
    version: str
    binary: str
    tools: ToolSettings


@pytest.fixture(params=[HELM_VERSION, HELM4], ids=["helm3.17", "helm4.1"])
def helm_under_test(
    request: pytest.FixtureRequest,
    helm_bin: str,
    helm_tools: ToolSettings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> HelmUnderTest:
    """helm 3.17 (the session's tools dir), or helm 4.1 as ``helm`` first on PATH: the test's
    first job copies it into a fresh tools dir (tests/helm/test_helm4.py), later ones find it."""
    version = str(request.param)
    if version == HELM_VERSION:
        return HelmUnderTest(version, helm_bin, helm_tools)
    helm4 = helm4_first_on_path(tmp_path, monkeypatch)
    return HelmUnderTest(version, helm4, ToolSettings(tools_dir=tmp_path / "tools", child_grace=5.0))


@pytest.fixture
async def kube_http(kube_cluster: Cluster) -> AsyncIterator[httpx.AsyncClient]:
    """The apiserver as admin, for what the controllers would write."""
    async with httpx.AsyncClient(
        base_url=kube_cluster.server,
        headers={"Authorization": f"Bearer {kube_cluster.token}"},
        verify=ssl.create_default_context(cafile=str(kube_cluster.ca_file)),
        timeout=10,
    ) as http:
        yield http


def web(replicas: int) -> list[dict[str, str]]:
    return [{"name": "web", "value": "true"}, {"name": "replicas", "value": str(replicas)}]


def deployed(ns: str, revision: int) -> dict[str, Any]:
    """The apply job's outputs for the chart's release ``demo``, deployed at ``revision``."""
    return {
        "release": "demo",
        "namespace": ns,
        "revision": revision,
        "status": "deployed",
        "chart": "demo",
        "chart_version": "0.1.0",
        "app_version": "1.0.0",
    }


# --------------------------------------------------------------------------- the controllers


async def applied_deployment(
    http: httpx.AsyncClient, ns: str, replicas: int | None = None, timeout: float = 60.0
) -> dict[str, Any]:
    """The chart's Deployment once helm has applied it (with ``replicas``, when given: an upgrade
    finds the previous revision's Deployment there already)."""
    path = f"/apis/apps/v1/namespaces/{ns}/deployments/{DEPLOYMENT}"
    with anyio.fail_after(timeout):
        while True:
            live = await http.get(path)
            if live.status_code == 200 and replicas in (None, live.json()["spec"].get("replicas")):
                return dict(live.json())
            assert live.status_code in (200, 404), live.text
            await anyio.sleep(0.1)


async def patch_status(http: httpx.AsyncClient, path: str, status: dict[str, Any]) -> dict[str, Any]:
    patched = await http.patch(f"{path}/status", json={"status": status}, headers=MERGE)
    assert patched.status_code == 200, patched.text
    return dict(patched.json())


async def make_ready(http: httpx.AsyncClient, ns: str) -> None:
    """Do what the deployment and replicaset controllers would once ``spec.replicas`` pods of the
    Deployment's template were ready (no pods run here): its ReplicaSet, scaled, and both statuses."""
    deployment = await applied_deployment(http, ns)
    spec, meta = deployment["spec"], deployment["metadata"]
    replicas = int(spec.get("replicas", 1))
    template = json.loads(json.dumps(spec["template"]))
    # The controller's hash is an FNV of the template; any stable label value does here.
    pod_hash = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]
    template["metadata"].setdefault("labels", {})["pod-template-hash"] = pod_hash
    rs_name = f"{DEPLOYMENT}-{pod_hash}"
    rs_path = f"/apis/apps/v1/namespaces/{ns}/replicasets/{rs_name}"
    existing = await http.get(rs_path)
    if existing.status_code == 404:
        owner = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": DEPLOYMENT,
            "uid": meta["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
        selector = json.loads(json.dumps(spec["selector"]))
        selector.setdefault("matchLabels", {})["pod-template-hash"] = pod_hash
        body = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": rs_name,
                "namespace": ns,
                "labels": template["metadata"]["labels"],
                "annotations": {"deployment.kubernetes.io/revision": "1"},
                "ownerReferences": [owner],
            },
            "spec": {"replicas": replicas, "selector": selector, "template": template},
        }
        created = await http.post(f"/apis/apps/v1/namespaces/{ns}/replicasets", json=body)
        assert created.status_code == 201, created.text
        rs = dict(created.json())
    else:  # scaled, as the deployment controller scales its new ReplicaSet
        assert existing.status_code == 200, existing.text
        scaled = await http.patch(rs_path, json={"spec": {"replicas": replicas}}, headers=MERGE)
        assert scaled.status_code == 200, scaled.text
        rs = dict(scaled.json())
    counts = {"replicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas}
    await patch_status(
        http,
        rs_path,
        {**counts, "fullyLabeledReplicas": replicas, "observedGeneration": rs["metadata"]["generation"]},
    )
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    conditions = [
        {
            "type": "Available",
            "status": "True",
            "reason": "MinimumReplicasAvailable",
            "message": "Deployment has minimum availability.",
            "lastUpdateTime": now,
            "lastTransitionTime": now,
        },
        {
            "type": "Progressing",
            "status": "True",
            "reason": "NewReplicaSetAvailable",
            "message": f'ReplicaSet "{rs_name}" has successfully progressed.',
            "lastUpdateTime": now,
            "lastTransitionTime": now,
        },
    ]
    await patch_status(
        http,
        f"/apis/apps/v1/namespaces/{ns}/deployments/{DEPLOYMENT}",
        {
            **counts,
            "updatedReplicas": replicas,
            "observedGeneration": meta["generation"],
            "conditions": conditions,
        },
    )


# --------------------------------------------------------------------------- helm's view


def helm_json(helm: HelmUnderTest, cluster: Cluster, *args: str) -> Any:
    done = subprocess.run(
        [helm.binary, *args, "-o", "json", f"--kubeconfig={cluster.kubeconfig}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout)


async def release_status(helm: HelmUnderTest, cluster: Cluster, ns: str) -> str:
    """``helm status``'s status of the release ``demo``."""
    status = await anyio.to_thread.run_sync(helm_json, helm, cluster, "status", "demo", "-n", ns)
    return str(status["info"]["status"])


async def history(helm: HelmUnderTest, cluster: Cluster, ns: str) -> list[str]:
    entries = await anyio.to_thread.run_sync(helm_json, helm, cluster, "history", "demo", "-n", ns)
    return [str(h["status"]) for h in entries]


async def apply_held_until_ready(
    helm: HelmUnderTest,
    cluster: Cluster,
    http: httpx.AsyncClient,
    ns: str,
    plan: dict[str, Any],
    tmp_path: Path,
    pending: str,
    replicas: int,
) -> HandlerRun:
    """Run the apply-plan job; check it waits (``pending``) until the test makes the Deployment
    (of ``replicas``) ready."""
    workspace = tmp_path / f"ws-{uuid.uuid4().hex[:6]}"
    workspace.mkdir()
    ctx = make_context(JOB, plan, workspace=workspace, operation="apply-plan", tools=helm.tools)
    runs: list[HandlerRun] = []

    async def apply() -> None:
        runs.append(await run_handler(HelmDeployHandler(), ctx=ctx, raise_errors=False))

    with anyio.fail_after(120):
        async with anyio.create_task_group() as tg:
            tg.start_soon(apply)
            await applied_deployment(http, ns, replicas)  # helm has written it: now it waits
            await anyio.sleep(HOLD)
            assert not runs, f"the job finished before the Deployment was ready: {runs[0].error}"
            assert await release_status(helm, cluster, ns) == pending
            assert helm_processes(str(workspace)), "helm is still running, in its wait"
            await make_ready(http, ns)
    [run] = runs
    assert run.error is None, run.error
    return run


# --------------------------------------------------------------------------- the tests


@pytest.mark.anyio
async def test_wait_holds_the_job_until_the_deployment_is_ready(
    helm_under_test: HelmUnderTest,
    kube_cluster: Cluster,
    kube_namespace: str,
    kube_http: httpx.AsyncClient,
    chart_source: ChartSource,
    tmp_path: Path,
) -> None:
    helm, ns, source = helm_under_test, kube_namespace, await chart_source.push()
    planned = await job(
        deploy_plan(kube_cluster, ns, source, values=web(2), helm_version=helm.version),
        "create-apply-plan",
        tmp_path,
        helm.tools,
    )
    assert decode(planned.result)["op"] == "install"
    assert types(decode(planned.result))[f"Deployment/{DEPLOYMENT}"] == 2

    plan = deploy_plan(
        kube_cluster,
        ns,
        source,
        values=web(2),
        contents=as_apply_contents(planned.result),
        helm_version=helm.version,
    )
    installed = await apply_held_until_ready(
        helm, kube_cluster, kube_http, ns, plan, tmp_path, "pending-install", replicas=2
    )
    assert installed.outputs == deployed(ns, 1)
    commands = [m for m in installed.log.messages() if m.startswith("$ ")]
    wait = "--wait=watcher" if helm.version == HELM4 else "--wait "
    assert any(wait in m for m in commands if " upgrade --install " in m), commands
    assert await release_status(helm, kube_cluster, ns) == "deployed"

    # Scaling up changes the Deployment's generation: helm waits again until the controllers catch up.
    plan = deploy_plan(
        kube_cluster, ns, source, values=web(3), contents=op_contents("upgrade"), helm_version=helm.version
    )
    upgraded = await apply_held_until_ready(
        helm, kube_cluster, kube_http, ns, plan, tmp_path, "pending-upgrade", replicas=3
    )
    assert upgraded.outputs == deployed(ns, 2)
    assert await history(helm, kube_cluster, ns) == ["superseded", "deployed"]
    live = await applied_deployment(kube_http, ns)
    assert live["spec"]["replicas"] == 3
    assert live["status"]["readyReplicas"] == 3


@pytest.mark.anyio
async def test_a_deployment_never_ready_fails_at_the_deadline_and_rolls_back(
    helm_under_test: HelmUnderTest,
    kube_cluster: Cluster,
    kube_namespace: str,
    kube_http: httpx.AsyncClient,
    chart_source: ChartSource,
    tmp_path: Path,
) -> None:
    helm, ns, source = helm_under_test, kube_namespace, await chart_source.push()
    _, first = await plan_and_apply(kube_cluster, ns, source, tmp_path, helm.tools, helm_version=helm.version)
    assert first.outputs == deployed(ns, 1)

    # 14 s left, 4 s of them kept for the rollback: helm waits about 10 s, and nobody makes the
    # Deployment ready.
    workspace = tmp_path / "ws-timeout"
    workspace.mkdir()
    deadline = anyio.current_time() + 14.0
    ctx = make_context(
        JOB,
        deploy_plan(
            kube_cluster,
            ns,
            source,
            values=web(2),
            contents=op_contents("upgrade"),
            helm_version=helm.version,
        ),
        workspace=workspace,
        operation="apply-plan",
        tools=helm.tools,
        env={"RUNNER_HELM_ROLLBACK_RESERVE": "4"},
        deadline=deadline,
    )
    run = await run_handler(HelmDeployHandler(), ctx=ctx, raise_errors=False)
    assert anyio.current_time() < deadline, "the job reported before its deadline"
    assert run.error is not None
    message = str(run.error)
    # helm's own words: 3.17's waiter runs out of time, 4.1's watcher names what was not ready.
    if helm.version == HELM4:
        assert f"Deployment/{ns}/{DEPLOYMENT} not ready" in message, message
    else:
        assert "context deadline exceeded" in message, message
    assert "has been rolled back" in message, message
    [upgrade] = [m for m in run.log.messages() if m.startswith("$ ") and " upgrade --install " in m]
    [timeout] = [int(a[len("--timeout=") : -1]) for a in upgrade.split() if a.startswith("--timeout=")]
    assert 5 <= timeout <= 10, upgrade
    assert helm_processes(str(workspace)) == []

    assert await history(helm, kube_cluster, ns) == ["superseded", "failed", "deployed"]
    assert await release_status(helm, kube_cluster, ns) == "deployed"
    gone = await kube_http.get(f"/apis/apps/v1/namespaces/{ns}/deployments/{DEPLOYMENT}")
    assert gone.status_code == 404, "the rollback removed the Deployment revision 1 did not have"
