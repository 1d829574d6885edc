"""The one edge of the family that talks to a cluster: kubernetes_asyncio's dynamic client.

Discovery maps each object's apiVersion and kind to its resource (built-in kinds, CRDs, anything
the server serves), so the handler needs no model per kind. Every answer is checked: the dynamic
client (kubernetes_asyncio 36) returns an error ``Status`` instead of raising, and an error here
becomes a ``KubeError`` that names the object, with the server's reason: a conflict with another
field manager (409), an invalid object (422), an unknown kind (not served by the cluster).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.dynamic import DynamicClient
from kubernetes_asyncio.dynamic.exceptions import ResourceNotFoundError

from handlers.kube.manifest import ManifestObject, ObjectKey
from runner.sdk import HandlerError


class KubeError(HandlerError):
    """The API server refused an operation on one object; the message names it."""

    def __init__(self, message: str, *, status: int = 0, obj: ObjectKey | None = None) -> None:
        super().__init__(message, http_status=status or None, object=str(obj) if obj else None)
        self.status = status


class UnknownKind(KubeError):
    """The cluster serves no resource for the object's apiVersion and kind."""


def _what(status: int) -> str:
    return {
        409: "conflict (another field manager owns a field; the runner does not force)",
        422: "invalid object",
        403: "forbidden",
        404: "not found",
    }.get(status, f"HTTP {status}")


def failure_of(answer: Any) -> tuple[int, str] | None:
    """``(code, message)`` when a dynamic-client answer is an error ``Status``."""
    if isinstance(answer, dict):
        kind, status, code, message = (answer.get(k) for k in ("kind", "status", "code", "message"))
    else:
        kind, status = getattr(answer, "kind", None), getattr(answer, "status", None)
        code, message = getattr(answer, "code", 0), getattr(answer, "message", "")
    if kind == "Status" and status == "Failure":
        return int(code or 0), str(message or "")
    return None


