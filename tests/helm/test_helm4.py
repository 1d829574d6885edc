"""helm 4.1 (``$TOOLS_DIR/bin/helm-4.1``, a second version installed by scripts/install-tools.sh).

A plan pinning ``4.1.4`` finds it on PATH once (copied into the runner's tools dir), then only in
that cache; plan -> apply -> teardown work with helm 4's flags (``--rollback-on-failure``,
``--wait=watcher``), decided in handlers/helm/flags.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from handlers.helm.flags import major_of, upgrade_flags, wait_flag
from runner.sdk import ToolSettings
from tests.helm.conftest import HELM4, ChartSource, deploy_plan, helm4_first_on_path
from tests.helm.test_deploy import as_apply_contents, decode, job
from tests.kube.conftest import Cluster


def test_flags_follow_the_major_version() -> None:
    assert major_of("4.1.4") == 4
    assert major_of("v3.17.2") == 3
    assert major_of(None) == 3
    assert upgrade_flags(3, 60) == ["--wait", "--atomic", "--timeout=60s"]
    assert upgrade_flags(4, 60) == ["--wait=watcher", "--rollback-on-failure", "--timeout=60s"]
    assert wait_flag(4) == "--wait=watcher"


@pytest.mark.kube
@pytest.mark.anyio
async def test_plan_pinning_helm_4_resolves_from_the_cache_and_applies(
    kube_cluster: Cluster,
    kube_namespace: str,
    chart_source: ChartSource,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tools = ToolSettings(tools_dir=tmp_path / "tools", child_grace=5.0)
    ns, source = kube_namespace, await chart_source.push()

    # First job: 4.1.4 is not cached; the helm on PATH reports it and is copied into the cache.
    helm4_first_on_path(tmp_path, monkeypatch)
    planned = await job(
        deploy_plan(kube_cluster, ns, source, helm_version=HELM4), "create-apply-plan", tmp_path, tools
    )
    assert (tools.tools_dir / "helm" / HELM4 / "helm").is_file()
    assert decode(planned.result)["op"] == "install"
    monkeypatch.undo()  # from here on the only 4.1.4 is the cached one

    applied = await job(
        deploy_plan(kube_cluster, ns, source, helm_version=HELM4, contents=as_apply_contents(planned.result)),
        "apply-plan",
        tmp_path,
        tools,
    )
    assert any(m.startswith("helm from the cache") for m in applied.log.messages())
    commands = [m for m in applied.log.messages() if m.startswith("$ ")]
    assert any("--rollback-on-failure" in m and "--wait=watcher" in m for m in commands)
    assert not any("--atomic" in m for m in commands)
    assert applied.outputs["revision"] == 1
    assert applied.outputs["status"] == "deployed"
    assert kube_cluster.kubectl("-n", ns, "get", "configmap", "demo-settings", "-o", "name").strip()

    down = await job(
        deploy_plan(kube_cluster, ns, source, helm_version=HELM4), "create-teardown-plan", tmp_path, tools
    )
    gone = await job(
        deploy_plan(kube_cluster, ns, source, helm_version=HELM4, contents=as_apply_contents(down.result)),
        "apply-plan",
        tmp_path,
        tools,
    )
    assert gone.outputs["status"] == "uninstalled"
