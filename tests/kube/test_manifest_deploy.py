"""kubernetes-manifest-deploy against the real apiserver, driven by ``runner.testing``.

plan -> apply (a namespace, config, a Deployment whose readiness the test writes through the
status subresource, as no kubelet runs) -> a re-plan with no change -> an apply that drops an
object (pruned through the inventory) -> teardown plan and apply (every object gone). Then the
errors: a conflict with another field manager, an invalid object, an unknown kind.
"""

from __future__ import annotations

import base64
import gzip
import json
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest
from kubernetes_asyncio import client as k8s

from handlers.kube.deploy import KubernetesManifestDeployHandler
from runner.testing import run_handler
from tests.kube.conftest import Cluster
from tests.kube.test_tier import api_client

pytestmark = pytest.mark.kube

JOB = "kubernetes-manifest-deploy"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def manifest(ns: str, *, with_extra: bool = True, replicas: int = 2) -> str:
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "127.0.0.1:5000/web:1"}]},
                },
            },
        },
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"a": "1"}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
    ]
    if with_extra:
        docs.append(
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "extra"}, "stringData": {"k": "v"}}
        )
    return "\n---\n".join(json.dumps(d) for d in docs)


def deploy_plan(cluster: Cluster, ns: str, text: str, contents: str = "") -> dict[str, Any]:
    return {
        "install_id": "inst1",
        "component_id": "comp1",
        "kubernetes_manifest": {
            "namespace": ns,
            "manifest": text,
            "cluster_info": {"kube_config": cluster.kubeconfig.read_text()},
        },
        "apply_plan_contents": contents,
    }


def decode(result: Any) -> dict[str, Any]:
    assert result.contents_compressed == result.contents_display_compressed
    return dict(json.loads(gzip.decompress(base64.urlsafe_b64decode(result.contents_compressed))))


def as_apply_contents(result: Any) -> str:
    """What the control plane hands the apply job: base64 (std) of the stored compressed bytes."""
    return base64.b64encode(base64.urlsafe_b64decode(result.contents_compressed)).decode()


async def run(op: str, plan: dict[str, Any], tmp_path: Path, **kw: Any) -> Any:
    workspace = tmp_path / f"ws-{uuid.uuid4().hex[:6]}"
    return await run_handler(
        KubernetesManifestDeployHandler(),
        plan,
        job_type=JOB,
        operation=op,
        workspace=workspace,
        deadline=anyio.current_time() + kw.pop("timeout", 60),
        env={"RUNNER_KUBE_POLL_INTERVAL": "0.2"},
        **kw,
    )


async def mark_ready_when_applied(kubeconfig: Path, ns: str, name: str, generation: int = 1) -> None:
    """Stand in for the Deployment controller and kubelet: write a ready status once the
    Deployment exists at ``generation``."""
    async with await api_client(str(kubeconfig)) as api:
        apps = k8s.AppsV1Api(api)
        while True:
            try:
                live = await apps.read_namespaced_deployment(name, ns)
                if live.metadata.generation >= generation:
                    break
            except k8s.ApiException:
                pass
            await anyio.sleep(0.1)
        want = live.spec.replicas
        status = {
            "status": {
                "observedGeneration": live.metadata.generation,
                "replicas": want,
                "updatedReplicas": want,
                "readyReplicas": want,
                "availableReplicas": want,
            }
        }
        await apps.patch_namespaced_deployment_status(name, ns, status)


@pytest.mark.anyio
async def test_plan_apply_replan_prune_and_teardown(kube_cluster: Cluster, tmp_path: Path) -> None:
    ns = f"km-{uuid.uuid4().hex[:8]}"
    text = manifest(ns)

    planned = await run("create-apply-plan", deploy_plan(kube_cluster, ns, text), tmp_path)
    contents = decode(planned.result)
    assert contents["op"] == "apply"
    assert json.loads(contents["plan"]) == {"k8s_content_diff": contents["k8s_content_diff"]}
    kinds = [(d["kind"], d["type"]) for d in contents["k8s_content_diff"]]
    assert kinds == [("Namespace", 2), ("Secret", 2), ("ConfigMap", 2), ("Deployment", 2)]
    assert contents["k8s_content_diff"][0]["_version"] == "2"

    async with anyio.create_task_group() as tg:
        tg.start_soon(mark_ready_when_applied, kube_cluster.kubeconfig, ns, "web")
        applied = await run(
            "apply-plan", deploy_plan(kube_cluster, ns, text, as_apply_contents(planned.result)), tmp_path
        )
    names = [(o["kind"], o["name"]) for o in applied.outputs["objects"]]
    assert names == [("Namespace", ns), ("Secret", "extra"), ("ConfigMap", "settings"), ("Deployment", "web")]
    assert any(m.startswith("ready: Deployment") for m in applied.log.messages())
    assert not list((tmp_path).rglob("kubeconfig")), "the job's kubeconfig is removed at cleanup"

    replanned = await run("create-apply-plan", deploy_plan(kube_cluster, ns, text), tmp_path)
    assert {d["type"] for d in decode(replanned.result)["k8s_content_diff"]} == {0}, "no change"

    smaller = manifest(ns, with_extra=False, replicas=3)
    changed = decode(
        (await run("create-apply-plan", deploy_plan(kube_cluster, ns, smaller), tmp_path)).result
    )
    web = next(d for d in changed["k8s_content_diff"] if d["kind"] == "Deployment")
    assert web["type"] == 3
    assert {"path": "spec.replicas", "original": 2, "applied": 3, "type": 3} in web["entries"]
    async with anyio.create_task_group() as tg:
        tg.start_soon(mark_ready_when_applied, kube_cluster.kubeconfig, ns, "web", 2)
        pruned = await run(
            "apply-plan",
            deploy_plan(kube_cluster, ns, smaller, as_apply_contents(planned.result)),
            tmp_path,
        )
    assert [(o["kind"], o["name"]) for o in pruned.outputs["pruned"]] == [("Secret", "extra")]
    async with await api_client(str(kube_cluster.kubeconfig)) as api:
        with pytest.raises(k8s.ApiException):
            await k8s.CoreV1Api(api).read_namespaced_secret("extra", ns)

    teardown = await run("create-teardown-plan", deploy_plan(kube_cluster, ns, smaller), tmp_path)
    down = decode(teardown.result)
    assert down["op"] == "delete"
    assert [d["type"] for d in down["k8s_content_diff"]] == [1, 1, 1]
    gone = await run(
        "apply-plan", deploy_plan(kube_cluster, ns, smaller, as_apply_contents(teardown.result)), tmp_path
    )
    assert {o["kind"] for o in gone.outputs["deleted"]} == {"Deployment", "ConfigMap", "Namespace"}
    async with await api_client(str(kube_cluster.kubeconfig)) as api:
        with pytest.raises(k8s.ApiException) as missing:
            await k8s.CoreV1Api(api).read_namespace(ns)
    assert missing.value.status == 404


