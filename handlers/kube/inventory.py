"""The applied set, kept in the cluster as a ConfigMap, and what to prune from it.

Pure: the inventory's name and body, reading it back, and the prune set. One inventory per
deployed component (install + component id, else the plan's namespace) in the plan's namespace;
the handler writes it as the union of the previous and the new set before applying (so an
interrupted apply leaves nothing it created untracked) and as exactly the new set after the apply
and the prune, before the readiness wait (so a cancel there leaves an inventory that says what is
applied, not half of it).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from handlers.kube.manifest import ObjectKey

LABEL = "byoc-runner.io/inventory"
DATA_KEY = "objects"


def inventory_name(install_id: str, component_id: str, namespace: str) -> str:
    raw = "-".join(p for p in (install_id, component_id) if p) or namespace or "default"
    slug = re.sub(r"[^a-z0-9-]+", "-", raw.lower()).strip("-")[:40].strip("-")
    digest = hashlib.sha256(raw.encode()).hexdigest()[:8]
    return f"byoc-runner-inventory-{slug}-{digest}" if slug else f"byoc-runner-inventory-{digest}"


def inventory_body(name: str, namespace: str, keys: list[ObjectKey]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": {LABEL: "true"}},
        "data": {DATA_KEY: json.dumps([k.as_list() for k in sorted(set(keys))])},
    }


def read_inventory(configmap: dict[str, Any] | None) -> list[ObjectKey]:
    if not configmap:
        return []
    text = (configmap.get("data") or {}).get(DATA_KEY) or "[]"
    return [ObjectKey.from_list(item) for item in json.loads(text)]


def prune_set(previous: list[ObjectKey], current: list[ObjectKey]) -> list[ObjectKey]:
    """What was applied before and is no longer in the manifest."""
    keep = set(current)
    return sorted({k for k in previous if k not in keep})
