"""Our Helm chart installed for real into the apiserver, and its service account's permissions.

``helm install`` of ``deploy/helm/byoc-runner`` (no ``--wait``: no pod ever runs here) creates
every object of the release's manifest; ``kubectl auth can-i --list`` as the chart's service
account shows exactly the rules of ``rbac.rules`` in values.yaml (what deploy/README.md points
to: one Role per namespace, explicit verbs, no wildcard) plus what every authenticated user has
(self access reviews), and nothing in other namespaces.

With ``rbac.clusterScoped=true`` the same service account has exactly the ClusterRole's rules in
every namespace, and a runner outside the cluster using its token runs a
kubernetes-manifest-deploy job that creates a Namespace and deploys into it (forbidden in the
default mode, see test_access_and_sandbox.py).
"""

from __future__ import annotations

import base64
import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml

from handlers.kube.deploy import KubernetesManifestDeployHandler
from runner.testing import run_handler
from tests.kube.conftest import CHART, Cluster, sa_kubeconfig
from tests.support.tools import require_tool

pytestmark = pytest.mark.kube

#: Granted to every authenticated user by the default ClusterRoles (system:basic-user).
EVERYONE = {
    "selfsubjectaccessreviews.authorization.k8s.io": {"create"},
    "selfsubjectrulesreviews.authorization.k8s.io": {"create"},
}


