"""The plan's ``ResourceDiff`` per object (docs/runner-api.md; reference-runner §4.12).

Pure: the live object and the server's dry-run answer in, a dict of the wire shape out. Both sides
are compared without what the server owns (status, managedFields, resourceVersion, uid,
generation, creationTimestamp and the like), so a re-plan of an applied manifest shows no change.
Entries are one per changed leaf path (``spec.replicas``, ``data.a``); ``original`` and
``applied`` are the two values, missing on the side that has none.
"""

from __future__ import annotations

import enum
from typing import Any

from handlers.kube.manifest import ObjectKey

DIFF_VERSION = "2"
_SERVER_METADATA = (
    "creationTimestamp",
    "resourceVersion",
    "generation",
    "uid",
    "managedFields",
    "selfLink",
)
#: Annotations the server or kubectl writes, not the manifest.
_SERVER_ANNOTATIONS = (
    "deployment.kubernetes.io/revision",
    "kubectl.kubernetes.io/last-applied-configuration",
)


class DiffType(enum.IntEnum):
    UNCHANGED = 0
    REMOVED = 1
    ADDED = 2
    MODIFIED = 3
    ERROR = 4


def comparable(obj: dict[str, Any] | None) -> dict[str, Any]:
    """``obj`` without the fields the server owns."""
    if not obj:
        return {}
    out = {k: v for k, v in obj.items() if k != "status"}
    metadata = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in _SERVER_METADATA}
    annotations = {
        k: v for k, v in (metadata.get("annotations") or {}).items() if k not in _SERVER_ANNOTATIONS
    }
    if annotations:
        metadata["annotations"] = annotations
    else:
        metadata.pop("annotations", None)
    out["metadata"] = metadata
    return out


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Leaf paths of a JSON value: ``{"a": {"b": [1]}}`` -> ``{"a.b[0]": 1}``; empty containers are leaves."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(value, list) and value:
        out = {}
        for i, v in enumerate(value):
            out.update(flatten(v, f"{prefix}[{i}]"))
        return out
    return {prefix: value}


def entries(original: dict[str, Any], applied: dict[str, Any]) -> list[dict[str, Any]]:
    before, after = flatten(comparable(original)), flatten(comparable(applied))
    out: list[dict[str, Any]] = []
    for path in sorted(before.keys() | after.keys()):
        if path not in after:
            out.append({"path": path, "original": before[path], "type": int(DiffType.REMOVED)})
        elif path not in before:
            out.append({"path": path, "applied": after[path], "type": int(DiffType.ADDED)})
        elif before[path] != after[path]:
            out.append(
                {
                    "path": path,
                    "original": before[path],
                    "applied": after[path],
                    "type": int(DiffType.MODIFIED),
                }
            )
    return out


def resource_diff(
    key: ObjectKey,
    *,
    op: str,
    live: dict[str, Any] | None,
    applied: dict[str, Any] | None,
    resource: str = "",
    error: str = "",
    dry_run: bool = True,
) -> dict[str, Any]:
    """One object's ``ResourceDiff``: added (no live object), removed (``applied`` is None),
    modified, unchanged, or error (``error`` set)."""
    found: list[dict[str, Any]] = []
    if error:
        kind = DiffType.ERROR
    elif live is None and applied is None:
        kind = DiffType.UNCHANGED  # deleting what is not there
    elif live is None:
        kind = DiffType.ADDED
        found = entries({}, applied or {})
    elif applied is None:
        kind = DiffType.REMOVED
        found = entries(live, {})
    else:
        found = entries(live, applied)
        kind = DiffType.MODIFIED if found else DiffType.UNCHANGED
    out: dict[str, Any] = {
        "_version": DIFF_VERSION,
        "name": key.name,
        "namespace": key.namespace,
        "kind": key.kind,
        "api": key.api_version,
        "resource": resource,
        "op": op,
        "type": int(kind),
        "error": error,
        "dry_run": dry_run,
        "entries": found,
    }
    # The reference's omitempty fields.
    return {k: v for k, v in out.items() if k in ("_version", "type", "entries") or v}


def summary(diffs: list[dict[str, Any]]) -> dict[str, int]:
    """Counts by type name, for the log and the display."""
    names = {int(t): t.name.lower() for t in DiffType}
    out = {name: 0 for name in names.values()}
    for d in diffs:
        out[names[int(d["type"])]] += 1
    return out


def has_changes(diffs: list[dict[str, Any]]) -> bool:
    return any(int(d["type"]) != DiffType.UNCHANGED for d in diffs)
