"""The journal keeps the terraform locks a job holds (issue 11, finding 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runner.journal import Journal, JournalEntry

pytestmark = pytest.mark.unit


def _entry(execution_id: str = "exe" + "a" * 23, job_id: str = "job1") -> JournalEntry:
    return JournalEntry(
        execution_id=execution_id,
        job_id=job_id,
        job_type="sandbox-terraform",
        group="sandbox",
        log_stream_id=None,
        claimed_at=1.0,
        pid=1,
        last_status="in-progress",
        spool_key=execution_id,
    )


def test_locks_are_noted_and_forgotten_by_job(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    entry = _entry()
    journal.record_claim(entry)
    assert journal.note_lock("job1", "tfw1", "L1", '{"ID":"L1"}')
    assert not journal.note_lock("job-unknown", "tfw1", "L2", "{}")
    (reread,) = journal.entries()
    assert reread.held_locks == [{"workspace_id": "tfw1", "lock_id": "L1", "info": '{"ID":"L1"}'}]
    assert journal.forget_lock("job1", "tfw1", "L1")
    assert journal.get(entry.execution_id).held_locks == []  # type: ignore[union-attr]


def test_an_entry_written_before_locks_were_journaled_still_reads(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    entry = _entry()
    old = json.loads(entry.to_json())
    del old["held_locks"]
    (tmp_path / f"{entry.execution_id}.json").write_text(json.dumps(old))
    (reread,) = journal.entries()
    assert reread.held_locks == []
    assert reread.job_id == "job1"
