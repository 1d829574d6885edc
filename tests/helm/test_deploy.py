"""helm-chart-deploy with the real helm binary against the real apiserver, via ``runner.testing``.

The chart (conftest.py) has a ConfigMap, a post-install/post-upgrade hook and, with ``web=true``,
a Deployment that never becomes ready here (no kubelet, and no ReplicaSet from the controller
manager): the cancel and killed-helm tests use it to hold helm in ``--wait``. No status is patched.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest

from handlers.helm.deploy import HelmDeployHandler
from runner.sdk import ToolSettings
from runner.sdk.ports import HandlerAPI
from runner.testing import make_context, run_handler
from tests.helm.conftest import ChartSource, deploy_plan, op_contents
from tests.kube.conftest import Cluster

pytestmark = pytest.mark.kube

JOB = "helm-chart-deploy"


def decode(result: Any) -> dict[str, Any]:
    assert result.contents_compressed == result.contents_display_compressed
    return dict(json.loads(gzip.decompress(base64.urlsafe_b64decode(result.contents_compressed))))


def as_apply_contents(result: Any) -> str:
    """What the control plane hands an apply job: base64-std of the plan job's raw bytes."""
    return base64.b64encode(base64.urlsafe_b64decode(result.contents_compressed)).decode()


def types(contents: dict[str, Any]) -> dict[str, int]:
    return {f"{d['kind']}/{d['name']}": d["type"] for d in contents["helm_content_diff"]}


async def job(
    plan: dict[str, Any],
    operation: str,
    tmp_path: Path,
    tools: ToolSettings,
    *,
    raise_errors: bool = True,
    **kw: Any,
) -> Any:
    """One helm-chart-deploy job in a fresh workspace; ``kw`` goes to ``make_context`` (``api=``)."""
    workspace = tmp_path / f"ws-{uuid.uuid4().hex[:6]}"
    workspace.mkdir()
    ctx = make_context(JOB, plan, workspace=workspace, operation=operation, tools=tools, **kw)
    return await run_handler(HelmDeployHandler(), ctx=ctx, raise_errors=raise_errors)


async def plan_and_apply(
    cluster: Cluster,
    ns: str,
    source: dict[str, Any],
    tmp_path: Path,
    tools: ToolSettings,
    *,
    api: HandlerAPI | None = None,
    **helm: Any,
) -> tuple[Any, Any]:
    """create-apply-plan, then apply-plan with its contents; ``helm`` goes into the plan's section."""
    planned = await job(
        deploy_plan(cluster, ns, source, **helm), "create-apply-plan", tmp_path, tools, api=api
    )
    applied = await job(
        deploy_plan(cluster, ns, source, contents=as_apply_contents(planned.result), **helm),
        "apply-plan",
        tmp_path,
        tools,
        api=api,
    )
    return planned, applied


def kubectl_json(cluster: Cluster, *args: str) -> Any:
    return json.loads(cluster.kubectl(*args, "-o", "json"))