class Cluster:
    """A connection to one API server, for one job."""

    def __init__(self, dynamic: DynamicClient) -> None:
        self._dynamic = dynamic

    async def resource(self, key: ObjectKey) -> Any:
        try:
            return await self._dynamic.resources.get(api_version=key.api_version, kind=key.kind)
        except ResourceNotFoundError:
            raise UnknownKind(
                f"{key}: unknown kind: the cluster serves no {key.kind} in {key.api_version}", obj=key
            ) from None

    async def refresh_discovery(self) -> None:
        """Forget cached discovery, after CRDs were created."""
        await self._dynamic.resources.invalidate_cache()

    async def resolve(self, obj: ManifestObject) -> tuple[Any, ManifestObject]:
        """The object's resource, and the object with its namespace fixed by the server's scope."""
        resource = await self.resource(obj.key)
        if resource.namespaced:
            if obj.key.namespace:
                return resource, obj
            key = ObjectKey(obj.key.api_version, obj.key.kind, "default", obj.key.name)
        else:
            if not obj.key.namespace:
                return resource, obj
            key = ObjectKey(obj.key.api_version, obj.key.kind, "", obj.key.name)
        body = {**obj.body, "metadata": {**obj.body.get("metadata", {})}}
        if key.namespace:
            body["metadata"]["namespace"] = key.namespace
        else:
            body["metadata"].pop("namespace", None)
        return resource, ManifestObject(key, body)

    def _check(self, answer: Any, key: ObjectKey, doing: str) -> dict[str, Any]:
        failed = failure_of(answer)
        if failed is not None:
            code, message = failed
            raise KubeError(f"{doing} {key}: {_what(code)}: {message}", status=code, obj=key)
        out: dict[str, Any] = answer.to_dict() if hasattr(answer, "to_dict") else dict(answer)
        return out

    async def get(self, key: ObjectKey, resource: Any = None) -> dict[str, Any] | None:
        resource = resource or await self.resource(key)
        try:
            answer = await self._dynamic.get(resource, name=key.name, namespace=key.namespace or None)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise KubeError(
                f"reading {key}: {_what(exc.status)}: {exc.reason}", status=exc.status, obj=key
            ) from None
        failed = failure_of(answer)
        if failed is not None and failed[0] == 404:
            return None
        return self._check(answer, key, "reading")

    async def apply(
        self,
        obj: ManifestObject,
        *,
        field_manager: str,
        dry_run: bool,
        resource: Any = None,
        force: bool = False,
    ) -> dict[str, Any]:
        """Server-side apply (``dry_run``: the server's answer, nothing stored). ``force`` takes
        over fields another manager owns: only for objects whose source of truth is the runner's
        (a synced secret's value), never for a manifest's objects."""
        resource = resource or await self.resource(obj.key)
        extra: dict[str, Any] = {"force_conflicts": True} if force else {}
        try:
            answer = await self._dynamic.server_side_apply(
                resource,
                body=obj.body,
                name=obj.key.name,
                namespace=obj.key.namespace or None,
                field_manager=field_manager,
                dry_run="All" if dry_run else None,
                **extra,
            )
        except ApiException as exc:
            raise KubeError(
                f"applying {obj.key}: {_what(exc.status)}: {exc.reason}", status=exc.status, obj=obj.key
            ) from None
        return self._check(answer, obj.key, "dry-run applying" if dry_run else "applying")

    async def delete(self, key: ObjectKey, resource: Any = None) -> bool:
        """Delete (foreground: dependents first); False when it was not there."""
        resource = resource or await self.resource(key)
        try:
            answer = await self._dynamic.delete(
                resource,
                name=key.name,
                namespace=key.namespace or None,
                body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"},
            )
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise KubeError(
                f"deleting {key}: {_what(exc.status)}: {exc.reason}", status=exc.status, obj=key
            ) from None
        failed = failure_of(answer)
        if failed is not None and failed[0] == 404:
            return False
        self._check(answer, key, "deleting")
        return True

    async def list_objects(self, key: ObjectKey, selector: str) -> list[dict[str, Any]]:
        """The objects of ``key``'s kind in ``key.namespace`` that a label selector matches."""
        resource = await self.resource(key)
        try:
            answer = await self._dynamic.get(
                resource, namespace=key.namespace or None, label_selector=selector
            )
        except ApiException as exc:
            raise KubeError(
                f"listing {key.kind} in {key.namespace}: {_what(exc.status)}: {exc.reason}", status=exc.status
            ) from None
        listed = self._check(answer, key, "listing")
        return [dict(i) for i in listed.get("items") or []]

    async def create(self, obj: ManifestObject, *, field_manager: str, resource: Any = None) -> bool:
        """Create the object; False when one of that name already exists (409)."""
        resource = resource or await self.resource(obj.key)
        try:
            answer = await self._dynamic.create(
                resource, body=obj.body, namespace=obj.key.namespace or None, field_manager=field_manager
            )
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise KubeError(
                f"creating {obj.key}: {_what(exc.status)}: {exc.reason}", status=exc.status, obj=obj.key
            ) from None
        failed = failure_of(answer)
        if failed is not None and failed[0] == 409:
            return False
        self._check(answer, obj.key, "creating")
        return True

    async def pod_names(self, namespace: str, selector: str) -> list[str]:
        """The pods a label selector matches (job-deploy: the pods of its Job)."""
        items = await self.list_objects(ObjectKey("v1", "Pod", namespace, ""), selector)
        return sorted(str((i.get("metadata") or {}).get("name", "")) for i in items)

    async def pod_log(self, namespace: str, name: str, *, limit_bytes: int) -> str:
        """A pod's log; ``KubeError`` when the cluster cannot give it (no kubelet, not started)."""
        core = k8s.CoreV1Api(self._dynamic.client)
        try:
            text = await core.read_namespaced_pod_log(name, namespace, limit_bytes=limit_bytes)
        except ApiException as exc:
            raise KubeError(
                f"reading the log of pod {namespace}/{name}: {exc.reason}", status=exc.status
            ) from None
        return str(text)


@asynccontextmanager
async def connect(kubeconfig: Path, discovery_cache: Path) -> AsyncIterator[Cluster]:
    """A ``Cluster`` for the kubeconfig file (the job's 0600 copy); closed on exit."""
    configuration = k8s.Configuration()
    await k8s_config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    async with k8s.ApiClient(configuration) as api:
        dynamic = await DynamicClient(api, cache_file=str(discovery_cache))
        yield Cluster(dynamic)
