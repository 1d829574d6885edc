"""The decisions of the executor and poller, as plain functions."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import TypedDict

import pytest

from runner.api.models import ErrorCode, ExecutionStatus, JobStatus, RunnerGroupSettings, RunnerJob
from runner.api.plans import PlanError
from runner.backoff import backoff_delay
from runner.config import Config
from runner.daemon import effective_groups, group_concurrency
from runner.executor import AbortReason, classify, failure_result
from runner.handler import ChildProcessFailed, HandlerError
from runner.health import HealthEndpoints, Probe, route
from runner.metrics import RunnerMetrics
from runner.poller import pick_claimable

pytestmark = pytest.mark.unit


def job(id: str, type: str = "noop", age: float = 0.0, status: JobStatus = JobStatus.AVAILABLE) -> RunnerJob:
    return RunnerJob(
        id=id, type=type, status=status, created_at=datetime(2026, 1, 1, tzinfo=UTC) - timedelta(seconds=age)
    )


def test_oldest_supported_available_first() -> None:
    jobs = [
        job("new", age=1),
        job("old", age=10),
        job("weird", type="mystery", age=20),
        job("taken", age=30, status=JobStatus.IN_PROGRESS),
    ]
    picked = pick_claimable(jobs, lambda t: t == "noop")
    assert [j.id for j in picked] == ["old", "new"]


def test_backoff_is_bounded() -> None:
    assert all(0 <= backoff_delay(n, base=0.5, cap=30) <= 30 for n in range(50))


class ClassifyArgs(TypedDict):
    """``classify``'s keywords."""

    step: str
    error: BaseException | None
    abort: AbortReason | None
    deadline_hit: bool
    handler_name: str


class ClassifyOverrides(TypedDict, total=False):
    """What one case of ``test_classify`` changes in them."""

    error: BaseException | None
    abort: AbortReason | None
    deadline_hit: bool


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"deadline_hit": True}, ExecutionStatus.TIMED_OUT, ErrorCode.TIMED_OUT),
        ({"abort": AbortReason.SERVER_CANCELLED}, ExecutionStatus.CANCELLED, ErrorCode.CANCELLED),
        ({"abort": AbortReason.SERVER_TIMED_OUT}, ExecutionStatus.TIMED_OUT, ErrorCode.TIMED_OUT),
        ({"abort": AbortReason.SHUTDOWN}, ExecutionStatus.FAILED, ErrorCode.CANCELLED),
        ({"error": PlanError("plan is not valid JSON")}, ExecutionStatus.FAILED, ErrorCode.INVALID_PLAN),
        (
            {"error": ChildProcessFailed("terraform", 1, ["Error: boom"])},
            ExecutionStatus.FAILED,
            ErrorCode.CHILD_PROCESS,
        ),
        ({"error": ValueError("oops")}, ExecutionStatus.FAILED, ErrorCode.INTERNAL),
    ],
)
def test_classify(kwargs: ClassifyOverrides, status: ExecutionStatus, code: ErrorCode) -> None:
    args: ClassifyArgs = {
        "step": "execute",
        "error": None,
        "abort": None,
        "deadline_hit": False,
        "handler_name": "H",
        **kwargs,
    }
    failure = classify(**args)
    assert failure.status == status
    assert failure.code == code
    assert failure.step == "execute"


def test_failure_result_is_kept_by_the_server() -> None:
    failure = classify(
        step="execute",
        error=HandlerError("registry said 401", ref="127.0.0.1:5000/a:b"),
        abort=None,
        deadline_hit=False,
        handler_name="OciSyncHandler",
    )
    result = failure_result(
        failure, job=RunnerJob(id="job1", type="oci-sync"), handler_name="OciSyncHandler", logs_lost=3
    )
    wire = result.to_wire()
    assert wire["success"] is False
    assert wire["contents"]  # the reference server drops results without contents
    assert json.loads(wire["contents"])["message"] == "registry said 401"
    meta = wire["error_metadata"]
    assert meta["step"] == "execute"
    assert meta["handler"] == "OciSyncHandler"
    assert meta["job_type"] == "oci-sync"
    assert meta["ref"] == "127.0.0.1:5000/a:b"
    assert meta["logs_lost"] == "3"


def test_groups_from_settings_and_config() -> None:
    settings = RunnerGroupSettings(groups=["operations", "deploys", "action", "bogus"])
    assert effective_groups(None, settings) == ["operations", "deploy", "actions"]
    assert effective_groups(("build",), settings) == ["build"]
    assert "operations" in effective_groups(None, RunnerGroupSettings(groups=[]))


def test_group_concurrency_precedence() -> None:
    config = Config(runner_id="r", api_url="http://x", api_token="t", concurrency={"build": 3})
    settings = RunnerGroupSettings(job_group_parallelism={"build": "1", "deploy": "4"})
    assert group_concurrency(config, settings, "build") == 3
    assert group_concurrency(config, settings, "deploy") == 4
    assert group_concurrency(config, settings, "sync") == 1


def test_health_routes() -> None:
    metrics = RunnerMetrics()
    metrics.jobs.inc(1, "noop", "finished")
    endpoints = HealthEndpoints(lambda: Probe(True, {}), lambda: Probe(False, {"why": "x"}), metrics.render)
    assert route(endpoints, "GET", "/healthz").startswith(b"HTTP/1.1 200")
    ready = route(endpoints, "GET", "/readyz")
    assert ready.startswith(b"HTTP/1.1 503")
    assert b'"why": "x"' in ready
    body = route(endpoints, "GET", "/metrics")
    assert b'byoc_runner_jobs_total{type="noop",outcome="finished"} 1' in body
    assert route(endpoints, "POST", "/healthz").startswith(b"HTTP/1.1 405")
    assert route(endpoints, "GET", "/nope").startswith(b"HTTP/1.1 404")
