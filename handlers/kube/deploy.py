"""kubernetes-manifest-deploy: plan, apply and tear down a multi-document manifest.

- ``create-apply-plan``: a server-side dry-run apply of every object and its ``ResourceDiff``
  against the live object; the result is ``{plan, op: "apply", k8s_content_diff}`` (gzip +
  base64url in both compressed fields, docs/runner-api.md §7.5), what the control plane's no-op
  check and approval view read.
- ``create-teardown-plan``: the same with ``op: "delete"``; each live object is ``removed``.
- ``apply-plan``: the plan job's ``op`` decides. ``apply``: server-side apply with our field
  manager in dependency order (namespaces and CRDs first, CRDs waited for until served), prune
  what the inventory holds and the manifest dropped, then wait within the job's deadline until
  Deployments, StatefulSets, DaemonSets and Jobs are ready. ``delete``: reverse order, then wait
  until every object is gone. Outputs name the objects.

The plan's app config is read in ``prepare`` as the reference's Fetch reads it (logged; a failed
read is a warning). Conflicts, invalid objects and unknown kinds fail the job with the object named
(``handlers.kube.cluster``). There is no kubelet in the tests: a workload's readiness comes from
its status, which a test patches as a controller would.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import zlib
from contextlib import AsyncExitStack
from typing import Any, ClassVar

import anyio

from handlers.common.kubeconfig import kubeconfig_file, resolve_kubeconfig
from handlers.kube import diff as diffs
from handlers.kube.cluster import Cluster, KubeError, UnknownKind, connect
from handlers.kube.inventory import inventory_body, inventory_name, prune_set, read_inventory
from handlers.kube.manifest import (
    ManifestObject,
    ObjectKey,
    apply_order,
    delete_order,
    parse_manifest,
)
from handlers.kube.readiness import WAITED_KINDS, readiness
from runner.sdk import APIRequestFailed, APIUnreachable, Handler, HandlerError, JobContext, ResultRequest
from runner.sdk.plans import DeployPlan, KubernetesManifestDeployPlan, b64url, decode_apply_plan_contents
from runner.sdk.settings import KubeSettings

OPERATIONS = frozenset({"create-apply-plan", "create-teardown-plan", "apply-plan"})


def plan_contents(op: str, found: list[dict[str, Any]]) -> dict[str, Any]:
    return {"plan": json.dumps({"k8s_content_diff": found}), "op": op, "k8s_content_diff": found}


def plan_result(contents: dict[str, Any]) -> ResultRequest:
    packed = b64url(gzip.compress(json.dumps(contents).encode(), mtime=0))
    return ResultRequest(success=True, contents_compressed=packed, contents_display_compressed=packed)


def read_plan_op(apply_plan_contents: str) -> str:
    """The ``op`` of the plan job's contents (gzip'd JSON, or plain JSON)."""
    raw = decode_apply_plan_contents(apply_plan_contents)
    with contextlib.suppress(OSError, EOFError, zlib.error):  # plain JSON is accepted too
        raw = gzip.decompress(raw)
    try:
        op = json.loads(raw).get("op", "")
    except (ValueError, AttributeError):
        raise HandlerError("apply_plan_contents is not a kubernetes-manifest plan") from None
    if op not in ("apply", "delete"):
        raise HandlerError(f"apply_plan_contents has op {op!r}: expected apply or delete")
    return str(op)


def key_dict(key: ObjectKey) -> dict[str, str]:
    return {"api_version": key.api_version, "kind": key.kind, "namespace": key.namespace, "name": key.name}


class KubernetesManifestDeployHandler(Handler):
    operations: ClassVar[frozenset[str]] = OPERATIONS
    settings_model = KubeSettings

    def __init__(self) -> None:
        self._section = KubernetesManifestDeployPlan()
        self._objects: list[ManifestObject] = []

    async def prepare(self, ctx: JobContext) -> None:
        plan = ctx.plan_as(DeployPlan)
        if plan.kubernetes_manifest is None:
            raise HandlerError("the plan has no kubernetes_manifest section")
        self._section = plan.kubernetes_manifest
        self._objects = parse_manifest(self._section.manifest, self._section.namespace)
        if ctx.operation == "apply-plan":
            read_plan_op(plan.apply_plan_contents)
        await self._read_app_config(ctx, plan)

    async def _read_app_config(self, ctx: JobContext, plan: DeployPlan) -> None:
        """Read the plan's app config, as the reference's Fetch does (docs/runner-api.md §10.2).

        Nothing in it changes a manifest deploy (the reference keeps it unused too); the job log
        records which config and component the deploy belongs to. Unlike the reference, a config
        the control plane cannot give does not fail the deploy: a warning says so (as the
        terraform family does), since the manifest and cluster in the plan are all it needs.
        """
        if not (plan.app_id and plan.app_config_id):
            return
        try:
            config = await ctx.api.app_config(plan.app_id, plan.app_config_id)
        except (APIRequestFailed, APIUnreachable) as exc:
            ctx.log.warning(
                "app config not readable; the deploy does not need it",
                app_config_id=plan.app_config_id,
                error=str(exc),
            )
            return
        components = config.get("component_ids") or []
        ctx.log.info(
            "app config read",
            app_config_id=plan.app_config_id,
            component_id=plan.component_id or None,
            component_in_config=(plan.component_id in components)
            if plan.component_id and components
            else None,
        )

    async def execute(self, ctx: JobContext) -> None:
        plan = ctx.plan_as(DeployPlan)
        settings = ctx.handler_settings(KubeSettings)
        config = await resolve_kubeconfig(self._section.cluster_info, secrets=ctx.secrets, log=ctx.log)
        path = ctx.resources.enter_context(kubeconfig_file(config, ctx.workspace))
        async with AsyncExitStack() as stack:
            cluster = await stack.enter_async_context(connect(path, ctx.workspace / "discovery.json"))
            if ctx.operation == "create-apply-plan":
                found = await self._plan_apply(cluster, settings)
                self._report_plan(ctx, "apply", found)
            elif ctx.operation == "create-teardown-plan":
                found = await self._plan_delete(cluster)
                self._report_plan(ctx, "delete", found)
            elif read_plan_op(plan.apply_plan_contents) == "apply":
                await self._apply(ctx, cluster, plan, settings)
            else:
                await self._teardown(ctx, cluster, plan, settings)

    # ------------------------------------------------------------------ plans

    def _report_plan(self, ctx: JobContext, op: str, found: list[dict[str, Any]]) -> None:
        counts = diffs.summary(found)
        ctx.log.info(f"plan ({op}): " + ", ".join(f"{n} {name}" for name, n in counts.items() if n), **counts)
        for d in found:
            if d["type"] != diffs.DiffType.UNCHANGED:
                ctx.log.info(f"  {diffs.DiffType(d['type']).name.lower()}: {d.get('kind')} {d.get('name')}")
        contents = plan_contents(op, found)
        ctx.set_result(plan_result(contents))
        ctx.set_outputs({"diff": found})

    async def _plan_apply(self, cluster: Cluster, settings: KubeSettings) -> list[dict[str, Any]]:
        created_here = {(o.key.kind, o.key.name) for o in self._objects}
        found: list[dict[str, Any]] = []
        for obj in apply_order(self._objects):
            try:
                resource, obj = await cluster.resolve(obj)
            except UnknownKind:
                if not self._crd_in_manifest(obj.key):
                    raise
                # Its CRD is in this manifest and not served yet: nothing to dry-run against.
                found.append(
                    diffs.resource_diff(obj.key, op="apply", live=None, applied=obj.body, dry_run=False)
                )
                continue
            live = await cluster.get(obj.key, resource)
            if live is None and obj.key.namespace and ("Namespace", obj.key.namespace) in created_here:
                # The namespace comes with this manifest: the server cannot dry-run into it yet.
                found.append(
                    diffs.resource_diff(obj.key, op="apply", live=None, applied=obj.body, dry_run=False)
                )
                continue
            applied = await cluster.apply(
                obj, field_manager=settings.field_manager, dry_run=True, resource=resource
            )
            found.append(
                diffs.resource_diff(obj.key, op="apply", live=live, applied=applied, resource=resource.name)
            )
        return found

    def _crd_in_manifest(self, key: ObjectKey) -> bool:
        group = key.api_version.split("/")[0] if "/" in key.api_version else ""
        for o in self._objects:
            if o.key.kind == "CustomResourceDefinition":
                spec = o.body.get("spec") or {}
                if spec.get("group") == group and (spec.get("names") or {}).get("kind") == key.kind:
                    return True
        return False

    async def _plan_delete(self, cluster: Cluster) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        by_key = {o.key: o for o in self._objects}
        for key in delete_order(list(by_key)):
            try:
                resource, obj = await cluster.resolve(by_key[key])
            except UnknownKind:
                found.append(diffs.resource_diff(key, op="delete", live=None, applied=None))
                continue
            live = await cluster.get(obj.key, resource)
            found.append(
                diffs.resource_diff(obj.key, op="delete", live=live, applied=None, resource=resource.name)
            )
        return found

    # ------------------------------------------------------------------ apply

    def _inventory_ref(self, plan: DeployPlan) -> tuple[str, str]:
        namespace = self._section.namespace or "default"
        return inventory_name(plan.install_id, plan.component_id, namespace), namespace

    async def _read_inventory(self, cluster: Cluster, name: str, namespace: str) -> list[ObjectKey]:
        live = await cluster.get(ObjectKey("v1", "ConfigMap", namespace, name))
        return read_inventory(live)

    async def _write_inventory(
        self, cluster: Cluster, name: str, namespace: str, keys: list[ObjectKey], settings: KubeSettings
    ) -> None:
        body = inventory_body(name, namespace, keys)
        obj = ManifestObject(ObjectKey("v1", "ConfigMap", namespace, name), body)
        await cluster.apply(obj, field_manager=settings.field_manager, dry_run=False)

    async def _apply(
        self, ctx: JobContext, cluster: Cluster, plan: DeployPlan, settings: KubeSettings
    ) -> None:
        inv_name, inv_ns = self._inventory_ref(plan)
        ordered = apply_order(self._objects)
        applied: list[ObjectKey] = []
        previous: list[ObjectKey] | None = None
        waited: list[tuple[ObjectKey, Any]] = []
        for obj in ordered:
            if previous is None and obj.key.kind != "Namespace":
                # Namespaces exist now: record the union before anything else is created, so an
                # interrupted apply leaves nothing untracked.
                previous = await self._read_inventory(cluster, inv_name, inv_ns)
                await self._write_inventory(
                    cluster, inv_name, inv_ns, previous + [o.key for o in ordered], settings
                )
            resource, obj = await self._resolve_for_apply(cluster, obj)
            await cluster.apply(obj, field_manager=settings.field_manager, dry_run=False, resource=resource)
            ctx.log.info(f"applied {obj.key}")
            applied.append(obj.key)
            if obj.key.kind == "CustomResourceDefinition":
                await self._wait_established(cluster, obj.key, settings)
            if obj.key.kind in WAITED_KINDS:
                waited.append((obj.key, resource))
        if previous is None:
            previous = await self._read_inventory(cluster, inv_name, inv_ns)
        pruned = prune_set(previous, applied)
        for key in delete_order(pruned):
            try:
                gone = await cluster.delete(key)
            except UnknownKind:
                gone = False
            ctx.log.info(f"pruned {key}" if gone else f"prune: {key} was already gone")
        await self._write_inventory(cluster, inv_name, inv_ns, applied, settings)
        ctx.set_outputs(
            {
                "objects": [key_dict(k) for k in applied],
                "pruned": [key_dict(k) for k in pruned],
                "inventory": {"namespace": inv_ns, "name": inv_name},
            }
        )
        await self._wait_ready(ctx, cluster, waited, settings)
        ctx.set_result(plan_result(plan_contents("apply", [])))

    async def _resolve_for_apply(self, cluster: Cluster, obj: ManifestObject) -> tuple[Any, ManifestObject]:
        try:
            return await cluster.resolve(obj)
        except UnknownKind:
            if not self._crd_in_manifest(obj.key):
                raise
            await cluster.refresh_discovery()
            return await cluster.resolve(obj)

    async def _wait_established(self, cluster: Cluster, key: ObjectKey, settings: KubeSettings) -> None:
        while True:
            live = await cluster.get(key) or {}
            conditions = (live.get("status") or {}).get("conditions") or []
            if any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions):
                await cluster.refresh_discovery()
                return
            await anyio.sleep(min(settings.poll_interval, 0.5))

    async def _wait_ready(
        self, ctx: JobContext, cluster: Cluster, waited: list[tuple[ObjectKey, Any]], settings: KubeSettings
    ) -> None:
        pending = list(waited)
        last: dict[ObjectKey, str] = {}
        while pending:
            still: list[tuple[ObjectKey, Any]] = []
            for key, resource in pending:
                live = await cluster.get(key, resource)
                if live is None:
                    raise KubeError(f"{key} disappeared while waiting for it to be ready", obj=key)
                ready, why = readiness(live)
                if ready:
                    ctx.log.info(f"ready: {key}: {why}")
                    continue
                if last.get(key) != why:
                    ctx.log.info(f"waiting for {key}: {why}")
                    last[key] = why
                still.append((key, resource))
            pending = still
            if pending:
                if anyio.current_time() + settings.poll_interval > ctx.deadline:
                    names = ", ".join(f"{k} ({last.get(k, '')})" for k, _ in pending)
                    raise HandlerError(f"not ready before the job's deadline: {names}")
                await anyio.sleep(settings.poll_interval)

    # ------------------------------------------------------------------ teardown

    async def _teardown(
        self, ctx: JobContext, cluster: Cluster, plan: DeployPlan, settings: KubeSettings
    ) -> None:
        inv_name, inv_ns = self._inventory_ref(plan)
        by_key: dict[ObjectKey, ManifestObject | None] = {o.key: o for o in self._objects}
        for key in await self._read_inventory(cluster, inv_name, inv_ns):
            by_key.setdefault(key, None)
        deleted: list[ObjectKey] = []
        waiting: list[tuple[ObjectKey, Any]] = []
        for key in delete_order(list(by_key)):
            obj = by_key[key] or ManifestObject(key, {})
            try:
                resource, obj = await cluster.resolve(obj)
            except UnknownKind:
                ctx.log.info(f"{key}: its kind is no longer served; nothing to delete")
                continue
            if obj.key.kind == "Namespace" or obj.key == ObjectKey("v1", "Namespace", "", inv_ns):
                continue  # deleted after the inventory, below
            if await cluster.delete(obj.key, resource):
                ctx.log.info(f"deleted {obj.key}")
                deleted.append(obj.key)
                waiting.append((obj.key, resource))
        await self._wait_gone(ctx, cluster, waiting, settings)
        await cluster.delete(ObjectKey("v1", "ConfigMap", inv_ns, inv_name))
        namespaces = [k for k in delete_order(list(by_key)) if k.kind == "Namespace"]
        for key in namespaces:
            if await cluster.delete(key):
                ctx.log.info(f"deleted {key}")
                deleted.append(key)
        await self._wait_gone(ctx, cluster, [(k, None) for k in namespaces], settings)
        ctx.set_outputs({"deleted": [key_dict(k) for k in deleted]})
        ctx.set_result(plan_result(plan_contents("delete", [])))

    async def _wait_gone(
        self, ctx: JobContext, cluster: Cluster, keys: list[tuple[ObjectKey, Any]], settings: KubeSettings
    ) -> None:
        pending = list(keys)
        while pending:
            pending = [(k, r) for k, r in pending if await cluster.get(k, r) is not None]
            if pending:
                if anyio.current_time() + settings.poll_interval > ctx.deadline:
                    names = ", ".join(str(k) for k, _ in pending)
                    raise HandlerError(f"not deleted before the job's deadline: {names}")
                await anyio.sleep(min(settings.poll_interval, 0.5))
