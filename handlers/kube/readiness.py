"""When an applied workload counts as ready: the decision ``kubectl rollout status`` makes.

Pure: one object as the server returns it in, ``(ready, why)`` out; a failed Job raises. Kinds
other than Deployments, StatefulSets, DaemonSets and Jobs are ready once applied.
"""

from __future__ import annotations

from typing import Any

from runner.sdk import HandlerError

WAITED_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "Job"})


class WorkloadFailed(HandlerError):
    """A workload reached a state it does not come back from (a Job's Failed condition)."""


def true_condition(status: dict[str, Any], kind: str) -> dict[str, Any] | None:
    """The condition ``kind`` when its status is True, as controllers set them."""
    for cond in status.get("conditions") or []:
        if cond.get("type") == kind and str(cond.get("status")) == "True":
            return dict(cond)
    return None


def readiness(obj: dict[str, Any]) -> tuple[bool, str]:
    kind = obj.get("kind", "")
    if kind not in WAITED_KINDS:
        return True, "applied"
    name = (obj.get("metadata") or {}).get("name", "")
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    generation = (obj.get("metadata") or {}).get("generation") or 0
    if kind != "Job" and (status.get("observedGeneration") or 0) < generation:
        return False, "the controller has not seen the latest generation"
    if kind == "Deployment":
        want = spec.get("replicas", 1)
        updated, available = status.get("updatedReplicas") or 0, status.get("availableReplicas") or 0
        if updated < want:
            return False, f"{updated} of {want} replicas updated"
        if (status.get("replicas") or 0) > updated:
            return False, f"{status.get('replicas', 0) - updated} old replicas pending termination"
        if available < want:
            return False, f"{available} of {want} replicas available"
        return True, f"{available} replicas available"
    if kind == "StatefulSet":
        want = spec.get("replicas", 1)
        ready, updated = status.get("readyReplicas") or 0, status.get("updatedReplicas") or 0
        if updated < want:
            return False, f"{updated} of {want} replicas updated"
        if ready < want:
            return False, f"{ready} of {want} replicas ready"
        return True, f"{ready} replicas ready"
    if kind == "DaemonSet":
        want = status.get("desiredNumberScheduled") or 0
        updated, ready = status.get("updatedNumberScheduled") or 0, status.get("numberReady") or 0
        if updated < want:
            return False, f"{updated} of {want} pods updated"
        if ready < want:
            return False, f"{ready} of {want} pods ready"
        return True, f"{ready} pods ready"
    failed = true_condition(status, "Failed")
    if failed is not None:
        raise WorkloadFailed(
            f"Job {name} failed: {failed.get('reason', '')} {failed.get('message', '')}".strip(), object=name
        )
    if true_condition(status, "Complete") is not None:
        return True, "complete"
    return False, f"{status.get('succeeded') or 0} succeeded, {status.get('active') or 0} active"
