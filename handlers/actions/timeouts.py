"""The deadlines of a workflow and its steps, on the anyio clock.

A timeout of 0 means "no limit of its own": the workflow then ends with the job's deadline, not
at once (the reference's ``context.WithTimeout(ctx, 0)`` failed every such workflow before its
first step). A step's own timeout (ours) never outlives the workflow's.
"""

from __future__ import annotations

NS = 1_000_000_000


def workflow_deadline(now: float, timeout_ns: int, job_deadline: float) -> float:
    if timeout_ns <= 0:
        return job_deadline
    return min(now + timeout_ns / NS, job_deadline)


def step_deadline(now: float, timeout_ns: int, workflow_end: float) -> float:
    if timeout_ns <= 0:
        return workflow_end
    return min(now + timeout_ns / NS, workflow_end)


def describe_seconds(seconds: float) -> str:
    return f"{seconds:.0f}s" if seconds >= 10 else f"{seconds:.1f}s"
