"""Wire models: nanosecond durations, tolerant input, the transition table."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest

from runner.api.models import (
    EXECUTION_TRANSITIONS,
    ExecutionStatus,
    HeartBeatRequest,
    RunnerGroupSettings,
    RunnerJob,
    group_for_type,
    is_legal_transition,
)

pytestmark = pytest.mark.unit


def test_durations_are_nanoseconds_on_the_wire() -> None:
    job = RunnerJob.model_validate({"id": "job1", "execution_timeout": 3_600_000_000_000, "unknown_field": 1})
    assert job.execution_timeout == timedelta(hours=1)
    assert job.to_wire()["execution_timeout"] == 3_600_000_000_000
    hb = HeartBeatRequest(alive_time=timedelta(seconds=1.5), process="")
    assert hb.to_wire() == {"alive_time": 1_500_000_000, "version": "", "process": ""}
    settings = RunnerGroupSettings.model_validate({"heart_beat_timeout": 5_000_000_000})
    assert settings.heart_beat_timeout == timedelta(seconds=5)
    with pytest.raises(ValueError, match="integer number of nanoseconds"):
        RunnerJob.model_validate({"execution_timeout": "soon"})


def test_transition_table() -> None:
    S = ExecutionStatus
    happy = [S.PENDING, S.INITIALIZING, S.IN_PROGRESS, S.CLEANING_UP, S.FINISHED]
    for a, b in itertools.pairwise(happy):
        assert is_legal_transition(a, b)
    for running in (S.PENDING, S.INITIALIZING, S.IN_PROGRESS, S.CLEANING_UP):
        for end in (S.FAILED, S.TIMED_OUT, S.CANCELLED):
            assert is_legal_transition(running, end)
    for terminal in (S.FINISHED, S.FAILED, S.TIMED_OUT, S.CANCELLED, S.NOT_ATTEMPTED):
        assert EXECUTION_TRANSITIONS[terminal] == frozenset()
        assert not is_legal_transition(terminal, S.IN_PROGRESS)
        assert is_legal_transition(terminal, terminal)  # an idempotent retry
    assert not is_legal_transition(S.CLEANING_UP, S.IN_PROGRESS)


def test_groups() -> None:
    assert group_for_type("health-check") == "operations"
    assert group_for_type("oci-sync") == "sync"
    assert group_for_type("nope") is None
