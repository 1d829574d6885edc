"""A kubeconfig from a plan's ``cluster_info``, for every family that talks to a cluster.

What ``cluster_info`` can say, and what it becomes (``cluster_kind`` decides, in this order):

- ``kube_config`` set: **static**, the plan's kubeconfig as given (the reference parses it
  and uses it whole, ``pkg/kube/cluster_info.go``). Tokens, passwords and keys in it are masked.
- ``endpoint`` + ``aws_auth``: **EKS**. The identity comes from the one AWS resolver
  (``handlers.common.aws``), then either a bearer token made in process (``eks="token"``:
  valid 14 minutes, for short jobs) or an ``exec`` entry that renews tokens for a long-running
  child: ``eks="exec-runner"`` runs ``python -m handlers.common.eks`` (no AWS CLI needed),
  ``eks="exec-aws"`` runs ``aws eks get-token`` (what ``aws eks update-kubeconfig`` writes).
  An ``exec`` entry carries the resolved identity's ``AWS_*`` variables in its ``env``, as
  the reference's does, so the token is made as the cluster's identity, not the child's.
- ``endpoint`` + ``azure_auth``: **AKS**. ``aks="exec"`` (default) writes the ``exec`` entry the
  reference writes, ``kubelogin get-token`` for the AKS server application, with ``--login msi``
  (the reference's choice, a VM's managed identity) or ``--login workloadidentity`` when the
  runner has a federated token (``AZURE_FEDERATED_TOKEN_FILE``); ``kubelogin`` must be on PATH.
  ``aks="token"`` makes the Entra ID token in process (``handlers.common.entra``: client secret,
  workload identity or managed identity of the runner, no Azure SDK), valid about an hour.
- ``endpoint`` alone: **endpoint + CA + token**, the token given by the caller (none: the
  entry has no credentials, e.g. a client certificate is added by the caller).
- nothing: **in-cluster**, the pod's service account: ``KUBERNETES_SERVICE_HOST``/``_PORT``,
  the CA file and a ``tokenFile`` entry (client-go re-reads it, so projected tokens that rotate
  keep working). The paths are ``InClusterPaths`` (overridable for tests).

``build_kubeconfig`` and the user-entry helpers are pure (dicts in, dict out); ``resolve_kubeconfig``
does the I/O (AWS, clock, files); ``write_kubeconfig`` writes it 0600 into a directory the caller
owns (the job workspace) and ``kubeconfig_file`` removes it again on exit, so a caller registers
it on its exit stack: ``path = stack.enter_context(kubeconfig_file(config, ctx.workspace))``.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import anyio
import httpx
import yaml

from handlers.common.aws import (
    DEFAULT_SESSION_NAME,
    AWSCredentialsError,
    endpoint_url,
    resolve_aws,
    sts_region,
)
from handlers.common.azure import workload_identity
from handlers.common.eks import EXEC_API_VERSION, eks_token
from handlers.common.entra import entra_token
from handlers.common.masking import SecretSink
from runner.sdk import HandlerError, JobLog
from runner.sdk.plans import ClusterInfo

#: libyaml's safe loader and dumper when PyYAML was built with it (the wheels are): a kubeconfig is
#: parsed and written in every cluster job, and the pure-Python ones took ~8 ms of a helm apply's
#: ~28 ms of runner CPU (cProfile of bench/helm_bench.py's job).
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_DUMPER: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

Kind = Literal["static", "eks", "aks", "endpoint", "in-cluster"]
EKSMode = Literal["token", "exec-runner", "exec-aws"]
AKSMode = Literal["exec", "token"]

#: The Entra ID application of the AKS API server (the ``--server-id`` every AKS client asks a
#: token for; the reference passes the same to kubelogin).
AKS_SERVER_ID = "6dae42f8-4368-4678-94ff-3960e28e3630"
_EKS_HOST = re.compile(r"\.(?P<region>[a-z]{2}(?:-[a-z]+)+-\d+)\.eks\.amazonaws\.com(?:\.cn)?$")
_USER_SECRET_FIELDS = ("token", "password", "client-key-data")


class KubeconfigError(HandlerError):
    """``cluster_info`` could not be turned into a kubeconfig."""


@dataclass(frozen=True)
class InClusterPaths:
    """Where a pod finds its service account (the Kubernetes defaults)."""

    token: Path = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
    ca: Path = Path("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt")
    namespace: Path = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")

    def available(self, environ: Mapping[str, str]) -> bool:
        return bool(environ.get("KUBERNETES_SERVICE_HOST")) and self.token.is_file()


# --------------------------------------------------------------------------- pure decisions


def cluster_kind(cluster: ClusterInfo) -> Kind:
    if cluster.kube_config.strip():
        return "static"
    if not cluster.endpoint:
        return "in-cluster"
    if cluster.aws_auth is not None:
        return "eks"
    if cluster.azure_auth is not None:
        return "aks"
    return "endpoint"


def server_url(endpoint: str) -> str:
    return endpoint if "://" in endpoint else f"https://{endpoint}"


def ca_data_field(ca_data: str) -> str:
    """``certificate-authority-data`` is base64 of the PEM; plans usually carry that, but a raw
    PEM is accepted and encoded."""
    try:
        base64.b64decode(ca_data, validate=True)
    except (binascii.Error, ValueError):
        return base64.b64encode(ca_data.encode()).decode()
    return ca_data


def eks_region(cluster: ClusterInfo) -> str:
    """The plan's region, else the one in an EKS endpoint host (``ABC.gr7.<region>.eks...``)."""
    if cluster.aws_auth is not None and cluster.aws_auth.region:
        return cluster.aws_auth.region
    match = _EKS_HOST.search(cluster.endpoint.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0])
    return match.group("region") if match else ""