def helm(cluster: Cluster, *args: str) -> str:
    proc = subprocess.run(
        [require_tool("helm"), f"--kubeconfig={cluster.kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def install(cluster: Cluster, *extra: str) -> Iterator[tuple[str, str]]:
    """The chart installed into a fresh namespace; uninstalled after (ClusterRole included)."""
    ns = f"chart-{uuid.uuid4().hex[:8]}"
    helm(
        cluster,
        "install",
        "byoc-runner",
        str(CHART),
        "--namespace",
        ns,
        "--create-namespace",
        "--set",
        "runner.id=runner-chart-test",
        "--set",
        "runner.apiUrl=https://cp.invalid",
        "--set",
        "token.value=chart-test-token",
        *extra,
    )
    yield "byoc-runner", ns
    helm(cluster, "uninstall", "byoc-runner", "--namespace", ns)
    cluster.kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found")


@pytest.fixture
def release(kube_cluster: Cluster) -> Iterator[tuple[str, str]]:
    yield from install(kube_cluster)


@pytest.fixture
def cluster_release(kube_cluster: Cluster) -> Iterator[tuple[str, str]]:
    yield from install(kube_cluster, "--set", "rbac.clusterScoped=true")


def manifest_of(cluster: Cluster, name: str, ns: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(helm(cluster, "get", "manifest", name, "--namespace", ns)) if d]


def expected_rows(rules: list[dict[str, Any]]) -> dict[str, set[str]]:
    """What ``can-i --list`` shows for ``rules`` plus what everyone has."""
    expected: dict[str, set[str]] = {k: set(v) for k, v in EVERYONE.items()}
    for rule in rules:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                key = resource if not group else f"{resource}.{group}"
                expected.setdefault(key, set()).update(rule["verbs"])
    return expected


def sa_kubeconfig_of(cluster: Cluster, manifest: list[dict[str, Any]], ns: str, tmp_path: Path) -> Path:
    sa = next(d["metadata"]["name"] for d in manifest if d["kind"] == "ServiceAccount")
    token = cluster.kubectl("create", "token", sa, "--namespace", ns, "--duration=600s").strip()
    return sa_kubeconfig(cluster, token, ns, tmp_path / "sa-kubeconfig")


def can_i_list(cluster: Cluster, kubeconfig: Path, namespace: str) -> dict[str, set[str]]:
    """``kubectl auth can-i --list`` as ``{resource: verbs}`` (resource rows only)."""
    out = cluster.kubectl("auth", "can-i", "--list", "--namespace", namespace, kubeconfig=kubeconfig)
    rows: dict[str, set[str]] = {}
    for line in out.splitlines()[1:]:
        first = line.split()[0] if line.split() else "["
        if first.startswith("["):  # a non-resource URL row (the Resources column is empty)
            continue
        verbs = line[line.rindex("[") + 1 : line.rindex("]")].split()
        rows.setdefault(first, set()).update(verbs)
    return rows


def test_helm_install_creates_every_object_and_the_sa_has_exactly_the_chart_rules(
    kube_cluster: Cluster, release: tuple[str, str], tmp_path: Path
) -> None:
    name, ns = release
    manifest = [
        d for d in yaml.safe_load_all(helm(kube_cluster, "get", "manifest", name, "--namespace", ns)) if d
    ]
    kinds = sorted(d["kind"] for d in manifest)
    assert {"Deployment", "Role", "RoleBinding", "Secret", "ServiceAccount"} <= set(kinds)
    for doc in manifest:
        kube_cluster.kubectl("get", doc["kind"], doc["metadata"]["name"], "--namespace", ns)

    role = next(d for d in manifest if d["kind"] == "Role")
    expected = expected_rows(role["rules"])
    kubeconfig = sa_kubeconfig_of(kube_cluster, manifest, ns, tmp_path)
    assert can_i_list(kube_cluster, kubeconfig, ns) == expected
    assert can_i_list(kube_cluster, kubeconfig, "default") == EVERYONE, "nothing outside its namespace"


@pytest.mark.anyio
async def test_cluster_scoped_switch_grants_exactly_its_cluster_role_everywhere_and_is_enough(
    kube_cluster: Cluster, cluster_release: tuple[str, str], tmp_path: Path
) -> None:
    name, ns = cluster_release
    manifest = manifest_of(kube_cluster, name, ns)
    assert not [d for d in manifest if d["kind"] in ("Role", "RoleBinding")]
    cluster_role = next(d for d in manifest if d["kind"] == "ClusterRole")
    for doc in manifest:
        kube_cluster.kubectl("get", doc["kind"], doc["metadata"]["name"], "--namespace", ns)
    kubeconfig = sa_kubeconfig_of(kube_cluster, manifest, ns, tmp_path)
    expected = expected_rows(cluster_role["rules"])
    for where in (ns, "default", "kube-system"):
        assert can_i_list(kube_cluster, kubeconfig, where) == expected, where

    # No bind/escalate: a ClusterRole granting what the runner does not hold is refused.
    with pytest.raises(AssertionError, match="attempting to grant RBAC permissions not currently held"):
        kube_cluster.kubectl(
            "create",
            "clusterrole",
            f"too-much-{uuid.uuid4().hex[:8]}",
            "--verb=get",
            "--resource=nodes",
            kubeconfig=kubeconfig,
        )

    target = f"deployed-{uuid.uuid4().hex[:8]}"
    docs = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": target}},
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "app-config", "namespace": target},
            "data": {"k": "v"},
        },
    ]
    spec = {
        "namespace": target,
        "manifest": "\n---\n".join(json.dumps(d) for d in docs),
        "cluster_info": {"kube_config": kubeconfig.read_text()},
    }
    try:
        planned = await run_handler(
            KubernetesManifestDeployHandler(),
            {"kubernetes_manifest": spec, "apply_plan_contents": ""},
            job_type="kubernetes-manifest-deploy",
            operation="create-apply-plan",
            workspace=tmp_path / "plan",
        )
        assert planned.ctx.result is not None
        assert planned.ctx.result.contents_compressed
        contents = base64.b64encode(base64.urlsafe_b64decode(planned.ctx.result.contents_compressed)).decode()
        applied = await run_handler(
            KubernetesManifestDeployHandler(),
            {"kubernetes_manifest": spec, "apply_plan_contents": contents},
            job_type="kubernetes-manifest-deploy",
            operation="apply-plan",
            workspace=tmp_path / "apply",
            deadline=anyio.current_time() + 60,
        )
        assert applied.outputs is not None
        assert [o["name"] for o in applied.outputs["objects"]] == [target, "app-config"]
        got = kube_cluster.kubectl("get", "configmap", "app-config", "--namespace", target, "-o", "json")
        assert json.loads(got)["data"] == {"k": "v"}
    finally:
        kube_cluster.kubectl("delete", "namespace", target, "--wait=false", "--ignore-not-found")
