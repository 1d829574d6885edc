"""helm-chart-deploy with ``storage_driver: nuon``: the release records live in the real control
plane (its helm release routes, over loopback HTTP with the runner token), staged into the real
apiserver only while helm runs (handlers/helm/nuon.py).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from handlers.helm.deploy import HelmDeployHandler
from runner.adapters import RunnerHandlerAPI
from runner.api.client import RetryPolicy, RunnerClient
from runner.sdk import HandlerAPI, ToolSettings
from runner.testing import make_context, run_handler
from tests.helm.conftest import HELM4, ChartSource, deploy_plan, helm4_first_on_path, op_contents
from tests.helm.test_deploy import JOB, as_apply_contents, decode, job, kubectl_json, plan_and_apply
from tests.kube.conftest import Cluster
from tests.support.controlplane import ControlPlaneProcess

pytestmark = pytest.mark.kube

CHART_ID = "hc-nuon"


@dataclass
class Nuon:
    """One test's release under ``storage_driver: nuon``: the cluster and namespace, the real
    control plane (``control_plane``, its own process) and the runner's handler API to it."""

    cluster: Cluster
    ns: str
    source: dict[str, Any]
    tools: ToolSettings
    cp: ControlPlaneProcess
    api: RunnerHandlerAPI
    tmp_path: Path

    def plan(self, *, ns: str = "", chart: str = CHART_ID, **helm: Any) -> dict[str, Any]:
        return deploy_plan(
            self.cluster, ns or self.ns, self.source, storage_driver="nuon", helm_chart_id=chart, **helm
        )

    async def run(
        self,
        plan: dict[str, Any],
        operation: str,
        *,
        api: HandlerAPI | None = None,
        raise_errors: bool = True,
    ) -> Any:
        return await job(
            plan, operation, self.tmp_path, self.tools, api=api or self.api, raise_errors=raise_errors
        )

    async def deploy(self, **helm: Any) -> tuple[Any, Any]:
        """Plan, then apply it (``helm``: the plan's helm section, e.g. ``values``)."""
        return await plan_and_apply(
            self.cluster,
            self.ns,
            self.source,
            self.tmp_path,
            self.tools,
            api=self.api,
            storage_driver="nuon",
            helm_chart_id=CHART_ID,
            **helm,
        )

    def stored(self, *, ns: str = "", chart: str = CHART_ID) -> list[tuple[int, str]]:
        """(version, status) of every record the control plane holds, read over its HTTP routes."""
        with self.cp.runner_http() as http:
            answer = http.get(f"/v1/helm-releases/{chart}/releases/{ns or self.ns}")
        assert answer.status_code == 200, answer.text
        return sorted((r["version"], r["info"]["status"]) for r in answer.json())

    def helm_secrets(self, ns: str = "") -> list[str]:
        """The helm release Secrets in the namespace (staged records; none between jobs)."""
        items = kubectl_json(self.cluster, "-n", ns or self.ns, "get", "secrets", "-l", "owner=helm")["items"]
        return sorted(i["metadata"]["name"] for i in items)

    def settings(self) -> dict[str, str]:
        data: dict[str, str] = kubectl_json(self.cluster, "-n", self.ns, "get", "configmap", "demo-settings")[
            "data"
        ]
        return data


@pytest.fixture
async def nuon(
    kube_cluster: Cluster,
    kube_namespace: str,
    chart_source: ChartSource,
    helm_tools: ToolSettings,
    control_plane: ControlPlaneProcess,
    tmp_path: Path,
) -> AsyncIterator[Nuon]:
    source = await chart_source.push()
    async with RunnerClient(control_plane.url, control_plane.runner_token, control_plane.runner_id) as client:
        yield Nuon(
            kube_cluster,
            kube_namespace,
            source,
            helm_tools,
            control_plane,
            RunnerHandlerAPI(client),
            tmp_path,
        )


def color(value: str) -> list[dict[str, str]]:
    return [{"name": "color", "value": value, "type": "string"}]


