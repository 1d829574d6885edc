"""Our Helm chart installed for real into the apiserver, and its service account's permissions.

``helm install`` of ``deploy/helm/byoc-runner`` (no ``--wait``: no pod ever runs here) creates
every object of the release's manifest; ``kubectl auth can-i --list`` as the chart's service
account shows exactly the rules of ``rbac.rules`` in values.yaml (what deploy/README.md points
to: one Role per namespace, explicit verbs, no wildcard) plus what every authenticated user has
(self access reviews), and nothing in other namespaces.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

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
def release(kube_cluster: Cluster) -> Iterator[tuple[str, str]]:
    ns = f"chart-{uuid.uuid4().hex[:8]}"
    helm(
        kube_cluster,
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
    )
    yield "byoc-runner", ns
    helm(kube_cluster, "uninstall", "byoc-runner", "--namespace", ns)
    kube_cluster.kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found")


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
    expected: dict[str, set[str]] = {k: set(v) for k, v in EVERYONE.items()}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                key = resource if not group else f"{resource}.{group}"
                expected.setdefault(key, set()).update(rule["verbs"])

    sa = next(d["metadata"]["name"] for d in manifest if d["kind"] == "ServiceAccount")
    token = kube_cluster.kubectl("create", "token", sa, "--namespace", ns, "--duration=600s").strip()
    kubeconfig = sa_kubeconfig(kube_cluster, token, ns, tmp_path / "sa-kubeconfig")
    assert can_i_list(kube_cluster, kubeconfig, ns) == expected
    assert can_i_list(kube_cluster, kubeconfig, "default") == EVERYONE, "nothing outside its namespace"
