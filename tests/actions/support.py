"""Helpers of the actions tier: a workflow (the file's format) through the control plane's
operator routes, submitted as an ``actions-workflow`` job, and what the control plane holds after."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from controlplane.workflow_file import JOB_TYPE, parse_workflow

TERMINAL = ("finished", "failed", "timed-out", "cancelled", "not-attempted")


@dataclass
class Submitted:
    job: dict[str, Any]
    config: dict[str, Any]
    run: dict[str, Any]
    install_id: str

    def step_ids(self) -> list[str]:
        return [str(s["id"]) for s in self.run["steps"]]


def submit_workflow(
    operator: Any, workflow: dict[str, Any], *, plan_edit: Any = None, **fields: Any
) -> Submitted:
    """Create the config and the run, then the job with the plan the real planner would build."""
    spec = parse_workflow(workflow)
    config = operator.json("POST", "/v1/action-workflows/configs", json=spec.config_body())
    run = operator.json(
        "POST", f"/v1/installs/{spec.install_id}/action-workflows/runs", json=spec.run_body(config["id"])
    )
    plan = spec.plan(config, run)
    if plan_edit is not None:
        plan_edit(plan)
    job = operator.submit(JOB_TYPE, plan=plan, **{**spec.job_fields(), **fields})
    return Submitted(job=job, config=config, run=run, install_id=spec.install_id)


def wait_done(operator: Any, submitted: Submitted, timeout: float = 60.0) -> dict[str, Any]:
    done: dict[str, Any] = operator.wait_job(submitted.job["id"], TERMINAL, timeout=timeout)
    return done


def run_state(operator: Any, submitted: Submitted) -> dict[str, Any]:
    """The run as the runner reads it (runner token not needed: the operator's admin token)."""
    run: dict[str, Any] = operator.json(
        "GET", f"/v1/installs/{submitted.install_id}/action-workflows/runs/{submitted.run['id']}"
    )
    return run


def step_statuses(operator: Any, submitted: Submitted) -> list[tuple[str, int]]:
    return [(s["status"], int(s["execution_duration"])) for s in run_state(operator, submitted)["steps"]]


def log_text(operator: Any, job: dict[str, Any]) -> str:
    records = operator.logs(job["log_stream_id"])
    return "\n".join(
        f"{r.get('severity_text', '')} {r.get('body', '')} {r.get('attributes', '')}" for r in records
    )


def failure(operator: Any, job: dict[str, Any]) -> dict[str, Any]:
    meta: dict[str, Any] = operator.result(job["id"]).get("error_metadata") or {}
    return meta