@pytest.mark.anyio
async def test_plan_apply_replan_change_and_teardown(
    kube_cluster: Cluster,
    kube_namespace: str,
    chart_source: ChartSource,
    helm_tools: ToolSettings,
    tmp_path: Path,
) -> None:
    ns, source = kube_namespace, await chart_source.push()
    planned, applied = await plan_and_apply(kube_cluster, ns, source, tmp_path, helm_tools)
    contents = decode(planned.result)
    assert contents["op"] == "install"
    assert types(contents) == {
        "ConfigMap/demo-settings": 2,
        "ConfigMap/demo-hook": 2,
    }
    assert applied.outputs == {
        "release": "demo",
        "namespace": ns,
        "revision": 1,
        "status": "deployed",
        "chart": "demo",
        "chart_version": "0.1.0",
        "app_version": "1.0.0",
    }
    assert any("--wait" in m and "--atomic" in m for m in applied.log.messages() if m.startswith("$ "))
    settings = kubectl_json(kube_cluster, "-n", ns, "get", "configmap", "demo-settings")
    assert settings["data"] == {"greeting": "hello", "color": "blue"}
    assert kubectl_json(kube_cluster, "-n", ns, "get", "configmap", "demo-hook")["data"] == {"chart": "0.1.0"}
    assert kube_cluster.kubeconfig.read_text().split("token: ")[-1].split()[0] not in applied.log.text()

    replan = await job(deploy_plan(kube_cluster, ns, source), "create-apply-plan", tmp_path, helm_tools)
    again = decode(replan.result)
    assert again["op"] == "upgrade"
    assert again["plan"] == "no changes"
    assert set(types(again).values()) == {0}

    changed = [{"name": "color", "value": "red", "type": "string"}]
    planned2 = await job(
        deploy_plan(kube_cluster, ns, source, values=changed), "create-apply-plan", tmp_path, helm_tools
    )
    diff = decode(planned2.result)
    modified = [d for d in diff["helm_content_diff"] if d["type"] != 0]
    # Exactly that change, nothing else.
    by_name = {d["name"]: d["entries"] for d in modified}
    assert by_name["demo-settings"] == [
        {"path": "data.color", "original": "blue", "applied": "red", "type": 3}
    ]
    assert set(by_name) == {"demo-settings"}
    applied2 = await job(
        deploy_plan(kube_cluster, ns, source, values=changed, contents=as_apply_contents(planned2.result)),
        "apply-plan",
        tmp_path,
        helm_tools,
    )
    assert applied2.outputs["revision"] == 2
    assert kubectl_json(kube_cluster, "-n", ns, "get", "configmap", "demo-settings")["data"]["color"] == "red"

    down = await job(deploy_plan(kube_cluster, ns, source), "create-teardown-plan", tmp_path, helm_tools)
    teardown = decode(down.result)
    assert teardown["op"] == "uninstall"
    assert set(types(teardown).values()) == {1}
    assert "ConfigMap/demo-settings" in types(teardown)
    gone = await job(
        deploy_plan(kube_cluster, ns, source, contents=as_apply_contents(down.result)),
        "apply-plan",
        tmp_path,
        helm_tools,
    )
    assert gone.outputs == {"release": "demo", "namespace": ns, "status": "uninstalled"}
    left = kubectl_json(kube_cluster, "-n", ns, "get", "configmaps,deployments,secrets", "-l", "owner=helm")
    assert left["items"] == []
    assert "demo-settings" not in kube_cluster.kubectl("-n", ns, "get", "configmaps")


@pytest.mark.anyio
async def test_values_precedence_files_in_order_then_values(
    kube_cluster: Cluster,
    kube_namespace: str,
    chart_source: ChartSource,
    helm_tools: ToolSettings,
    tmp_path: Path,
) -> None:
    ns, source = kube_namespace, await chart_source.push()
    files = ["greeting: from-first\ncolor: first\n", "color: second\nextra: from-second\n"]
    values = [
        {"name": "extra", "value": "s3cr3t-inline", "type": "string"},
        {"name": "greeting", "value": "true", "type": "string"},
        {"name": "replicas", "value": "0", "type": "auto"},
    ]
    _, applied = await plan_and_apply(
        kube_cluster, ns, source, tmp_path, helm_tools, values=values, values_files=files
    )
    data = kubectl_json(kube_cluster, "-n", ns, "get", "configmap", "demo-settings")["data"]
    # chart default < first file < second file < values[]
    assert data == {"greeting": "true", "color": "second", "extra": "s3cr3t-inline"}
    commands = [m for m in applied.log.messages() if m.startswith("$ ")]
    assert commands, "the helm command lines are logged"
    assert not any("s3cr3t-inline" in m for m in commands), "a string value never reaches argv"
    assert any("--set replicas=0" in m for m in commands)
    assert any("--set-file extra=" in m for m in commands)