def token_user(token: str) -> dict[str, Any]:
    return {"token": token}


def exec_user(command: str, args: list[str], env: Mapping[str, str] | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "apiVersion": EXEC_API_VERSION,
        "command": command,
        "args": args,
        "interactiveMode": "Never",
    }
    if env:
        entry["env"] = [{"name": k, "value": v} for k, v in sorted(env.items())]
    return {"exec": entry}


def eks_exec_user(
    cluster_name: str,
    region: str,
    env: Mapping[str, str] | None = None,
    mode: Literal["exec-runner", "exec-aws"] = "exec-runner",
) -> dict[str, Any]:
    if mode == "exec-aws":
        args = ["eks", "get-token", "--cluster-name", cluster_name, "--output", "json"]
        if region:
            args += ["--region", region]
        return exec_user("aws", args, env)
    args = ["-m", "handlers.common.eks", "--cluster-name", cluster_name]
    if region:
        args += ["--region", region]
    return exec_user(sys.executable, args, env)


def aks_exec_user(tenant_id: str, *, workload: bool) -> dict[str, Any]:
    args = ["get-token", "--login", "workloadidentity" if workload else "msi", "--server-id", AKS_SERVER_ID]
    if tenant_id:
        args += ["--tenant-id", tenant_id]
    return exec_user("kubelogin", args)


def build_kubeconfig(
    *, name: str, server: str, user: Mapping[str, Any], ca_data: str = "", ca_file: str = ""
) -> dict[str, Any]:
    """One cluster, one user, one context, current: the whole kubeconfig as a dict."""
    cluster: dict[str, Any] = {"server": server}
    if ca_data:
        cluster["certificate-authority-data"] = ca_data_field(ca_data)
    elif ca_file:
        cluster["certificate-authority"] = ca_file
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": name, "user": dict(user)}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
    }


def cluster_kubeconfig(cluster: ClusterInfo, user: Mapping[str, Any]) -> dict[str, Any]:
    """``build_kubeconfig`` for a ``cluster_info`` with an endpoint."""
    return build_kubeconfig(
        name=cluster.id or "cluster", server=server_url(cluster.endpoint), user=user, ca_data=cluster.ca_data
    )


def in_cluster_kubeconfig(paths: InClusterPaths, environ: Mapping[str, str]) -> dict[str, Any]:
    host = environ.get("KUBERNETES_SERVICE_HOST", "")
    port = environ.get("KUBERNETES_SERVICE_PORT", "443")
    if ":" in host:  # IPv6
        host = f"[{host}]"
    config = build_kubeconfig(
        name="in-cluster",
        server=f"https://{host}:{port}",
        user={"tokenFile": str(paths.token)},
        ca_file=str(paths.ca) if paths.ca.is_file() else "",
    )
    if paths.namespace.is_file():
        config["contexts"][0]["context"]["namespace"] = paths.namespace.read_text().strip()
    return config


def parse_static(text: str) -> dict[str, Any]:
    try:
        config = yaml.load(text, Loader=_LOADER)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        raise KubeconfigError(f"cluster_info.kube_config is not YAML: {exc}") from None
    if not isinstance(config, dict) or not config.get("clusters"):
        raise KubeconfigError("cluster_info.kube_config is not a kubeconfig (no clusters)")
    return config


