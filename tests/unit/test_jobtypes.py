"""The one job-type table (runner/api/jobtypes.py) and the views derived from it."""

from __future__ import annotations

from datetime import timedelta

import pytest

from runner.api import jobtypes
from runner.api.jobtypes import JOB_TYPES, SandboxBehaviour, spec_for
from runner.api.models import JobGroup, JobType, default_execution_timeout, group_for_type
from runner.api.plans import DeployPlan, EmptyPlan, SyncOCIPlan, plan_model_for

pytestmark = pytest.mark.unit


def test_every_job_type_of_the_contract_is_in_the_table_once() -> None:
    # runner-local has no group in the contract (Group() answers unknown): nobody polls for it.
    expected = {t.value for t in JobType} - {"unknown", "runner-local"}
    assert set(JOB_TYPES) == expected
    assert all(spec.job_type == name for name, spec in JOB_TYPES.items())
    groups = {g.value for g in JobGroup} - {"", "any"}
    assert {spec.group for spec in JOB_TYPES.values()} <= groups


@pytest.mark.parametrize(
    ("job_type", "group", "minutes", "plan"),
    [
        ("health-check", "operations", 5, EmptyPlan),
        ("oci-sync", "sync", 15, SyncOCIPlan),
        ("terraform-deploy", "deploy", 60, DeployPlan),
        ("docker-build", "build", 60, None),
        ("mng-shut-down", "management", 5, EmptyPlan),
        ("mng-runner-restart", "management", 5, EmptyPlan),
        ("actions-workflow", "actions", 5, None),
    ],
)
def test_rows_and_the_views_agree(job_type: str, group: str, minutes: int, plan: type | None) -> None:
    spec = spec_for(job_type)
    assert spec.group == group == group_for_type(job_type)
    assert spec.default_timeout == timedelta(minutes=minutes) == default_execution_timeout(job_type)
    assert plan_model_for(job_type) is spec.plan_model
    if plan is not None:
        assert spec.plan_model is plan
    assert spec.needs_plan is (spec.plan_model is not EmptyPlan)


def test_unknown_types_have_no_group_and_the_default_timeout() -> None:
    assert group_for_type("nope") is None
    assert spec_for("nope").group == ""
    assert default_execution_timeout("nope") == jobtypes.DEFAULT_EXECUTION_TIMEOUT
    assert plan_model_for("nope") is EmptyPlan


def test_only_shut_down_runs_for_real_in_sandbox_mode() -> None:
    real = [t for t, spec in JOB_TYPES.items() if spec.sandbox is SandboxBehaviour.REAL]
    assert real == ["shut-down"]


@pytest.mark.parametrize(
    ("job_type", "metadata", "finishes"),
    [
        # bins/runner/internal/jobs/management/shutdown/exec.go: always
        ("mng-shut-down", None, True),
        # .../management/vm_shutdown/exec.go: only a VM shutdown
        ("mng-vm-shut-down", {"shutdown_type": "vm"}, True),
        ("mng-vm-shut-down", {}, False),
        # .../operations/shutdown/exec.go: only a forced shutdown
        ("shut-down", {"shutdown_type": "force"}, True),
        ("shut-down", {"shutdown_type": "FORCE"}, True),
        ("shut-down", {"shutdown_type": "graceful"}, False),
        ("shut-down", None, False),
        # .../management/update/cleanup.go reports only the execution
        ("mng-runner-update-version", None, False),
        ("mng-runner-restart", None, False),
        ("noop", None, False),
        ("update-version", None, False),
    ],
)
def test_which_jobs_mark_themselves_finished(
    job_type: str, metadata: dict[str, str] | None, finishes: bool
) -> None:
    assert spec_for(job_type).finishes_job_for(metadata) is finishes


def test_group_listing() -> None:
    assert set(jobtypes.job_types_in("management")) == {
        "mng-vm-shut-down",
        "mng-shut-down",
        "mng-runner-update-version",
        "mng-runner-restart",
    }