@pytest.mark.anyio
async def test_configmap_storage_driver_keeps_history_in_configmaps(
    kube_cluster: Cluster,
    kube_namespace: str,
    chart_source: ChartSource,
    helm_tools: ToolSettings,
    tmp_path: Path,
) -> None:
    ns, source = kube_namespace, await chart_source.push()
    await plan_and_apply(kube_cluster, ns, source, tmp_path, helm_tools, storage_driver="configmaps")
    _, second = await plan_and_apply(
        kube_cluster,
        ns,
        source,
        tmp_path,
        helm_tools,
        storage_driver="configmap",
        values=[{"name": "color", "value": "green"}],
    )
    assert second.outputs["revision"] == 2
    stored = kubectl_json(kube_cluster, "-n", ns, "get", "configmaps", "-l", "owner=helm,name=demo")
    assert sorted(i["metadata"]["name"] for i in stored["items"]) == [
        "sh.helm.release.v1.demo.v1",
        "sh.helm.release.v1.demo.v2",
    ]
    assert kubectl_json(kube_cluster, "-n", ns, "get", "secrets", "-l", "owner=helm")["items"] == []


@pytest.mark.anyio
async def test_unknown_storage_driver_fails_before_helm_runs(
    kube_cluster: Cluster, chart_source: ChartSource, helm_tools: ToolSettings, tmp_path: Path
) -> None:
    plan = deploy_plan(kube_cluster, "default", {}, storage_driver="etcd")
    ctx = make_context(JOB, plan, workspace=tmp_path, operation="create-apply-plan", tools=helm_tools)
    run = await run_handler(HelmDeployHandler(), ctx=ctx, raise_errors=False)
    assert run.error is not None
    assert "storage_driver 'etcd' is not supported" in str(run.error)
    assert not [m for m in run.log.messages() if m.startswith("$ ")]


