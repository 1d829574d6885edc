"""helm-chart-deploy through the real control plane and a real ``runner run`` process:
plan -> apply -> re-plan (no change) -> teardown plan -> apply, with the chart artifact in a real
registry and the release in the real apiserver (no status patched: the chart needs no controller).
"""

from __future__ import annotations

import base64
import gzip
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helm.conftest import ChartSource, deploy_plan
from tests.kube.conftest import Cluster
from tests.support.controlplane import ControlPlaneProcess
from tests.support.runner_proc import RunnerProcess

pytestmark = [pytest.mark.kube, pytest.mark.integration]

JOB = "helm-chart-deploy"
TERMINAL = ("finished", "failed", "timed-out", "cancelled", "not-attempted")


@pytest.fixture
def helm_runner(control_plane: ControlPlaneProcess, tmp_path: Path) -> Iterator[RunnerProcess]:
    runner = RunnerProcess(control_plane, tmp_path / "runner-state", {})
    runner.start()
    try:
        runner.wait_ready()
        yield runner
    finally:
        if runner.proc is not None and runner.proc.poll() is None:
            runner.stop()


def finished(operator: Any, job: dict[str, Any], timeout: float = 120.0) -> dict[str, Any]:
    done: dict[str, Any] = operator.wait_job(job["id"], TERMINAL, timeout=timeout)
    if done["status"] != "finished":
        raise AssertionError(
            f"job {job['type']} {done['status']}: {json.dumps(operator.result(job['id']))[:2000]}"
        )
    return done


def contents_of(result: dict[str, Any]) -> dict[str, Any]:
    return dict(json.loads(gzip.decompress(base64.b64decode(result["contents_gzip"]))))


def types(result: dict[str, Any]) -> list[int]:
    return [d["type"] for d in contents_of(result)["helm_content_diff"]]


@pytest.mark.anyio
async def test_plan_apply_replan_teardown_through_the_control_plane(
    kube_cluster: Cluster,
    chart_source: ChartSource,
    control_plane: ControlPlaneProcess,
    helm_runner: RunnerProcess,
) -> None:
    ns = f"he2e-{uuid.uuid4().hex[:8]}"
    source = await chart_source.push()

    def plan(contents: str = "") -> dict[str, Any]:
        return deploy_plan(kube_cluster, ns, source, contents=contents, create_namespace=True)

    try:
        with control_plane.operator() as operator:
            planned_job = operator.submit(JOB, plan=plan(), operation="create-apply-plan")
            finished(operator, planned_job)
            planned = operator.result(planned_job["id"])
            assert contents_of(planned)["op"] == "install"
            assert types(planned) == [2, 2]

            apply_job = operator.submit(JOB, plan=plan(planned["contents_gzip"]), operation="apply-plan")
            done = finished(operator, apply_job)
            bodies = "\n".join(str(r.get("body", "")) for r in operator.logs(done["log_stream_id"]))
            assert f"release {ns}/demo: revision 1 deployed (chart demo 0.1.0)" in bodies
            assert kube_cluster.token not in bodies

            replan_job = operator.submit(JOB, plan=plan(), operation="create-apply-plan")
            finished(operator, replan_job)
            replan = operator.result(replan_job["id"])
            assert contents_of(replan)["plan"] == "no changes"
            assert types(replan) == [0, 0]

            down_job = operator.submit(JOB, plan=plan(), operation="create-teardown-plan")
            finished(operator, down_job)
            down = operator.result(down_job["id"])
            assert contents_of(down)["op"] == "uninstall"
            assert types(down) == [1, 1]
            destroy = operator.submit(JOB, plan=plan(down["contents_gzip"]), operation="apply-plan")
            finished(operator, destroy)
        assert "demo-settings" not in kube_cluster.kubectl("-n", ns, "get", "configmaps")
        assert "sh.helm.release" not in kube_cluster.kubectl("-n", ns, "get", "secrets")
    finally:
        kube_cluster.kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found")


@pytest.mark.anyio
async def test_nuon_storage_through_the_control_plane(
    kube_cluster: Cluster,
    chart_source: ChartSource,
    control_plane: ControlPlaneProcess,
    helm_runner: RunnerProcess,
) -> None:
    """``storage_driver: nuon`` in a real runner process: its records go to the control plane it
    polls (the daemon's handler API), two revisions, none left in the cluster between jobs."""
    ns = f"hnuon-{uuid.uuid4().hex[:8]}"
    source = await chart_source.push()

    def plan(contents: str = "", color: str = "blue") -> dict[str, Any]:
        values = [{"name": "color", "value": color, "type": "string"}]
        return deploy_plan(
            kube_cluster,
            ns,
            source,
            contents=contents,
            values=values,
            create_namespace=True,
            storage_driver="nuon",
            helm_chart_id="hc-e2e",
        )

    try:
        with control_plane.operator() as operator:
            for color, op in (("blue", "install"), ("red", "upgrade")):
                planned_job = operator.submit(JOB, plan=plan(color=color), operation="create-apply-plan")
                finished(operator, planned_job)
                planned = operator.result(planned_job["id"])
                assert contents_of(planned)["op"] == op
                apply_job = operator.submit(
                    JOB, plan=plan(planned["contents_gzip"], color), operation="apply-plan"
                )
                finished(operator, apply_job)
                assert "sh.helm.release" not in kube_cluster.kubectl("-n", ns, "get", "secrets")
        with control_plane.runner_http() as http:
            records = http.get(f"/v1/helm-releases/hc-e2e/releases/{ns}").json()
        assert sorted((r["version"], r["info"]["status"], r["config"]["color"]) for r in records) == [
            (1, "superseded", "blue"),
            (2, "deployed", "red"),
        ]
    finally:
        kube_cluster.kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found")
