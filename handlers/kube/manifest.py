"""A multi-document manifest as a list of objects, each named, in the order they can be applied.

Pure: parsing, validation (each object has apiVersion, kind and metadata.name), the default
namespace, and dependency order. Namespaces and CRDs go first (everything else may live in them or
be one of their kinds), then the kinds others refer to (service accounts, RBAC, config, storage),
then workloads; teardown is the reverse.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import yaml

from runner.sdk import HandlerError

#: Apply order by kind; a kind not listed goes after all of them, before nothing (custom
#: resources, webhooks' targets...).
KIND_ORDER: tuple[str, ...] = (
    "Namespace",
    "CustomResourceDefinition",
    "PriorityClass",
    "StorageClass",
    "ServiceAccount",
    "ClusterRole",
    "Role",
    "ClusterRoleBinding",
    "RoleBinding",
    "Secret",
    "ConfigMap",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "LimitRange",
    "ResourceQuota",
    "NetworkPolicy",
    "Service",
    "DaemonSet",
    "Deployment",
    "StatefulSet",
    "ReplicaSet",
    "Job",
    "CronJob",
    "Ingress",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
)
_RANK = {kind: i for i, kind in enumerate(KIND_ORDER)}
#: Kinds that are never namespaced whatever the manifest says (the server decides for the rest).
CLUSTER_KINDS = frozenset(
    {
        "Namespace",
        "CustomResourceDefinition",
        "PriorityClass",
        "StorageClass",
        "ClusterRole",
        "ClusterRoleBinding",
        "PersistentVolume",
    }
)


class ManifestError(HandlerError):
    """The manifest cannot be applied as written; the message names the document or object."""


@dataclass(frozen=True, order=True)
class ObjectKey:
    """Which object: the identity the inventory records and diffs are reported under."""

    api_version: str
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind} {where}{self.name} ({self.api_version})"

    def as_list(self) -> list[str]:
        return [self.api_version, self.kind, self.namespace, self.name]

    @classmethod
    def from_list(cls, item: list[str]) -> ObjectKey:
        api_version, kind, namespace, name = (str(x) for x in item)
        return cls(api_version, kind, namespace, name)


@dataclass(frozen=True)
class ManifestObject:
    key: ObjectKey
    body: dict[str, Any]


def parse_manifest(text: str, default_namespace: str) -> list[ManifestObject]:
    """Every non-empty document of ``text``, validated, with ``default_namespace`` filled in."""
    try:
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        raise ManifestError(f"the manifest is not valid YAML: {exc}") from None
    out: list[ManifestObject] = []
    seen: set[ObjectKey] = set()
    for index, doc in enumerate(documents, start=1):
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise ManifestError(f"manifest document {index} is not an object")
        if doc.get("kind") == "List" and isinstance(doc.get("items"), list):
            raise ManifestError(f"manifest document {index} is a List: write its items as documents")
        body = copy.deepcopy(doc)
        api_version, kind = body.get("apiVersion"), body.get("kind")
        raw_metadata = body.get("metadata")
        metadata: dict[str, Any] = raw_metadata if isinstance(raw_metadata, dict) else {}
        name = metadata.get("name")
        missing = [
            f for f, v in (("apiVersion", api_version), ("kind", kind), ("metadata.name", name)) if not v
        ]
        if missing:
            label = f"{kind} {name}" if kind or name else "an object"
            raise ManifestError(f"manifest document {index} ({label}) has no {', '.join(missing)}")
        namespace = str(metadata.get("namespace") or "")
        if str(kind) in CLUSTER_KINDS:
            namespace = ""
            metadata.pop("namespace", None)
        elif not namespace:
            namespace = default_namespace
            if namespace:
                metadata["namespace"] = namespace
        body["metadata"] = metadata
        key = ObjectKey(str(api_version), str(kind), namespace, str(name))
        if key in seen:
            raise ManifestError(f"manifest document {index}: {key} appears twice")
        seen.add(key)
        out.append(ManifestObject(key, body))
    if not out:
        raise ManifestError("the manifest has no objects")
    return out


def rank(key: ObjectKey) -> int:
    return _RANK.get(key.kind, len(KIND_ORDER))


def apply_order(objects: list[ManifestObject]) -> list[ManifestObject]:
    """Dependency order; the manifest's own order within one kind (a stable sort)."""
    return sorted(objects, key=lambda o: rank(o.key))


def delete_order(keys: list[ObjectKey]) -> list[ObjectKey]:
    """The reverse of the apply order: workloads first, namespaces and CRDs last."""
    return sorted(keys, key=rank, reverse=True)