@pytest.mark.anyio
async def test_failing_upgrade_rolls_back_with_helms_message(
    kube_cluster: Cluster,
    kube_namespace: str,
    chart_source: ChartSource,
    helm_tools: ToolSettings,
    tmp_path: Path,
) -> None:
    ns, source = kube_namespace, await chart_source.push()
    await plan_and_apply(kube_cluster, ns, source, tmp_path, helm_tools)
    broken = [{"name": "broken", "value": "true"}, {"name": "color", "value": "red"}]
    planned = await job(
        deploy_plan(kube_cluster, ns, source, values=broken), "create-teardown-plan", tmp_path, helm_tools
    )
    del planned
    upgrade_contents = op_contents("upgrade")
    ws = tmp_path / "ws-fail"
    ws.mkdir()
    ctx = make_context(
        JOB,
        deploy_plan(kube_cluster, ns, source, values=broken, contents=upgrade_contents),
        workspace=ws,
        operation="apply-plan",
        tools=helm_tools,
    )
    run = await run_handler(HelmDeployHandler(), ctx=ctx, raise_errors=False)
    assert run.error is not None
    message = str(run.error)
    assert (
        "Not_A_Valid_Name" in message and "rolled back" in message.lower()
    ) or "rollback" in message.lower(), message
    history = json.loads(
        subprocess.run(
            [
                os.environ.get("HELM", "helm"),
                "history",
                "demo",
                "-n",
                ns,
                "-o",
                "json",
                f"--kubeconfig={kube_cluster.kubeconfig}",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert [h["status"] for h in history] == ["superseded", "failed", "deployed"]
    assert (
        kubectl_json(kube_cluster, "-n", ns, "get", "configmap", "demo-settings")["data"]["color"] == "blue"
    )


def helm_processes(marker: str) -> list[int]:
    """Pids of live processes whose command line mentions ``marker`` (the job's workspace)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().split(") ", 1)[1][0]
        except (OSError, IndexError):
            continue
        if marker in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


@pytest.mark.anyio
async def test_cancel_during_wait_leaves_no_helm_and_a_usable_release(
    kube_cluster: Cluster,
    kube_namespace: str,
    chart_source: ChartSource,
    helm_tools: ToolSettings,
    tmp_path: Path,
) -> None:
    ns, source = kube_namespace, await chart_source.push()
    await plan_and_apply(kube_cluster, ns, source, tmp_path, helm_tools)
    never_ready = [{"name": "web", "value": "true"}]
    contents = op_contents("upgrade")
    ws = tmp_path / "ws-cancel"
    ws.mkdir()
    ctx = make_context(
        JOB,
        deploy_plan(kube_cluster, ns, source, values=never_ready, contents=contents),
        workspace=ws,
        operation="apply-plan",
        tools=helm_tools,
    )
    run = await run_handler(HelmDeployHandler(), ctx=ctx, cancel_after=4.0, raise_errors=False)
    assert run.cancelled
    assert helm_processes(str(ws)) == [], "no helm process outlives the cancel"

    _, again = await plan_and_apply(kube_cluster, ns, source, tmp_path, helm_tools)
    assert again.outputs["status"] == "deployed"
    assert again.outputs["revision"] >= 3


@pytest.mark.anyio
async def test_pending_upgrade_left_by_a_killed_helm_is_recovered(
    kube_cluster: Cluster,
    kube_namespace: str,
    chart_source: ChartSource,
    helm_tools: ToolSettings,
    helm_bin: str,
    tmp_path: Path,
) -> None:
    ns, source = kube_namespace, await chart_source.push()
    await plan_and_apply(kube_cluster, ns, source, tmp_path, helm_tools)
    # A runner killed mid-upgrade: helm -> SIGKILL while it waits, the release stays pending-upgrade.
    chart = tmp_path / "charts" / "build1" / "artifact" / "chart.tgz"
    env = {**os.environ, "KUBECONFIG": str(kube_cluster.kubeconfig), "HELM_CONFIG_HOME": str(tmp_path / "hc")}
    proc = subprocess.Popen(
        [helm_bin, "upgrade", "demo", str(chart), "-n", ns, "--set", "web=true", "--wait", "--timeout=60s"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:
        history = json.loads(
            subprocess.run(
                [helm_bin, "history", "demo", "-n", ns, "-o", "json"],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        if history[-1]["status"] == "pending-upgrade":
            break
        assert time.monotonic() < deadline, history
        await anyio.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    planned, applied = await plan_and_apply(kube_cluster, ns, source, tmp_path, helm_tools)
    assert any("pending-upgrade" in m and "the apply will recover it" in m for m in planned.log.messages())
    assert any(
        m.startswith("recovering release") and "pending-upgrade" in m and "rolling back to revision 1" in m
        for m in applied.log.messages()
    )
    assert applied.outputs["status"] == "deployed"
    final = json.loads(
        subprocess.run(
            [helm_bin, "history", "demo", "-n", ns, "-o", "json"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert [h["status"] for h in final][-1] == "deployed"
    # helm rollback leaves the interrupted revision's record as it was; it no longer blocks.
    assert [h["status"] for h in final] == ["superseded", "pending-upgrade", "superseded", "deployed"]


@pytest.mark.anyio
async def test_sandbox_mode_reports_the_plans_fake_contents(
    kube_cluster: Cluster, helm_tools: ToolSettings, tmp_path: Path
) -> None:
    from runner.sdk.plans import SandboxMode

    plan = deploy_plan(kube_cluster, "default", {})
    plan["sandbox_mode"] = {
        "enabled": True,
        "outputs": {"release": "fake"},
        "helm": {"plan_contents": json.dumps({"op": "install", "helm_content_diff": []})},
    }
    ctx = make_context(JOB, plan, workspace=tmp_path, operation="create-apply-plan", tools=helm_tools)
    block = ctx.plan.sandbox_mode
    assert isinstance(block, SandboxMode)
    await HelmDeployHandler().sandbox(ctx, block)
    assert ctx.outputs == {"release": "fake"}
    assert ctx.result is not None
    assert ctx.result.contents_compressed is not None
    assert (
        json.loads(gzip.decompress(base64.urlsafe_b64decode(ctx.result.contents_compressed)))["op"]
        == "install"
    )
