"""The journal of claimed executions and the state-dir lock, on a real file system.

The crash tests use real processes killed with SIGKILL, not simulated ones.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import anyio
import pytest
from structlog.testing import capture_logs

from runner.journal import Journal, JournalEntry, StateDirLock, StateDirLocked
from runner.workspace import InvalidExecutionId

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


def entry(execution_id: str, claimed_at: float = 1000.0, **changes: object) -> JournalEntry:
    values: dict[str, object] = {
        "execution_id": execution_id,
        "job_id": "job-" + execution_id,
        "job_type": "terraform-deploy",
        "group": "deploy",
        "log_stream_id": "ls-1",
        "claimed_at": claimed_at,
        "pid": 4242,
        "last_status": "initializing",
        "spool_key": "spool-" + execution_id,
    }
    values.update(changes)
    return JournalEntry(**values)  # type: ignore[arg-type]


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True, timeout=30
    )


def test_record_and_read_back(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal")
    journal.record_claim(entry("e2", claimed_at=2000.0, log_stream_id=None))
    journal.record_claim(entry("e1", claimed_at=1000.0))
    entries = Journal(tmp_path / "journal").entries()
    assert entries == [entry("e1", claimed_at=1000.0), entry("e2", claimed_at=2000.0, log_stream_id=None)]
    path = tmp_path / "journal" / "e1.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["version"] == 1


def test_survives_kill_9(tmp_path: Path) -> None:
    """A runner SIGKILLed right after journaling: a new Journal sees every entry and status."""
    directory = tmp_path / "journal"
    result = run_python(
        f"""
        import os, signal
        from pathlib import Path
        from runner.journal import Journal, JournalEntry
        j = Journal(Path({str(directory)!r}))
        for i in range(5):
            j.record_claim(JournalEntry(f"exec{{i}}", f"job{{i}}", "noop", "sync", None, 100.0 + i,
                                        os.getpid(), "initializing", f"sp{{i}}"))
        j.update_status("exec3", "in-progress")
        j.close("exec4")
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    assert result.returncode == -signal.SIGKILL, result.stderr
    entries = Journal(directory).entries()
    assert [e.execution_id for e in entries] == ["exec0", "exec1", "exec2", "exec3"]
    assert [e.last_status for e in entries] == ["initializing"] * 3 + ["in-progress"]
    assert all(e.pid > 0 and e.pid != os.getpid() for e in entries)


def test_update_status_and_close(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.record_claim(entry("e1"))
    journal.update_status("e1", "in-progress")
    journal.update_status("e1", "cleaning-up", durable=True)
    got = journal.get("e1")
    assert got is not None
    assert got.last_status == "cleaning-up"
    journal.close("e1")
    assert journal.entries() == []
    journal.close("e1")  # twice is fine
    assert journal.get("e1") is None


def test_update_after_close_does_not_resurrect(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.record_claim(entry("e1"))
    journal.close("e1")
    with capture_logs() as logs:
        journal.update_status("e1", "failed")
    assert journal.entries() == []
    assert any("not in the journal" in log["event"] for log in logs)


def test_concurrent_writers_for_different_executions(tmp_path: Path) -> None:
    journal = Journal(tmp_path)

    def work(n: int) -> None:
        eid = f"e{n}"
        journal.record_claim(entry(eid, claimed_at=float(n)))
        for status in ("in-progress", "cleaning-up", "finished"):
            journal.update_status(eid, status)
        if n % 2:
            journal.close(eid)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    entries = journal.entries()
    assert [e.execution_id for e in entries] == [f"e{n}" for n in range(0, 20, 2)]
    assert {e.last_status for e in entries} == {"finished"}
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"\xff\xfe garbage",
        b"[1, 2]",
        b'{"execution_id": "bad"}',
        json.dumps({**entry("bad").__dict__, "pid": "not-a-number"}).encode(),
        json.dumps({**entry("other").__dict__}).encode(),  # name does not match its content
        b"",
    ],
)
def test_corrupt_file_is_moved_aside(tmp_path: Path, content: bytes) -> None:
    journal = Journal(tmp_path)
    journal.record_claim(entry("good"))
    (tmp_path / "bad.json").write_bytes(content)
    with capture_logs() as logs:
        entries = journal.entries()
    assert [e.execution_id for e in entries] == ["good"]
    assert not (tmp_path / "bad.json").exists()
    moved = list((tmp_path / "corrupt").iterdir())
    assert len(moved) == 1
    assert moved[0].name.startswith("bad.json.")
    assert moved[0].read_bytes() == content
    assert [log["event"] for log in logs] == ["journal: corrupt entry moved aside"]
    assert Journal(tmp_path).entries() == entries  # and it stays quiet afterwards


def test_interrupted_write_is_recovered_or_dropped(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    dead_pid = 999999
    # complete tmp file, final missing: the writer died between fsync and rename
    (tmp_path / f".e1.{dead_pid}.abcd1234.tmp").write_bytes(entry("e1").to_json())
    # half-written tmp file: dropped
    (tmp_path / f".e2.{dead_pid}.abcd1234.tmp").write_bytes(entry("e2").to_json()[:20])
    # an older complete tmp next to a final file: the final one wins
    journal.record_claim(entry("e3", last_status="in-progress"))
    (tmp_path / f".e3.{dead_pid}.abcd1234.tmp").write_bytes(entry("e3").to_json())
    # our own in-flight tmp file is left alone
    mine = tmp_path / f".e4.{os.getpid()}.abcd1234.tmp"
    mine.write_bytes(b"{")
    entries = journal.entries()
    assert [(e.execution_id, e.last_status) for e in entries] == [
        ("e1", "initializing"),
        ("e3", "in-progress"),
    ]
    assert sorted(p.name for p in tmp_path.glob(".*.tmp")) == [mine.name]


def test_invalid_execution_id_refused(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    with pytest.raises(InvalidExecutionId):
        journal.record_claim(entry("../escape"))
    assert list(tmp_path.iterdir()) == []


def test_async_variants(tmp_path: Path) -> None:
    journal = Journal(tmp_path)

    async def main() -> None:
        await journal.record_claim_async(entry("e1"))
        await journal.update_status_async("e1", "in-progress")
        got = journal.get("e1")
        assert got is not None
        assert got.last_status == "in-progress"
        await journal.close_async("e1")

    anyio.run(main)
    assert journal.entries() == []


# --------------------------------------------------------------------------- state-dir lock


def test_second_lock_in_process_is_refused(tmp_path: Path) -> None:
    first = StateDirLock(tmp_path / "state")
    first.acquire()
    assert first.held
    with pytest.raises(StateDirLocked, match=f"locked by pid {os.getpid()}"):
        StateDirLock(tmp_path / "state").acquire()
    first.release()
    with StateDirLock(tmp_path / "state") as second:
        assert second.held
    assert not second.held


def test_lock_held_by_other_process_then_freed_by_kill_9(tmp_path: Path) -> None:
    state = tmp_path / "state"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from runner.journal import StateDirLock;"
            f"StateDirLock(Path({str(state)!r})).acquire(); print('held', flush=True); time.sleep(600)",
        ],
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(StateDirLocked, match=f"locked by pid {holder.pid} "):
            StateDirLock(state).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        if holder.stdout is not None:
            holder.stdout.close()
    lock = StateDirLock(state)
    lock.acquire()  # the kernel dropped the dead holder's lock
    assert lock.held
    assert (state / "runner.lock").read_text() == f"{os.getpid()}\n"
    lock.release()
    assert not lock.held