@pytest.mark.anyio
async def test_history_lives_in_the_control_plane_and_survives_the_cluster_records(nuon: Nuon) -> None:
    planned, applied = await nuon.deploy()
    assert decode(planned.result)["op"] == "install"
    assert applied.outputs["revision"] == 1
    assert applied.outputs["status"] == "deployed"
    assert nuon.stored() == [(1, "deployed")]
    # Nothing of the release is left in the cluster but its objects.
    assert nuon.helm_secrets() == []
    assert nuon.settings()["color"] == "blue"
    assert any("staged as helm Secrets" in m for m in applied.log.messages())

    for revision, value in ((2, "red"), (3, "green")):
        planned, applied = await nuon.deploy(values=color(value))
        plan = decode(planned.result)
        # The plan diffed against the live release, which only the control plane remembers.
        assert plan["op"] == "upgrade"
        changed = [d for d in plan["helm_content_diff"] if d["type"] != 0]
        assert [(d["name"], d["entries"][0]["path"]) for d in changed] == [("demo-settings", "data.color")]
        assert applied.outputs["revision"] == revision
        assert nuon.helm_secrets() == []
    assert nuon.stored() == [(1, "superseded"), (2, "superseded"), (3, "deployed")]

    with nuon.cp.runner_http() as http:
        releases = f"/v1/helm-releases/{CHART_ID}/releases/{nuon.ns}"
        record = http.get(f"{releases}/sh.helm.release.v1.demo.v3").json()
        deployed = http.get(f"{releases}/query", params={"status": "deployed"})
    assert record["config"] == {"color": "green"}
    assert "demo-settings" in record["manifest"]
    assert [r["version"] for r in deployed.json()] == [3]

    # Teardown: helm's uninstall removes the records, so the control plane forgets them too.
    down = await nuon.run(nuon.plan(), "create-teardown-plan")
    assert decode(down.result)["op"] == "uninstall"
    gone = await nuon.run(nuon.plan(contents=as_apply_contents(down.result)), "apply-plan")
    assert (gone.outputs or {})["status"] == "uninstalled"
    assert nuon.stored() == []
    assert nuon.helm_secrets() == []


@pytest.mark.anyio
async def test_records_left_in_the_cluster_are_taken_over(nuon: Nuon) -> None:
    """Records in the cluster that the control plane lacks (a runner killed before its write-back,
    or a release kept by helm's secret driver until the plan switched) win and are written back."""
    await plan_and_apply(nuon.cluster, nuon.ns, nuon.source, nuon.tmp_path, nuon.tools)  # secret driver
    assert nuon.helm_secrets() == ["sh.helm.release.v1.demo.v1"]
    assert nuon.stored() == []

    planned, applied = await nuon.deploy(values=color("red"))
    assert decode(planned.result)["op"] == "upgrade"
    assert any("that the control plane does not hold" in m for m in planned.log.messages("warning"))
    assert applied.outputs["revision"] == 2
    assert nuon.stored() == [(1, "superseded"), (2, "deployed")]
    assert nuon.helm_secrets() == []


class WritesGoNowhere:
    """The control plane reachable for staging, gone for the write-back: reads through ``api``,
    writes through a real client pointed at a closed loopback port."""

    def __init__(self, api: RunnerHandlerAPI, dead: RunnerHandlerAPI) -> None:
        self._api, self._dead = api, dead

    def __getattr__(self, name: str) -> Any:
        if name in ("create_helm_release", "update_helm_release", "delete_helm_release"):
            return getattr(self._dead, name)
        return getattr(self._api, name)


@pytest.mark.anyio
async def test_a_failed_write_back_keeps_the_records_staged_for_the_next_job(nuon: Nuon) -> None:
    await nuon.deploy()
    async with RunnerClient(
        "http://127.0.0.1:9", "t", "r", timeout=1.0, retry=RetryPolicy(attempts=1)
    ) as dead:
        failed = await nuon.run(
            nuon.plan(values=color("red"), contents=op_contents("upgrade")),
            "apply-plan",
            api=WritesGoNowhere(nuon.api, RunnerHandlerAPI(dead)),
            raise_errors=False,
        )
    assert failed.error is not None
    message = str(failed.error)
    assert "the control plane did not take the release records" in message
    assert "the next job writes them back" in message
    # helm did upgrade; the records stay where helm wrote them, nothing is lost.
    assert nuon.settings()["color"] == "red"
    assert nuon.helm_secrets() == ["sh.helm.release.v1.demo.v1", "sh.helm.release.v1.demo.v2"]
    assert nuon.stored() == [(1, "deployed")]

    replan = await nuon.run(nuon.plan(values=color("red")), "create-apply-plan")
    assert decode(replan.result)["plan"] == "no changes"
    assert nuon.stored() == [(1, "superseded"), (2, "deployed")]
    assert nuon.helm_secrets() == []


