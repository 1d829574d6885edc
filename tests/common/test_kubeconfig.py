"""Kubeconfigs from ``cluster_info``: every kind, read back by the real ``kubectl`` where it matters,
EKS tokens and exec entries made against moto's STS, the file 0600 and removed by the exit stack."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml

from handlers.common.eks import url_from_token
from handlers.common.kubeconfig import (
    AKS_SERVER_ID,
    InClusterPaths,
    KubeconfigError,
    build_kubeconfig,
    cluster_kind,
    eks_region,
    kubeconfig_file,
    resolve_kubeconfig,
    write_kubeconfig,
)
from runner.sdk.plans import ClusterInfo
from tests.common.conftest import Log, RecordingSts, Secrets
from tests.support.tools import require_tool

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
CA_B64 = base64.b64encode(PEM.encode()).decode()
STATIC = {"access_key_id": "AKIAKUBECONFIGTEST01", "secret_access_key": "kubeconfig-test-secret"}


def cluster(**fields: Any) -> ClusterInfo:
    return ClusterInfo.model_validate(fields)


def resolve(info: ClusterInfo | None, secrets: Secrets | None = None, **kw: Any) -> dict[str, Any]:
    return anyio.run(lambda: resolve_kubeconfig(info, secrets=secrets or Secrets(), **kw))


def kubectl_view(path: Path) -> dict[str, Any]:
    """What the real kubectl reads from the file (``--raw`` keeps the credentials)."""
    kubectl = require_tool("kubectl")
    proc = subprocess.run(
        [kubectl, "config", "view", "--raw", "-o", "json", "--kubeconfig", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": os.environ["PATH"], "HOME": str(path.parent)},
    )
    assert proc.returncode == 0, proc.stderr
    view: dict[str, Any] = json.loads(proc.stdout)
    return view


def user_of(config: dict[str, Any]) -> dict[str, Any]:
    user: dict[str, Any] = config["users"][0]["user"]
    return user


# --------------------------------------------------------------------------- pure


@pytest.mark.unit
@pytest.mark.parametrize(
    ("fields", "kind"),
    [
        ({"kube_config": "apiVersion: v1\n", "endpoint": "x", "aws_auth": {}}, "static"),
        ({"endpoint": "x", "aws_auth": {"region": "eu-west-1"}, "azure_auth": {}}, "eks"),
        ({"endpoint": "x", "azure_auth": {"use_default": True}}, "aks"),
        ({"endpoint": "x"}, "endpoint"),
        ({}, "in-cluster"),
        ({"kube_config": "   \n"}, "in-cluster"),
    ],
)
def test_cluster_kind(fields: dict[str, Any], kind: str) -> None:
    assert cluster_kind(cluster(**fields)) == kind


@pytest.mark.unit
def test_build_kubeconfig_shape_and_ca_forms() -> None:
    config = build_kubeconfig(name="c", server="https://k:6443", user={"token": "t"}, ca_data=PEM)
    assert config == {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "c", "cluster": {"server": "https://k:6443", "certificate-authority-data": CA_B64}}
        ],
        "users": [{"name": "c", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "c"}}],
        "current-context": "c",
    }
    again = build_kubeconfig(name="c", server="https://k", user={}, ca_data=CA_B64)
    assert again["clusters"][0]["cluster"]["certificate-authority-data"] == CA_B64  # already base64
    assert (
        eks_region(cluster(endpoint="https://ABC.gr7.ap-southeast-2.eks.amazonaws.com")) == "ap-southeast-2"
    )
    assert (
        eks_region(cluster(endpoint="ABC.gr7.us-east-1.eks.amazonaws.com", aws_auth={"region": "x-1"}))
        == "x-1"
    )
    assert eks_region(cluster(endpoint="kube.example.internal")) == ""


# --------------------------------------------------------------------------- kinds


@pytest.mark.unit
def test_static_kubeconfig_is_used_whole_and_its_credentials_masked(tmp_path: Path) -> None:
    given = build_kubeconfig(name="given", server="https://given:6443", user={"token": "static-token-123"})
    secrets = Secrets()
    config = resolve(cluster(kube_config=yaml.safe_dump(given), endpoint="ignored"), secrets)
    assert config == given
    assert "static-token-123" in secrets.values
    with pytest.raises(KubeconfigError, match="not a kubeconfig"):
        resolve(cluster(kube_config="just: text\n"))
    with pytest.raises(KubeconfigError, match="not YAML"):
        resolve(cluster(kube_config="a: [b\n"))


@pytest.mark.unit
def test_endpoint_ca_and_token_read_back_by_kubectl(tmp_path: Path) -> None:
    secrets = Secrets()
    config = resolve(
        cluster(id="dev", endpoint="kube.example.internal:6443", ca_data=PEM), secrets, token="tok-abc"
    )
    assert "tok-abc" in secrets.values
    view = kubectl_view(write_kubeconfig(config, tmp_path))
    assert view["current-context"] == "dev"
    assert view["clusters"][0]["cluster"]["server"] == "https://kube.example.internal:6443"
    assert base64.b64decode(view["clusters"][0]["cluster"]["certificate-authority-data"]).decode() == PEM
    assert user_of(view) == {"token": "tok-abc"}
    assert user_of(resolve(cluster(endpoint="https://k"))) == {}  # no token given: no credentials


@pytest.mark.unit
def test_in_cluster_service_account(tmp_path: Path) -> None:
    paths = InClusterPaths(token=tmp_path / "token", ca=tmp_path / "ca.crt", namespace=tmp_path / "namespace")
    environ = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    with pytest.raises(KubeconfigError, match="not in a cluster"):
        resolve(None, in_cluster=paths, environ=environ)
    paths.token.write_text("sa-token")
    paths.ca.write_text(PEM)
    paths.namespace.write_text("runners\n")
    with pytest.raises(KubeconfigError, match="KUBERNETES_SERVICE_HOST unset"):
        resolve(cluster(), in_cluster=paths, environ={})
    config = resolve(None, in_cluster=paths, environ=environ)
    view = kubectl_view(write_kubeconfig(config, tmp_path / "out"))
    assert view["clusters"][0]["cluster"]["server"] == "https://10.96.0.1:443"
    assert view["clusters"][0]["cluster"]["certificate-authority"] == str(paths.ca)
    assert user_of(view) == {"tokenFile": str(paths.token)}  # re-read by clients: rotation works
    assert view["contexts"][0]["context"]["namespace"] == "runners"
    v6 = resolve(None, in_cluster=paths, environ={"KUBERNETES_SERVICE_HOST": "fd00::1"})
    assert v6["clusters"][0]["cluster"]["server"] == "https://[fd00::1]:443"


@pytest.mark.unit
@pytest.mark.parametrize("workload", [False, True])
def test_aks_writes_the_kubelogin_exec_entry(workload: bool) -> None:
    environ = {"AZURE_FEDERATED_TOKEN_FILE": "/var/run/t", "AZURE_CLIENT_ID": "cid"} if workload else {}
    info = cluster(
        id="aks",
        endpoint="aks.hcp.westeurope.azmk8s.io:443",
        ca_data=CA_B64,
        azure_auth={"service_principal": {"subscription_id": "s", "subscription_tenant_id": "tenant-1"}},
    )
    entry = user_of(resolve(info, environ=environ))["exec"]
    assert entry["command"] == "kubelogin"
    login = "workloadidentity" if workload else "msi"
    assert entry["args"] == [
        "get-token",
        "--login",
        login,
        "--server-id",
        AKS_SERVER_ID,
        "--tenant-id",
        "tenant-1",
    ]
    assert entry["interactiveMode"] == "Never"


# --------------------------------------------------------------------------- EKS against moto


@pytest.mark.integration
def test_eks_token_kubeconfig(sts: RecordingSts, tmp_path: Path) -> None:
    secrets, log = Secrets(), Log()
    info = cluster(
        id="prod-eks",
        endpoint="ABC.gr7.eu-west-1.eks.amazonaws.com",
        ca_data=CA_B64,
        aws_auth={"static": STATIC},
    )
    config = resolve(info, secrets, log=log)
    token = user_of(config)["token"]
    assert token in secrets.values
    assert "kubeconfig-test-secret" in secrets.values
    url = url_from_token(token)
    assert f"X-Amz-Credential={STATIC['access_key_id']}%2F" in url
    assert "%2Feu-west-1%2Fsts%2Faws4_request" in url  # the region comes from the endpoint host
    assert ("info", "kubeconfig ready") in [(level, message) for level, message, _ in log.records]
    view = kubectl_view(write_kubeconfig(config, tmp_path))
    assert view["clusters"][0]["cluster"]["server"] == "https://ABC.gr7.eu-west-1.eks.amazonaws.com"
    assert user_of(view) == {"token": token}


@pytest.mark.integration
def test_eks_exec_entry_carries_the_assumed_identity_and_runs(sts: RecordingSts, tmp_path: Path) -> None:
    """``exec-runner``: the entry runs as client-go would run it, and makes the token as the role."""
    secrets = Secrets()
    aws_auth = {
        "region": "eu-west-1",
        "static": STATIC,
        "assume_role": {
            "role_arn": "arn:aws:iam::123456789012:role/maintenance",
            "session_name": "maintenance",
        },
    }
    info = cluster(id="prod-eks", endpoint="https://eks.example:443", ca_data=CA_B64, aws_auth=aws_auth)
    entry = user_of(resolve(info, secrets, eks="exec-runner"))["exec"]
    assert entry["command"] == sys.executable
    assert entry["args"] == [
        "-m",
        "handlers.common.eks",
        "--cluster-name",
        "prod-eks",
        "--region",
        "eu-west-1",
    ]
    env = {e["name"]: e["value"] for e in entry["env"]}
    assert env["AWS_ACCESS_KEY_ID"].startswith("ASIA")  # the role's session, not the plan's keys
    assert env["AWS_SECRET_ACCESS_KEY"] in secrets.values
    assert env["AWS_SESSION_TOKEN"] in secrets.values
    child_env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": os.pathsep.join(sys.path),
        "RUNNER_AWS_ENDPOINT_URL": sts.url,
        "AWS_EC2_METADATA_DISABLED": "true",
        **env,
    }
    proc = subprocess.run(
        [entry["command"], *entry["args"]], env=child_env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    url = url_from_token(json.loads(proc.stdout)["status"]["token"])
    assert f"X-Amz-Credential={env['AWS_ACCESS_KEY_ID']}%2F" in url
    aws = user_of(resolve(info, Secrets(), eks="exec-aws"))["exec"]
    assert aws["command"] == "aws"
    assert aws["args"] == [
        "eks",
        "get-token",
        "--cluster-name",
        "prod-eks",
        "--output",
        "json",
        "--region",
        "eu-west-1",
    ]


@pytest.mark.integration
def test_eks_without_a_cluster_name_or_credentials_fails_clearly(sts: RecordingSts) -> None:
    with pytest.raises(KubeconfigError, match=r"cluster_info\.id"):
        resolve(cluster(endpoint="https://eks.example", aws_auth={"static": STATIC}))
    with pytest.raises(KubeconfigError, match="EKS cluster prod: the plan's AWS auth names no credentials"):
        resolve(cluster(id="prod", endpoint="https://eks.example", aws_auth={"region": "eu-west-1"}))


# --------------------------------------------------------------------------- the file


@pytest.mark.unit
def test_written_0600_and_removed_by_the_exit_stack(tmp_path: Path) -> None:
    config = build_kubeconfig(name="c", server="https://k", user={"token": "t"})
    old = tmp_path / "kubeconfig"
    old.write_text("stale")
    old.chmod(0o644)
    with ExitStack() as stack:
        path = stack.enter_context(kubeconfig_file(config, tmp_path))
        assert path == old
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert yaml.safe_load(path.read_text()) == config
    assert not path.exists()
    text = "apiVersion: v1\nkind: Config\n"
    assert write_kubeconfig(text, tmp_path / "new", "given").read_text() == text
