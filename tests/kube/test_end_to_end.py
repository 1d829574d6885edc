"""kubernetes-manifest-deploy through the real control plane and a real ``runner run`` process.

plan -> apply (the test patches the Deployment's status subresource as its controller would: no
kubelet runs here) -> a re-plan that shows no change -> teardown plan -> apply. Then a cancel
during the readiness wait: the job ends cancelled and the inventory names exactly the objects
that were applied, each of which exists.
"""

from __future__ import annotations

import base64
import gzip
import json
import ssl
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.kube.conftest import Cluster
from tests.support.controlplane import ControlPlaneProcess
from tests.support.runner_proc import RunnerProcess

pytestmark = [pytest.mark.kube, pytest.mark.integration]

JOB = "kubernetes-manifest-deploy"
TERMINAL = ("finished", "failed", "timed-out", "cancelled", "not-attempted")


@pytest.fixture
def kube_cp(tmp_path: Path) -> Iterator[ControlPlaneProcess]:
    cp = ControlPlaneProcess(tmp_path / "controlplane").start()
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture
def kube_runner(kube_cp: ControlPlaneProcess, tmp_path: Path) -> Iterator[RunnerProcess]:
    runner = RunnerProcess(kube_cp, tmp_path / "runner-state", {"RUNNER_KUBE_POLL_INTERVAL": "0.2"})
    runner.start()
    try:
        runner.wait_ready()
        yield runner
    finally:
        if runner.proc is not None and runner.proc.poll() is None:
            runner.stop()


def admin_http(cluster: Cluster) -> httpx.Client:
    return httpx.Client(
        base_url=cluster.server,
        headers={"Authorization": f"Bearer {cluster.token}"},
        verify=ssl.create_default_context(cafile=str(cluster.ca_file)),
        timeout=10,
    )


def manifest(ns: str) -> str:
    docs = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"a": "1"}},
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "127.0.0.1:5000/web:1"}]},
                },
            },
        },
    ]
    return "\n---\n".join(json.dumps(d) for d in docs)


def plan_for(cluster: Cluster, ns: str, contents: str = "") -> dict[str, Any]:
    return {
        "install_id": "inst-e2e",
        "component_id": "comp-e2e",
        "kubernetes_manifest": {
            "namespace": ns,
            "manifest": manifest(ns),
            "cluster_info": {"kube_config": cluster.kubeconfig.read_text()},
        },
        "apply_plan_contents": contents,
    }


def finished(operator: Any, job: dict[str, Any], timeout: float = 90.0) -> dict[str, Any]:
    done: dict[str, Any] = operator.wait_job(job["id"], TERMINAL, timeout=timeout)
    if done["status"] != "finished":
        raise AssertionError(
            f"job {job['type']} {done['status']}: {json.dumps(operator.result(job['id']))[:2000]}"
        )
    return done


def diff_types(result: dict[str, Any]) -> list[int]:
    contents = json.loads(gzip.decompress(base64.b64decode(result["contents_gzip"])))
    return [d["type"] for d in contents["k8s_content_diff"]]


def mark_ready(http: httpx.Client, ns: str, timeout: float = 60.0) -> None:
    """Stand in for the Deployment controller: once it exists, write a ready status."""
    path = f"/apis/apps/v1/namespaces/{ns}/deployments/web"
    deadline = time.monotonic() + timeout
    while (live := http.get(path)).status_code != 200:
        assert time.monotonic() < deadline, "the Deployment was never applied"
        time.sleep(0.1)
    gen = live.json()["metadata"]["generation"]
    status = {
        "observedGeneration": gen,
        "replicas": 1,
        "updatedReplicas": 1,
        "readyReplicas": 1,
        "availableReplicas": 1,
    }
    patched = http.patch(
        f"{path}/status", json={"status": status}, headers={"Content-Type": "application/merge-patch+json"}
    )
    assert patched.status_code == 200, patched.text


def test_plan_apply_replan_teardown_through_the_control_plane(
    kube_cluster: Cluster, kube_cp: ControlPlaneProcess, kube_runner: RunnerProcess
) -> None:
    ns = f"e2e-{uuid.uuid4().hex[:8]}"
    with kube_cp.operator() as operator, admin_http(kube_cluster) as http:
        plan_job = operator.submit(JOB, plan=plan_for(kube_cluster, ns), operation="create-apply-plan")
        finished(operator, plan_job)
        planned = operator.result(plan_job["id"])
        assert diff_types(planned) == [2, 2, 2]

        apply_job = operator.submit(
            JOB, plan=plan_for(kube_cluster, ns, planned["contents_gzip"]), operation="apply-plan"
        )
        mark_ready(http, ns)
        done = finished(operator, apply_job)
        bodies = "\n".join(str(r.get("body", "")) for r in operator.logs(done["log_stream_id"]))
        assert f"ready: Deployment {ns}/web" in bodies
        assert kube_cluster.token not in bodies

        replan = operator.submit(JOB, plan=plan_for(kube_cluster, ns), operation="create-apply-plan")
        finished(operator, replan)
        assert diff_types(operator.result(replan["id"])) == [0, 0, 0], "a re-plan shows no change"

        teardown = operator.submit(JOB, plan=plan_for(kube_cluster, ns), operation="create-teardown-plan")
        finished(operator, teardown)
        down = operator.result(teardown["id"])
        assert diff_types(down) == [1, 1, 1]
        destroy = operator.submit(
            JOB, plan=plan_for(kube_cluster, ns, down["contents_gzip"]), operation="apply-plan"
        )
        finished(operator, destroy)
        assert http.get(f"/api/v1/namespaces/{ns}").status_code == 404


def test_cancel_during_the_readiness_wait_leaves_a_whole_inventory(
    kube_cluster: Cluster, kube_cp: ControlPlaneProcess, kube_runner: RunnerProcess
) -> None:
    ns = f"e2c-{uuid.uuid4().hex[:8]}"
    with kube_cp.operator() as operator, admin_http(kube_cluster) as http:
        plan_job = operator.submit(JOB, plan=plan_for(kube_cluster, ns), operation="create-apply-plan")
        finished(operator, plan_job)
        contents = operator.result(plan_job["id"])["contents_gzip"]
        apply_job = operator.submit(JOB, plan=plan_for(kube_cluster, ns, contents), operation="apply-plan")
        # Nobody marks the Deployment ready: the job waits, and is cancelled while it does.
        deadline = time.monotonic() + 60
        while http.get(f"/apis/apps/v1/namespaces/{ns}/deployments/web").status_code != 200:
            assert time.monotonic() < deadline, "the Deployment was never applied"
            time.sleep(0.1)
        time.sleep(1.0)
        operator.cancel(apply_job["id"])
        assert operator.wait_job(apply_job["id"], TERMINAL, timeout=60)["status"] == "cancelled"

        maps = http.get(
            f"/api/v1/namespaces/{ns}/configmaps", params={"labelSelector": "byoc-runner.io/inventory"}
        )
        [inventory] = maps.json()["items"]
        recorded = sorted(tuple(k) for k in json.loads(inventory["data"]["objects"]))
        assert recorded == sorted(
            [
                ("apps/v1", "Deployment", ns, "web"),
                ("v1", "ConfigMap", ns, "settings"),
                ("v1", "Namespace", "", ns),
            ]
        )
        assert http.get(f"/api/v1/namespaces/{ns}/configmaps/settings").status_code == 200
        http.delete(f"/api/v1/namespaces/{ns}")