@pytest.mark.anyio
async def test_a_missing_namespace_with_records_in_the_control_plane(nuon: Nuon) -> None:
    """The control plane remembers a release whose namespace is gone: the job fails rather than
    let helm install it again at revision 1, unless create_namespace asks for the namespace."""
    await nuon.deploy()
    with nuon.cp.runner_http() as http:
        record = http.get(f"/v1/helm-releases/{CHART_ID}/releases/{nuon.ns}/sh.helm.release.v1.demo.v1")
    ns = f"nuon-{uuid.uuid4().hex[:8]}"
    await nuon.api.create_helm_release(
        "hc-moved", ns, "sh.helm.release.v1.demo.v1", {**record.json(), "namespace": ns}
    )
    try:
        run = await nuon.run(nuon.plan(ns=ns, chart="hc-moved"), "create-apply-plan", raise_errors=False)
        assert run.error is not None
        assert f"namespace {ns} does not exist, and the control plane holds 1 record(s)" in str(run.error)
        assert not [m for m in run.log.messages() if m.startswith("$ helm upgrade")]

        planned = await nuon.run(
            nuon.plan(ns=ns, chart="hc-moved", create_namespace=True), "create-apply-plan"
        )
        assert decode(planned.result)["op"] == "upgrade"
        assert any(f"created namespace {ns}" in m for m in planned.log.messages())
        assert nuon.helm_secrets(ns) == []
        assert nuon.stored(ns=ns, chart="hc-moved") == [(1, "deployed")]
    finally:
        nuon.cluster.kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found")


@pytest.mark.anyio
async def test_nuon_needs_a_helm_chart_id(nuon: Nuon) -> None:
    run = await nuon.run(nuon.plan(chart=""), "create-apply-plan", raise_errors=False)
    assert run.error is not None
    assert "helm_chart_id" in str(run.error)


@pytest.mark.anyio
async def test_a_failed_upgrade_and_its_rollback_are_kept_in_the_control_plane(nuon: Nuon) -> None:
    """helm's --atomic rollback writes revisions too: the job fails with helm's message, and the
    control plane holds the failed revision and the rollback's, as helm's own drivers would."""
    await nuon.deploy()
    broken = [{"name": "broken", "value": "true"}]
    failed = await nuon.run(
        nuon.plan(values=broken, contents=op_contents("upgrade")), "apply-plan", raise_errors=False
    )
    assert failed.error is not None
    assert "Not_A_Valid_Name" in str(failed.error)
    assert nuon.stored() == [(1, "superseded"), (2, "failed"), (3, "deployed")]
    assert nuon.helm_secrets() == []


@pytest.mark.anyio
async def test_a_cancel_during_wait_still_writes_the_records_back(nuon: Nuon) -> None:
    """Cancelled while helm waits (the Deployment never becomes ready here): the write-back is
    shielded, so the control plane learns the revision helm had written, and the next job, with
    nothing left in the cluster, recovers the release from the control plane's records alone."""
    await nuon.deploy()
    workspace = nuon.tmp_path / "ws-cancel"
    workspace.mkdir()
    ctx = make_context(
        JOB,
        nuon.plan(values=[{"name": "web", "value": "true"}], contents=op_contents("upgrade")),
        workspace=workspace,
        operation="apply-plan",
        tools=nuon.tools,
        api=nuon.api,
    )
    run = await run_handler(HelmDeployHandler(), ctx=ctx, cancel_after=4.0, raise_errors=False)
    assert run.cancelled
    records = nuon.stored()
    # helm 3's --atomic answers the SIGINT with its rollback: 1 superseded, 2 failed, 3 deployed
    # here; a helm killed before it could would leave 2 pending-upgrade. Either way every revision
    # helm wrote reached the control plane.
    assert [version for version, _ in records] == list(range(1, len(records) + 1))
    assert len(records) >= 2, "the interrupted upgrade's revision reached the control plane"
    assert nuon.helm_secrets() == []

    _, again = await nuon.deploy()
    assert again.outputs["status"] == "deployed"
    assert nuon.stored()[-1] == (again.outputs["revision"], "deployed")
    assert nuon.helm_secrets() == []


@pytest.mark.anyio
async def test_nuon_with_helm_4(nuon: Nuon, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reference links helm 4: its secret driver's records stage and write back the same."""
    helm4_first_on_path(nuon.tmp_path, monkeypatch)
    nuon.tools = ToolSettings(tools_dir=nuon.tmp_path / "tools4", child_grace=5.0)
    for revision, value in ((1, "blue"), (2, "red")):
        planned, applied = await nuon.deploy(values=color(value), helm_version=HELM4)
        assert decode(planned.result)["op"] == ("install" if revision == 1 else "upgrade")
        assert applied.outputs["revision"] == revision
        assert any("--rollback-on-failure" in m for m in applied.log.messages() if m.startswith("$ "))
        assert nuon.helm_secrets() == []
    assert nuon.stored() == [(1, "superseded"), (2, "deployed")]
