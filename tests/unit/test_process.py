"""Child processes: environment, streaming, failure reports, and killing whole process trees.

Real processes (sh, sleep, seq, python) run here; the job log is ``runner.testing``'s recording log.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import anyio
import psutil
import pytest

from runner.process import (
    MAX_LINE_BYTES,
    STDERR_TAIL_LINES,
    JobProcessRunner,
    _LineSplitter,
    default_line_handler,
    group_members,
    minimal_env,
)
from runner.sdk import ChildProcessFailed, HandlerError, JobLog
from runner.testing import RecordingLog, RecordingSecrets

pytestmark = [pytest.mark.unit, pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def log() -> RecordingLog:
    return RecordingLog()


@pytest.fixture
def runner(log: RecordingLog, tmp_path: Path) -> JobProcessRunner:
    return JobProcessRunner(log, workspace=tmp_path, default_grace=5.0, drain_timeout=0.3)


def gone(pid: int) -> bool:
    """Dead: no such process, or a zombie waiting for init (not our child any more)."""
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


async def wait_for_file(path: Path, timeout: float = 5.0) -> str:
    with anyio.fail_after(timeout):
        while not path.exists() or not path.read_text().strip():
            await anyio.sleep(0.01)
    return path.read_text()


async def wait_for_group(
    runner: JobProcessRunner, size: int, *, names: set[str] | None = None, timeout: float = 5.0
) -> list[int]:
    """Wait until the (single) live child's process group has ``size`` live members.

    ``names``: also wait until those programs run (exec'd, not merely forked: a signal landing
    between fork and exec hits the shell's copy, not the program).
    """
    with anyio.fail_after(timeout):
        while True:
            pids = runner.live_pids
            if pids:
                members = group_members(next(iter(pids)))
                if len(members) >= size and (names is None or names <= set(program_names(members))):
                    return members
            await anyio.sleep(0.01)


def program_names(pids: list[int]) -> list[str]:
    names = []
    for pid in pids:
        try:
            names.append(psutil.Process(pid).name())
        except psutil.NoSuchProcess:
            continue
    return names


# --------------------------------------------------------------------------- environment


def test_minimal_env_keeps_only_base_keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RUNNER_API_TOKEN", "runner-token-value")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    env = minimal_env(
        {"TF_IN_AUTOMATION": "1", "RUNNER_API_TOKEN": "smuggled"}, home=tmp_path / "h", tmpdir=tmp_path / "t"
    )
    assert "RUNNER_API_TOKEN" not in env
    assert "AWS_SECRET_ACCESS_KEY" not in env
    assert env["HTTPS_PROXY"] == "http://proxy.invalid:3128"
    assert env["TF_IN_AUTOMATION"] == "1"
    assert env["HOME"] == str(tmp_path / "h")
    assert env["TMPDIR"] == str(tmp_path / "t")
    assert env["PATH"]


async def test_child_environment_excludes_runner_token(
    runner: JobProcessRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNNER_API_TOKEN", "runner-token-value")
    monkeypatch.setenv("SOME_RUNNER_SETTING", "x")
    result = await runner.run(["env"], env={"JOB_VAR": "job-value"}, capture_stdout=True)
    assert result.stdout is not None
    child_env = dict(line.split("=", 1) for line in result.stdout.decode().splitlines() if "=" in line)
    assert "RUNNER_API_TOKEN" not in child_env
    assert "runner-token-value" not in result.stdout.decode()
    assert "SOME_RUNNER_SETTING" not in child_env
    assert child_env["JOB_VAR"] == "job-value"
    assert child_env["HOME"] == str(tmp_path / ".home")
    assert child_env["TMPDIR"] == str(tmp_path / "tmp")
    assert (tmp_path / ".home").is_dir()
    assert (tmp_path / "tmp").is_dir()


async def test_cwd_defaults_to_workspace(runner: JobProcessRunner, tmp_path: Path) -> None:
    result = await runner.run(["pwd"], capture_stdout=True)
    assert result.stdout == f"{tmp_path}\n".encode()
    sub = tmp_path / "sub"
    sub.mkdir()
    result = await runner.run(["pwd"], cwd=sub, capture_stdout=True)
    assert result.stdout == f"{sub}\n".encode()


# --------------------------------------------------------------------------- output


async def test_hundred_thousand_lines_in_order(runner: JobProcessRunner, log: RecordingLog) -> None:
    started = time.perf_counter()
    result = await runner.run(["seq", "1", "100000"])
    elapsed = time.perf_counter() - started
    assert result.returncode == 0
    assert log.lines("stdout") == [str(i) for i in range(1, 100001)]
    assert elapsed < 15, f"100k lines took {elapsed:.1f}s"


async def test_stdout_is_info_and_stderr_is_warning(runner: JobProcessRunner, log: RecordingLog) -> None:
    await runner.run(["sh", "-c", "echo out; echo err >&2"])
    assert ("info", "out", {"stream": "stdout"}) in log.records
    assert ("warning", "err", {"stream": "stderr"}) in log.records


def test_default_line_handler_levels() -> None:
    log = RecordingLog()
    default_line_handler(log, "stdout", "a")
    default_line_handler(log, "stderr", "b")
    assert log.records == [("info", "a", {"stream": "stdout"}), ("warning", "b", {"stream": "stderr"})]


async def test_crlf_and_invalid_utf8(runner: JobProcessRunner, log: RecordingLog) -> None:
    await runner.run(
        [sys.executable, "-c", "import sys; sys.stdout.buffer.write(b'a\\r\\nb\\xff\\nno-newline')"]
    )
    assert log.lines("stdout") == ["a", "b\ufffd", "no-newline"]


async def test_long_line_is_split(runner: JobProcessRunner, log: RecordingLog) -> None:
    size = MAX_LINE_BYTES * 3 + 10
    await runner.run([sys.executable, "-c", f"print('x' * {size})"])
    pieces = log.lines("stdout")
    assert [len(p) for p in pieces] == [MAX_LINE_BYTES] * 3 + [10]
    assert "".join(pieces) == "x" * size


def test_splitter_does_not_cut_multibyte_characters() -> None:
    splitter = _LineSplitter(max_line=10)
    lines = splitter.feed("aéééééé".encode())  # 1 + 6*2 = 13 bytes, no newline
    lines += splitter.feed(b"\n")
    assert all("\ufffd" not in line for line in lines)
    assert "".join(lines) == "aéééééé"
    assert all(len(line.encode()) <= 10 for line in lines)


def test_splitter_splits_complete_long_lines_and_keeps_order() -> None:
    splitter = _LineSplitter(max_line=4)
    lines = splitter.feed(b"abcdefghij\nxy") + splitter.feed(b"z\nlong-tail-") + splitter.flush()
    assert lines == ["abcd", "efgh", "ij", "xyz", "long", "-tai", "l-"]


async def test_stderr_tail_keeps_last_lines(runner: JobProcessRunner) -> None:
    script = "for i in $(seq 1 120); do echo e$i >&2; done; exit 3"
    result = await runner.run(["sh", "-c", script], check=False)
    assert result.returncode == 3
    assert result.stderr_tail == tuple(f"e{i}" for i in range(121 - STDERR_TAIL_LINES, 121))


async def test_nonzero_exit_raises_child_process_failed(runner: JobProcessRunner) -> None:
    with pytest.raises(ChildProcessFailed) as info:
        await runner.run(["sh", "-c", "echo first >&2; echo 'boom: it broke' >&2; exit 7"])
    assert info.value.exit_code == 7
    assert info.value.stderr_tail == ["first", "boom: it broke"]
    assert "sh exited with code 7: boom: it broke" in str(info.value)


async def test_stderr_tail_is_masked(log: RecordingLog, tmp_path: Path) -> None:
    runner = JobProcessRunner(log, workspace=tmp_path, secrets=RecordingSecrets("hunter2"))
    with pytest.raises(ChildProcessFailed) as info:
        await runner.run(["sh", "-c", "echo 'bad password hunter2' >&2; exit 1"])
    assert info.value.stderr_tail == ["bad password ***"]


async def test_capture_stdout_is_returned_not_logged(runner: JobProcessRunner, log: RecordingLog) -> None:
    result = await runner.run(["sh", "-c", "printf '{\"a\": 1}\\n'; echo note >&2"], capture_stdout=True)
    assert result.stdout == b'{"a": 1}\n'
    assert log.lines("stdout") == []
    assert log.lines("stderr") == ["note"]


async def test_capture_large_stdout(runner: JobProcessRunner) -> None:
    size = 8 * 1024 * 1024
    result = await runner.run(
        [sys.executable, "-c", f"import sys; sys.stdout.buffer.write(b'y' * {size})"], capture_stdout=True
    )
    assert result.stdout is not None
    assert len(result.stdout) == size


async def test_stdin_is_fed(runner: JobProcessRunner) -> None:
    result = await runner.run(["cat"], stdin=b"hello\nworld\n", capture_stdout=True)
    assert result.stdout == b"hello\nworld\n"


async def test_stdin_not_read_by_child(runner: JobProcessRunner) -> None:
    result = await runner.run(["true"], stdin=b"z" * (1024 * 1024))
    assert result.returncode == 0


async def test_command_is_logged_masked(tmp_path: Path, log: RecordingLog) -> None:
    runner = JobProcessRunner(log, workspace=tmp_path, secrets=RecordingSecrets("s3cr3t-value"))
    await runner.run(["true", "--password", "s3cr3t-value"])
    messages = [m for _lvl, m, _a in log.records]
    assert "$ true --password ***" in messages
    assert not any("s3cr3t-value" in m for m in messages)


async def test_missing_executable_is_a_clear_error(runner: JobProcessRunner) -> None:
    with pytest.raises(HandlerError, match="cannot start /nonexistent/tool"):
        await runner.run(["/nonexistent/tool", "arg"])
    assert runner.live_pids == frozenset()


async def test_failing_line_handler_does_not_stall_output(
    runner: JobProcessRunner, log: RecordingLog
) -> None:
    seen: list[str] = []

    def handler(log: JobLog, stream: str, line: str) -> None:
        seen.append(line)
        raise RuntimeError("handler bug")

    result = await runner.run(["seq", "1", "5000"], line_handler=handler)
    assert result.returncode == 0
    assert len(seen) == 5000
    errors = [m for lvl, m, _a in log.records if lvl == "error"]
    assert errors == ["line handler failed: RuntimeError: handler bug"]


# --------------------------------------------------------------------------- stopping


async def test_cancel_kills_whole_process_tree(runner: JobProcessRunner) -> None:
    runner._default_grace = 0.5
    pids: list[int] = []
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(runner.run, ["sh", "-c", "sleep 600 & sleep 600"])
            pids = await wait_for_group(runner, 3, names={"sh", "sleep"})  # sh and both sleeps
            tg.cancel_scope.cancel()
    assert len(pids) == 3
    assert all(gone(pid) for pid in pids), [(p, gone(p)) for p in pids]
    assert runner.live_pids == frozenset()


async def test_cancel_sends_sigint_first(runner: JobProcessRunner, tmp_path: Path) -> None:
    marker, ready = tmp_path / "marker", tmp_path / "ready"
    script = f"trap 'sleep 0.3; echo interrupted > {marker}; exit 0' INT; echo ok > {ready}; sleep 600"
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(runner.run, ["sh", "-c", script])
            await wait_for_file(ready)
            pids = await wait_for_group(runner, 2, names={"sh", "sleep"})
            cancelled_at = time.perf_counter()
            tg.cancel_scope.cancel()
    took = time.perf_counter() - cancelled_at
    assert marker.read_text() == "interrupted\n"
    assert took < 4.0, f"a child that exits on SIGINT should not wait for the {5.0}s grace (took {took:.1f}s)"
    assert all(gone(pid) for pid in pids)


async def test_child_ignoring_sigint_is_killed_after_grace(runner: JobProcessRunner, tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    script = f"trap '' INT; echo ok > {ready}; sleep 600"
    grace = 0.5
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: runner.run(["sh", "-c", script], grace_period=grace))
            await wait_for_file(ready)
            pids = await wait_for_group(runner, 2, names={"sh", "sleep"})
            cancelled_at = time.perf_counter()
            tg.cancel_scope.cancel()
    took = time.perf_counter() - cancelled_at
    assert grace <= took < grace + 3.0
    assert all(gone(pid) for pid in pids)


async def test_sigint_is_sent_only_once(runner: JobProcessRunner, tmp_path: Path) -> None:
    """terraform abandons its state on a second SIGINT: terminate_all then a cancel must send one."""
    marker, ready = tmp_path / "ints", tmp_path / "ready"
    script = (
        "import signal, time, pathlib\n"
        f"m = pathlib.Path({str(marker)!r})\n"
        "signal.signal(signal.SIGINT, lambda *a: m.open('a').write('int\\n'))\n"
        f"pathlib.Path({str(ready)!r}).write_text('ok')\n"
        "while True: time.sleep(0.05)\n"
    )
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: runner.run([sys.executable, "-c", script], grace_period=0.6, check=False))
            await wait_for_file(ready)
            pids = await wait_for_group(runner, 1)
            tg.start_soon(runner.terminate_all, 0.6)
            await anyio.sleep(0.2)
            tg.cancel_scope.cancel()
    assert marker.read_text() == "int\n"
    assert all(gone(pid) for pid in pids)


async def test_grandchild_holding_pipes_does_not_hang(runner: JobProcessRunner) -> None:
    started = time.perf_counter()
    result = await runner.run(["sh", "-c", "sleep 600 & echo $!"], capture_stdout=True)
    took = time.perf_counter() - started
    assert result.returncode == 0
    assert result.stdout is not None
    assert gone(int(result.stdout.split()[0]))
    assert took < 3.0


async def test_background_process_left_in_group_is_killed(runner: JobProcessRunner) -> None:
    result = await runner.run(["sh", "-c", "sleep 600 >/dev/null 2>&1 & echo $!"], capture_stdout=True)
    assert result.stdout is not None
    assert gone(int(result.stdout.split()[0]))


async def test_terminate_all_interrupts_every_child(runner: JobProcessRunner) -> None:
    results: list[int] = []

    async def run_one() -> None:
        result = await runner.run(["sleep", "600"], check=False)
        results.append(result.returncode)

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_one)
            tg.start_soon(run_one)
            with anyio.fail_after(5):
                while len(runner.live_pids) < 2:
                    await anyio.sleep(0.01)
            pids = list(runner.live_pids)
            await runner.terminate_all(grace=2.0)
            assert runner.live_pids == frozenset()
    assert results == [-signal.SIGINT, -signal.SIGINT]
    assert all(gone(pid) for pid in pids)


async def test_terminate_all_kills_after_grace(runner: JobProcessRunner, tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    failures: list[ChildProcessFailed] = []

    async def run_one() -> None:
        try:
            await runner.run(["sh", "-c", f"trap '' INT; echo ok > {ready}; sleep 600"])
        except ChildProcessFailed as exc:
            failures.append(exc)

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_one)
            await wait_for_file(ready)
            started = time.perf_counter()
            await runner.terminate_all(grace=0.3)
            took = time.perf_counter() - started
    assert [f.exit_code for f in failures] == [-signal.SIGKILL]
    assert 0.3 <= took < 3.0
    assert runner.live_pids == frozenset()


async def test_terminate_all_catches_a_child_still_starting(runner: JobProcessRunner) -> None:
    results: list[int] = []

    async def run_one() -> None:
        results.append((await runner.run(["sleep", "600"], check=False)).returncode)

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_one)
            await anyio.sleep(0)  # run() has begun starting the child, which is not registered yet
            await runner.terminate_all(grace=2.0)
            assert runner.live_pids == frozenset()
    assert results == [-signal.SIGINT]


async def test_terminate_all_with_nothing_running(runner: JobProcessRunner) -> None:
    await runner.terminate_all(grace=0.1)
    assert runner.live_pids == frozenset()


def test_runner_module_never_reads_token_into_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNNER_API_TOKEN", "tok")
    assert "tok" not in minimal_env().values()
    assert os.environ["RUNNER_API_TOKEN"] == "tok"  # the runner's own env is left alone
