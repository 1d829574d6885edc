"""sandbox-sync-secrets: AWS Secrets Manager values into Kubernetes Secrets (docs/kubernetes.md).

The plan (``SyncSecretsPlan``) lists, per value, a Secrets Manager ARN and the Secret and key it
goes to. The job runs in two phases so a failure leaves the cluster as it was where it can:

1. **read** every value (``GetSecretValue``, stage ``AWSCURRENT``) as the plan's ``aws_auth``
   identity (``handlers.common.aws``), in the region the ARN names. Each value is registered
   with the job's secret registry the moment it is known, decoded form too, so no log record,
   error message or result can show it. Any secret that cannot be read fails the job, naming
   every one that failed: the reference swallows these errors and reports the secret as not
   existing.
2. **write** each Secret with server-side apply, all its keys in one apply, the runner's field
   manager **forced** (the sync is the keys' source of truth; another manager's value of a key
   would otherwise block it). Keys another manager set and the plan does not name are left alone;
   a key an earlier sync wrote and this plan no longer names is removed (server-side apply drops
   a field its only manager stops applying), so the Secret holds what the plan says. A missing namespace is
   created, as the reference does (a runner with only the chart's namespaced Role cannot, and
   the error says so).

Outputs, per entry (keyed by ``secret_name``): the reference's fields (``name``, ``arn``,
``kubernetes_namespace``, ``kubernetes_name``, ``kubernetes_key``, ``timestamp``, ``length``,
``exists``) plus ``version_id``; never a value. Azure Key Vault (``azure_auth`` alone) is not
supported and fails the job; the reference ignores Azure silently.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from functools import partial
from typing import Any, ClassVar

import anyio

from handlers.common.aws import AWSIdentity, endpoint_url, resolve_aws, sts_region
from handlers.common.kubeconfig import kubeconfig_file, resolve_kubeconfig
from handlers.kube.cluster import Cluster, KubeError, connect
from handlers.kube.manifest import ManifestObject, ObjectKey
from handlers.kube.secrets import (
    Entry,
    Fetched,
    SyncSecretsError,
    check_entries,
    outputs_for,
    region_of,
    secret_body,
    secret_objects,
    stored_value,
)
from runner.sdk import Handler, HandlerError, JobContext, SecretRegistry
from runner.sdk.plans import SyncSecretsPlan
from runner.sdk.settings import KubeSettings


def fetch_blocking(identity: AWSIdentity, entry: Entry, secrets: SecretRegistry) -> Fetched:
    """One ``GetSecretValue`` (blocking: boto3), its value registered before anything else."""
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    region = region_of(entry.arn) or sts_region(identity.region)
    client = identity.session().client(
        "secretsmanager",
        region_name=region,
        endpoint_url=endpoint_url(),
        config=Config(connect_timeout=10, read_timeout=30, retries={"max_attempts": 3, "mode": "standard"}),
    )
    try:
        answer: dict[str, Any] = client.get_secret_value(SecretId=entry.arn, VersionStage="AWSCURRENT")
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code, message = error.get("Code"), error.get("Message")
        raise SyncSecretsError(
            f"{entry.label()}: cannot read it from Secrets Manager: {code}: {message}"
        ) from None
    except BotoCoreError as exc:
        raise SyncSecretsError(f"{entry.label()}: cannot reach Secrets Manager: {exc}") from None
    string, binary = answer.get("SecretString"), answer.get("SecretBinary")
    secrets.register(string)
    if isinstance(binary, bytes):
        secrets.register(binary.decode("utf-8", "replace"))
    value = stored_value(entry, string, binary)
    secrets.register(value.decode("utf-8", "replace"))
    created = answer.get("CreatedDate")
    return Fetched(value=value, version_id=str(answer.get("VersionId") or ""), created=created)


class SyncSecretsHandler(Handler):
    """``sandbox-sync-secrets`` (module docstring)."""

    settings_model: ClassVar[type[KubeSettings]] = KubeSettings

    def __init__(self) -> None:
        self._entries: list[Entry] = []

    async def prepare(self, ctx: JobContext) -> None:
        plan = ctx.plan_as(SyncSecretsPlan)
        self._entries = check_entries(plan.kubernetes_secrets)
        if plan.aws_auth is None:
            if plan.azure_auth is not None:
                raise SyncSecretsError(
                    "the plan has azure_auth and no aws_auth: secrets are read from AWS Secrets "
                    "Manager only (Azure Key Vault is not supported)"
                )
            raise SyncSecretsError("the plan has no aws_auth: cannot read AWS Secrets Manager")

    async def execute(self, ctx: JobContext) -> None:
        plan = ctx.plan_as(SyncSecretsPlan)
        assert plan.aws_auth is not None
        identity = await resolve_aws(plan.aws_auth, secrets=ctx.secrets, log=ctx.log)
        values = await self._read_all(ctx, identity)
        settings = ctx.handler_settings(KubeSettings)
        config = await resolve_kubeconfig(plan.cluster_info, secrets=ctx.secrets, log=ctx.log)
        path = ctx.resources.enter_context(kubeconfig_file(config, ctx.workspace))
        async with AsyncExitStack() as stack:
            cluster = await stack.enter_async_context(connect(path, ctx.workspace / "discovery.json"))
            for obj in secret_objects(self._entries):
                await self._ensure_namespace(ctx, cluster, obj.namespace, settings)
                body = secret_body(obj, values)
                key = ObjectKey("v1", "Secret", obj.namespace, obj.name)
                await cluster.apply(
                    ManifestObject(key, body), field_manager=settings.field_manager, dry_run=False, force=True
                )
                keys = ", ".join(f"{e.key} ({len(values[e.index].value)} bytes)" for e in obj.entries)
                ctx.log.info(f"synced Secret {obj.namespace}/{obj.name}: {keys}")
        ctx.set_outputs(outputs_for(self._entries, values))

    async def _read_all(self, ctx: JobContext, identity: AWSIdentity) -> dict[int, Fetched]:
        """Every value, or a failure naming each secret that could not be read."""
        values: dict[int, Fetched] = {}
        failures: list[str] = []
        for entry in self._entries:
            ctx.log.info(f"reading {entry.label()}")
            call = partial(fetch_blocking, identity, entry, ctx.secrets)
            try:
                values[entry.index] = await anyio.to_thread.run_sync(call, abandon_on_cancel=True)
            except HandlerError as exc:
                failures.append(str(exc))
        if failures:
            raise SyncSecretsError(
                f"{len(failures)} of {len(self._entries)} secrets could not be read, nothing was "
                "written: " + "; ".join(failures)
            )
        return values

    async def _ensure_namespace(
        self, ctx: JobContext, cluster: Cluster, namespace: str, settings: KubeSettings
    ) -> None:
        """Create the namespace when it is missing; a runner that may not read namespaces (the
        chart's namespaced Role) goes on and lets the Secret's write say what is wrong."""
        key = ObjectKey("v1", "Namespace", "", namespace)
        try:
            if await cluster.get(key) is not None:
                return
        except KubeError as exc:
            if exc.status == 403:
                return
            raise
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
        await cluster.apply(ManifestObject(key, body), field_manager=settings.field_manager, dry_run=False)
        ctx.log.info(f"created namespace {namespace}")