@pytest.mark.anyio
async def test_conflict_invalid_object_and_unknown_kind_name_the_object(
    kube_cluster: Cluster, kube_namespace: str, tmp_path: Path
) -> None:
    async with await api_client(str(kube_cluster.kubeconfig)) as api:
        await k8s.CoreV1Api(api).create_namespaced_config_map(
            kube_namespace, k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name="owned"), data={"a": "theirs"})
        )
    conflict = manifest_doc("v1", "ConfigMap", "owned", {"data": {"a": "ours"}})
    run_ = await run(
        "create-apply-plan", deploy_plan(kube_cluster, kube_namespace, conflict), tmp_path, raise_errors=False
    )
    assert "ConfigMap" in str(run_.error)
    assert "owned" in str(run_.error)
    assert "conflict" in str(run_.error)

    invalid = manifest_doc("apps/v1", "Deployment", "broken", {"spec": {"replicas": "many"}})
    run_ = await run(
        "create-apply-plan", deploy_plan(kube_cluster, kube_namespace, invalid), tmp_path, raise_errors=False
    )
    assert "Deployment" in str(run_.error)
    assert "broken" in str(run_.error)

    unknown = manifest_doc("example.com/v1", "Widget", "w1", {})
    run_ = await run(
        "create-apply-plan", deploy_plan(kube_cluster, kube_namespace, unknown), tmp_path, raise_errors=False
    )
    assert "unknown kind" in str(run_.error)
    assert "Widget" in str(run_.error)
    assert "w1" in str(run_.error)


def manifest_doc(api_version: str, kind: str, name: str, extra: dict[str, Any]) -> str:
    return json.dumps({"apiVersion": api_version, "kind": kind, "metadata": {"name": name}, **extra})


CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.com"},
    "spec": {
        "group": "example.com",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {"type": "object", "properties": {"size": {"type": "integer"}}}
                        },
                    }
                },
            }
        ],
    },
}


@pytest.mark.anyio
async def test_a_crd_and_its_custom_resource_in_one_manifest(
    kube_cluster: Cluster, kube_namespace: str, tmp_path: Path
) -> None:
    """The CRD goes first and is waited for until served; the plan reports the CR as added without
    a dry run (its kind does not exist yet)."""
    widget = {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "w1"},
        "spec": {"size": 3},
    }
    text = "\n---\n".join(json.dumps(d) for d in (widget, CRD))
    planned = await run("create-apply-plan", deploy_plan(kube_cluster, kube_namespace, text), tmp_path)
    found = decode(planned.result)["k8s_content_diff"]
    assert [(d["kind"], d["type"], d.get("dry_run", False)) for d in found] == [
        ("CustomResourceDefinition", 2, True),
        ("Widget", 2, False),
    ]
    applied = await run(
        "apply-plan",
        deploy_plan(kube_cluster, kube_namespace, text, as_apply_contents(planned.result)),
        tmp_path,
    )
    assert [o["kind"] for o in applied.outputs["objects"]] == ["CustomResourceDefinition", "Widget"]
    got = kube_cluster.kubectl("get", "widgets.example.com", "w1", "-n", kube_namespace, "-o", "json")
    assert json.loads(got)["spec"] == {"size": 3}
    gone = await run(
        "apply-plan",
        deploy_plan(
            kube_cluster,
            kube_namespace,
            text,
            as_apply_contents(
                (
                    await run(
                        "create-teardown-plan", deploy_plan(kube_cluster, kube_namespace, text), tmp_path
                    )
                ).result
            ),
        ),
        tmp_path,
    )
    assert [o["kind"] for o in gone.outputs["deleted"]] == ["Widget", "CustomResourceDefinition"]


@pytest.mark.anyio
async def test_a_workload_not_ready_by_the_deadline_fails_naming_it(
    kube_cluster: Cluster, kube_namespace: str, tmp_path: Path
) -> None:
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "migrate"},
        "spec": {
            "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "m", "image": "x"}]}}
        },
    }
    text = json.dumps(job)
    contents = base64.b64encode(json.dumps({"op": "apply"}).encode()).decode()
    failed = await run(
        "apply-plan",
        deploy_plan(kube_cluster, kube_namespace, text, contents),
        tmp_path,
        timeout=2,
        raise_errors=False,
    )
    assert f"not ready before the job's deadline: Job {kube_namespace}/migrate" in str(failed.error)
