"""The ``kube`` tier: a real kube-apiserver 1.20 + etcd (+ controller manager) on 127.0.0.1.

``scripts/services.sh start`` runs them (binaries from ``scripts/install-tools.sh``) and writes an
admin kubeconfig (a system:masters token, the cluster's CA: TLS is verified) to
``$SVC_DIR/kube/admin.kubeconfig`` (``RUNNER_TEST_KUBECONFIG`` overrides the path). A missing or
unready apiserver fails the tier in CI and skips it elsewhere (``tests/support/tools.py``).

``runner_sa`` installs the chart's own ServiceAccount, Role and RoleBinding (rendered by
``helm template`` from ``deploy/helm/byoc-runner``, nothing hand-written) and gives a kubeconfig
with that account's token, so a test sees exactly the permissions the chart grants.

There is no kubelet or scheduler: pods never run. A test that needs a controller's effect (a
Deployment ready, a Job complete) patches the object's status through the status subresource,
as the controller would, and says so.
"""

from __future__ import annotations

import base64
import os
import ssl
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

# moto on loopback as STS and Secrets Manager: tests/common's fixtures (the recording server, and
# ``sts``, which points RUNNER_AWS_ENDPOINT_URL at it and clears the runner's AWS environment).
from tests.common.conftest import recording_sts, sts  # noqa: F401
from tests.support.tools import in_ci, require_tool

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "byoc-runner"
RUNNER_NAMESPACE = "byoc-runner-test"
RELEASE = "byoc-runner"


@dataclass(frozen=True)
class Cluster:
    """The test apiserver: where it is and how to reach it as admin."""

    kubeconfig: Path
    server: str
    ca_file: Path
    token: str

    def kubectl(self, *args: str, kubeconfig: Path | None = None, stdin: str | None = None) -> str:
        proc = subprocess.run(
            [require_tool("kubectl-1.32"), f"--kubeconfig={kubeconfig or self.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc.stdout


@dataclass(frozen=True)
class ServiceAccountAccess:
    """The chart's service account in ``namespace``: its token and a kubeconfig (0600) carrying it."""

    namespace: str
    name: str
    token: str
    kubeconfig: Path


def _unavailable(message: str) -> None:
    if in_ci():
        pytest.fail(
            message + " - .ci/run must build and start it (install-tools.sh, services.sh)", pytrace=False
        )
    pytest.skip(message)


def admin_kubeconfig_path() -> Path:
    explicit = os.environ.get("RUNNER_TEST_KUBECONFIG")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("SVC_DIR", "/tmp/runner-test-svc")) / "kube" / "admin.kubeconfig"


@pytest.fixture(scope="session")
def kube_cluster(tmp_path_factory: pytest.TempPathFactory) -> Cluster:
    path = admin_kubeconfig_path()
    if not path.is_file():
        _unavailable(f"no kube-apiserver: {path} does not exist (scripts/services.sh start)")
    config = yaml.safe_load(path.read_text())
    cluster = config["clusters"][0]["cluster"]
    token = config["users"][0]["user"]["token"]
    ca_file = tmp_path_factory.mktemp("kube-ca") / "ca.crt"
    ca_file.write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
    try:
        ready = httpx.get(
            f"{cluster['server']}/readyz",
            headers={"Authorization": f"Bearer {token}"},
            verify=ssl.create_default_context(cafile=str(ca_file)),
            timeout=5,
        )
    except httpx.HTTPError as exc:
        _unavailable(f"kube-apiserver at {cluster['server']} unreachable: {exc}")
        raise
    if ready.status_code != 200:
        _unavailable(
            f"kube-apiserver at {cluster['server']} not ready: {ready.status_code} {ready.text[:200]}"
        )
    return Cluster(kubeconfig=path, server=cluster["server"], ca_file=ca_file, token=token)


def chart_rbac_manifests(namespace: str) -> str:
    """The chart's ServiceAccount, Role and RoleBinding for a release in ``namespace``."""
    helm = require_tool("helm")
    proc = subprocess.run(
        [
            helm,
            "template",
            RELEASE,
            str(CHART),
            "--namespace",
            namespace,
            "--set",
            "runner.id=runner-kube-test",
            "--set",
            "runner.apiUrl=https://cp.invalid",
            "--set",
            "token.existingSecret=runner-token",
            "--show-only",
            "templates/serviceaccount.yaml",
            "--show-only",
            "templates/rbac.yaml",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0:
        raise AssertionError(f"helm template failed: {proc.stderr}")
    return proc.stdout


def sa_kubeconfig(cluster: Cluster, token: str, namespace: str, path: Path) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "runner-test",
                "cluster": {
                    "server": cluster.server,
                    "certificate-authority-data": base64.b64encode(cluster.ca_file.read_bytes()).decode(),
                },
            }
        ],
        "users": [{"name": "runner", "user": {"token": token}}],
        "contexts": [
            {
                "name": "runner",
                "context": {"cluster": "runner-test", "user": "runner", "namespace": namespace},
            }
        ],
        "current-context": "runner",
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        yaml.safe_dump(config, out)
    return path


@pytest.fixture(scope="session")
def runner_sa(
    kube_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceAccountAccess]:
    """The chart's RBAC installed in a fresh namespace, and its service account's kubeconfig."""
    namespace = f"{RUNNER_NAMESPACE}-{uuid.uuid4().hex[:6]}"
    kube_cluster.kubectl("create", "namespace", namespace)
    kube_cluster.kubectl("apply", "-f", "-", stdin=chart_rbac_manifests(namespace))
    token = kube_cluster.kubectl(
        "create", "token", RELEASE, "--namespace", namespace, "--duration=3600s"
    ).strip()
    path = sa_kubeconfig(kube_cluster, token, namespace, tmp_path_factory.mktemp("kube-sa") / "kubeconfig")
    yield ServiceAccountAccess(namespace=namespace, name=RELEASE, token=token, kubeconfig=path)
    kube_cluster.kubectl("delete", "namespace", namespace, "--wait=false", "--ignore-not-found")


@pytest.fixture
def kube_namespace(kube_cluster: Cluster) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards (the controller manager finishes it)."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    kube_cluster.kubectl("create", "namespace", name)
    yield name
    kube_cluster.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")
