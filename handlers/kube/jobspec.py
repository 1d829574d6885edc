"""job-deploy's decisions: the Job a plan asks for, and what a Job's status says.

Pure, so the handler's edges (create, poll, delete) stay thin. The Job's name comes from the
runner job's id, so a retried runner job finds the Job its earlier attempt created instead of
starting a second run of the image.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any, Literal

from handlers.kube.readiness import true_condition
from runner.sdk import HandlerError
from runner.sdk.plans import JobDeployPlan

MANAGED_BY = "byoc-runner"
_NOT_DNS = re.compile(r"[^a-z0-9-]+")

Outcome = Literal["running", "complete", "failed"]


def job_name(runner_job_id: str) -> str:
    """A DNS-1123 label (at most 63 characters, as the job controller puts it in a pod label)."""
    base = _NOT_DNS.sub("-", runner_job_id.lower()).strip("-") or "job"
    name = f"job-deploy-{base}"
    if len(name) <= 63:
        return name
    digest = hashlib.sha256(runner_job_id.encode()).hexdigest()[:8]
    return f"{name[:54].rstrip('-')}-{digest}"


def image_ref(section: JobDeployPlan) -> str:
    if not section.image_url:
        raise HandlerError("the plan's job section has no image_url")
    if not section.tag or "@" in section.image_url:
        return section.image_url
    return f"{section.image_url}:{section.tag}"


def job_manifest(
    section: JobDeployPlan, *, name: str, runner_job_id: str, seconds_left: float
) -> dict[str, Any]:
    """The batch/v1 Job: one pod, never restarted, stopped by the cluster at the job's deadline."""
    if section.backoff_limit < 0:
        raise HandlerError("the plan's job.backoff_limit is negative")
    labels = {"app.kubernetes.io/managed-by": MANAGED_BY, "runner.nuon.co/job-id": _label(runner_job_id)}
    container: dict[str, Any] = {"name": "job", "image": image_ref(section)}
    if section.cmd:
        container["command"] = list(section.cmd)
    if section.args:
        container["args"] = list(section.args)
    if section.env_vars:
        container["env"] = [{"name": k, "value": v} for k, v in sorted(section.env_vars.items())]
    spec: dict[str, Any] = {
        "backoffLimit": section.backoff_limit,
        "template": {
            "metadata": {"labels": labels},
            "spec": {"restartPolicy": "Never", "containers": [container]},
        },
    }
    if math.isfinite(seconds_left):
        spec["activeDeadlineSeconds"] = max(1, math.ceil(seconds_left))
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": section.namespace or "default", "labels": labels},
        "spec": spec,
    }


def _label(value: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", value)[:63]
    return cleaned.strip("-._")


def job_outcome(job: dict[str, Any]) -> tuple[Outcome, str]:
    """Complete or Failed as the job controller sets them; anything else is still running."""
    status = job.get("status") or {}
    for kind, outcome in (("Failed", "failed"), ("Complete", "complete")):
        cond = true_condition(status, kind)
        if cond is not None:
            why = " ".join(str(cond.get(k) or "") for k in ("reason", "message")).strip()
            return outcome, why or kind  # type: ignore[return-value]
    return "running", f"{status.get('active') or 0} active, {status.get('failed') or 0} failed"