def user_secrets(config: Mapping[str, Any]) -> list[str]:
    """The credentials inside a kubeconfig's user entries (for masking)."""
    out: list[str] = []
    for entry in config.get("users") or []:
        user = (entry or {}).get("user") or {}
        out.extend(str(user[f]) for f in _USER_SECRET_FIELDS if user.get(f))
        for env in ((user.get("exec") or {}).get("env")) or []:
            out.append(str((env or {}).get("value", "")))
    return [v for v in out if v]


# --------------------------------------------------------------------------- with I/O


async def resolve_kubeconfig(
    cluster: ClusterInfo | None,
    *,
    secrets: SecretSink,
    log: JobLog | None = None,
    eks: EKSMode = "token",
    aks: AKSMode = "exec",
    token: str = "",
    session_name: str = DEFAULT_SESSION_NAME,
    in_cluster: InClusterPaths | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The kubeconfig for ``cluster`` (module docstring); every credential in it is registered."""
    environ = os.environ if environ is None else environ
    if cluster is None:
        cluster = ClusterInfo()
    kind = cluster_kind(cluster)
    if kind == "static":
        config = parse_static(cluster.kube_config)
    elif kind == "eks":
        assert cluster.aws_auth is not None
        config = await _eks_kubeconfig(cluster, secrets=secrets, log=log, mode=eks, session_name=session_name)
    elif kind == "aks":
        assert cluster.azure_auth is not None
        sp = cluster.azure_auth.service_principal
        tenant = sp.subscription_tenant_id if sp is not None else ""
        if aks == "token":
            async with httpx.AsyncClient(timeout=30) as client:
                got = await entra_token(
                    f"{AKS_SERVER_ID}/.default",
                    secrets=secrets,
                    tenant=tenant,
                    environ=environ,
                    client=client,
                )
            config = cluster_kubeconfig(cluster, token_user(got.token))
        else:
            workload = workload_identity(environ) is not None
            config = cluster_kubeconfig(cluster, aks_exec_user(tenant, workload=workload))
    elif kind == "endpoint":
        config = cluster_kubeconfig(cluster, token_user(token) if token else {})
    else:
        paths = in_cluster or InClusterPaths()
        if not paths.available(environ):
            raise KubeconfigError(
                "cluster_info names no cluster (no kube_config, no endpoint) and the runner is not in a "
                f"cluster (KUBERNETES_SERVICE_HOST unset or no service account token at {paths.token})"
            )
        config = in_cluster_kubeconfig(paths, environ)
    secrets.register(*user_secrets(config))
    if log is not None:
        log.info(
            "kubeconfig ready", kind=kind, cluster=cluster.id or None, eks=eks if kind == "eks" else None
        )
    return config


async def _eks_kubeconfig(
    cluster: ClusterInfo, *, secrets: SecretSink, log: JobLog | None, mode: EKSMode, session_name: str
) -> dict[str, Any]:
    assert cluster.aws_auth is not None
    if not cluster.id:
        raise KubeconfigError(
            "cluster_info.id (the EKS cluster name) is empty: an EKS token names its cluster"
        )
    region = eks_region(cluster)
    try:
        identity = await resolve_aws(
            cluster.aws_auth, secrets=secrets, log=log, region=region, session_name=session_name
        )
    except AWSCredentialsError as exc:
        raise KubeconfigError(f"EKS cluster {cluster.id}: {exc}", cluster=cluster.id) from exc
    if mode != "token":
        return cluster_kubeconfig(cluster, eks_exec_user(cluster.id, region, identity.env(), mode))
    endpoint = endpoint_url()
    made = await anyio.to_thread.run_sync(
        lambda: eks_token(identity.session(), cluster.id, sts_region(region), endpoint)
    )
    secrets.register(made.token)
    return cluster_kubeconfig(cluster, token_user(made.token))


def render_kubeconfig(config: Mapping[str, Any] | str) -> str:
    """The file's text: a plan's own kubeconfig verbatim, a built one as YAML in build order."""
    return config if isinstance(config, str) else yaml.dump(dict(config), Dumper=_DUMPER, sort_keys=False)


def write_kubeconfig(config: Mapping[str, Any] | str, directory: Path, name: str = "kubeconfig") -> Path:
    """Write ``config`` as ``directory/name``, mode 0600 from the first byte; returns the path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    text = render_kubeconfig(config)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        os.fchmod(out.fileno(), 0o600)  # an existing file keeps its mode through O_CREAT
        out.write(text)
    return path


@contextmanager
def kubeconfig_file(
    config: Mapping[str, Any] | str, directory: Path, name: str = "kubeconfig"
) -> Iterator[Path]:
    """``write_kubeconfig``, removed again on exit (register it on the job's exit stack)."""
    path = write_kubeconfig(config, directory, name)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)
