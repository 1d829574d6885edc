"""job-deploy's pure decisions: the Job built from a plan, and the reading of its conditions."""

from __future__ import annotations

import pytest

from handlers.kube.jobspec import image_ref, job_manifest, job_name, job_outcome
from runner.sdk import HandlerError
from runner.sdk.plans import DeployPlan, JobDeployPlan


def test_plan_decodes_the_job_section() -> None:
    plan = DeployPlan.model_validate(
        {
            "job": {
                "image_url": "r/app",
                "tag": "1",
                "cmd": ["sh"],
                "args": ["-c", "x"],
                "env_vars": {"A": "b"},
            }
        }
    )
    assert plan.job is not None
    assert (plan.job.image_url, plan.job.tag, plan.job.cmd, plan.job.args) == (
        "r/app",
        "1",
        ["sh"],
        ["-c", "x"],
    )


def test_job_name_is_stable_and_a_dns_label() -> None:
    assert job_name("01JABC") == job_name("01JABC") == "job-deploy-01jabc"
    long = job_name("X" * 100)
    assert len(long) <= 63
    assert long != job_name("X" * 99)


def test_manifest_carries_the_plan() -> None:
    section = JobDeployPlan(
        image_url="reg/app",
        tag="v2",
        cmd=["run"],
        args=["--once"],
        env_vars={"B": "2", "A": "1"},
        namespace="ns",
    )
    body = job_manifest(section, name="job-deploy-x", runner_job_id="x", seconds_left=90.2)
    spec = body["spec"]
    pod = spec["template"]["spec"]
    assert body["metadata"]["namespace"] == "ns"
    assert spec["backoffLimit"] == 0
    assert spec["activeDeadlineSeconds"] == 91
    assert pod["restartPolicy"] == "Never"
    container = pod["containers"][0]
    assert container["image"] == "reg/app:v2"
    assert container["command"] == ["run"]
    assert container["args"] == ["--once"]
    assert container["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]


def test_manifest_defaults_and_refusals() -> None:
    body = job_manifest(
        JobDeployPlan(image_url="a@sha256:00", tag="t"), name="n", runner_job_id="i", seconds_left=0
    )
    assert body["metadata"]["namespace"] == "default"
    assert body["spec"]["activeDeadlineSeconds"] == 1
    assert "command" not in body["spec"]["template"]["spec"]["containers"][0]
    assert image_ref(JobDeployPlan(image_url="a")) == "a"
    with pytest.raises(HandlerError, match="image_url"):
        image_ref(JobDeployPlan())
    with pytest.raises(HandlerError, match="backoff_limit"):
        job_manifest(
            JobDeployPlan(image_url="a", backoff_limit=-1), name="n", runner_job_id="i", seconds_left=5
        )


def test_outcome_reads_conditions() -> None:
    assert job_outcome({"status": {"active": 1}}) == ("running", "1 active, 0 failed")
    done = {"status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    assert job_outcome(done) == ("complete", "Complete")
    failed = {
        "status": {
            "conditions": [
                {"type": "Complete", "status": "False"},
                {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "boom"},
            ]
        }
    }
    assert job_outcome(failed) == ("failed", "BackoffLimitExceeded boom")
