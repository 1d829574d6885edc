"""Helm plans, pure: rendered manifests to per-object ``ResourceDiff``s, and the plan contents.

A plan compares what helm would deploy (the dry-run release's manifest and hooks) with what the
release holds now (its last deployed manifest and hooks), object by object, with the diff of
handlers/kube/diff.py (reference-runner.md §4.12), so the control plane's no-op check and approval
view read helm plans like kubernetes-manifest plans. The contents are
``{plan, op: install|upgrade|uninstall, helm_content_diff}``; ``plan`` is a short text summary
("no changes" when nothing differs, as the reference's helm-diff wrote).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import zlib
from typing import Any

import yaml

from handlers.kube import diff as diffs
from handlers.kube.manifest import CLUSTER_KINDS, ObjectKey
from runner.sdk import HandlerError
from runner.sdk.plans import decode_apply_plan_contents

OPS = ("install", "upgrade", "uninstall")


def manifest_objects(text: str, namespace: str) -> dict[ObjectKey, dict[str, Any]]:
    """Every object of a rendered manifest by key; namespaced kinds default to ``namespace``."""
    out: dict[ObjectKey, dict[str, Any]] = {}
    for doc in yaml.safe_load_all(text or ""):
        if not isinstance(doc, dict) or not doc.get("kind"):
            continue
        if doc.get("kind", "").endswith("List") and isinstance(doc.get("items"), list):
            items = [i for i in doc["items"] if isinstance(i, dict)]
        else:
            items = [doc]
        for obj in items:
            meta = obj.get("metadata") or {}
            kind = str(obj.get("kind", ""))
            ns = "" if kind in CLUSTER_KINDS else str(meta.get("namespace") or namespace)
            key = ObjectKey(str(obj.get("apiVersion", "")), kind, ns, str(meta.get("name", "")))
            out[key] = obj
    return out


def release_text(release: dict[str, Any] | None) -> str:
    """A release's manifest followed by its hooks' manifests (``helm ... -o json`` shape)."""
    if not release:
        return ""
    parts = [str(release.get("manifest") or "")]
    for hook in release.get("hooks") or []:
        if isinstance(hook, dict) and hook.get("manifest"):
            parts.append("---\n" + str(hook["manifest"]))
    return "\n".join(parts)


def diff_manifests(old: str, new: str | None, namespace: str, op: str) -> list[dict[str, Any]]:
    """One ``ResourceDiff`` per object of either side (``new`` None: everything is removed)."""
    before = manifest_objects(old, namespace)
    after = manifest_objects(new or "", namespace) if new is not None else {}
    found = []
    for key in sorted(before.keys() | after.keys()):
        found.append(diffs.resource_diff(key, op=op, live=before.get(key), applied=after.get(key)))
    return found


def summary_text(found: list[dict[str, Any]]) -> str:
    if not diffs.has_changes(found):
        return "no changes"
    counts = diffs.summary(found)
    return ", ".join(f"{n} {name}" for name, n in counts.items() if n)


def plan_contents(op: str, found: list[dict[str, Any]]) -> dict[str, Any]:
    return {"plan": summary_text(found), "op": op, "helm_content_diff": found}


def read_op(apply_plan_contents: str) -> str:
    """The ``op`` of the plan job's contents (gzip'd JSON, or plain JSON)."""
    raw = decode_apply_plan_contents(apply_plan_contents)
    with contextlib.suppress(OSError, EOFError, zlib.error):
        raw = gzip.decompress(raw)
    try:
        op = json.loads(raw).get("op", "")
    except (ValueError, AttributeError):
        raise HandlerError("apply_plan_contents is not a helm plan") from None
    if op not in OPS:
        raise HandlerError(f"apply_plan_contents has op {op!r}: expected install, upgrade or uninstall")
    return str(op)


#: Release states a killed runner (or helm process) leaves behind.
PENDING = ("pending-install", "pending-upgrade", "pending-rollback")


def latest(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    return max(history, key=lambda r: int(r.get("revision", 0)), default=None)


def last_deployed_revision(history: list[dict[str, Any]]) -> int | None:
    """The newest revision that was deployed or superseded (a rollback target), if any."""
    good = [int(r["revision"]) for r in history if r.get("status") in ("deployed", "superseded")]
    return max(good, default=None)
