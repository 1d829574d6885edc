"""Child processes of a job: own process group, explicit environment, streamed output, clean kill.

Why this module exists: the reference runner starts every child from the runner's own
environment (so every tool sees ``RUNNER_API_TOKEN``), lets a cancelled job's process tree
outlive it, and on shutdown kills terraform outright. Here each child

* is a session and process-group leader (``start_new_session``), so one signal reaches its whole
  tree (terraform and its providers, ``sh -c`` and its background jobs);
* gets only ``minimal_env`` plus what the handler passes: never the runner's token;
* has its stdout/stderr read concurrently, line by line, into the job log (long lines are split,
  bytes decoded leniently), keeping the last lines of stderr for the failure report;
* on cancellation gets SIGINT **once** (a second SIGINT makes terraform abandon its state), a
  grace period, then SIGKILL for the whole group; ``run`` re-raises the cancellation only once
  the group is gone and the leader is reaped.

A child that exits while descendants still hold its pipes does not hang the job: after a short
drain the group is killed. Descendants left in the group after the leader exits are killed too,
so a job step never leaves processes behind. Descendants that leave the group on purpose
(``setsid``, a shell with job control) are out of reach; a container with a reaping init
(tini, ``docker run --init``) keeps their zombies from piling up.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.abc
import structlog

from runner.api.models import ErrorCode
from runner.handler import (
    ChildProcessFailed,
    HandlerError,
    JobLog,
    LineHandler,
    ProcessResult,
    SecretRegistry,
)

__all__ = [
    "BASE_ENV_KEYS",
    "DEFAULT_PATH",
    "MAX_LINE_BYTES",
    "STDERR_TAIL_LINES",
    "JobProcessRunner",
    "default_line_handler",
    "group_members",
    "minimal_env",
]

_log = structlog.get_logger("runner.process")

#: The only variables a child inherits from the runner's environment (when they are set there).
BASE_ENV_KEYS = (
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "TZ",
    "TMPDIR",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
)
#: Variables no child ever gets, whoever asks: the runner's own credential.
FORBIDDEN_ENV_KEYS = frozenset({"RUNNER_API_TOKEN"})
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: A line longer than this is delivered in pieces of this size (a minified JSON blob, a progress
#: bar without newlines): bounded memory, and one log record stays a sane size.
MAX_LINE_BYTES = 64 * 1024
STDERR_TAIL_LINES = 50
_READ_CHUNK = 64 * 1024
_POLL_INTERVAL = 0.02


def minimal_env(
    extra: Mapping[str, str] | None = None,
    *,
    home: Path | None = None,
    tmpdir: Path | None = None,
) -> dict[str, str]:
    """The environment of a child: a few harmless basics from the runner's env, then ``extra``.

    ``home`` and ``tmpdir`` point HOME/TMPDIR into the job's workspace so tools (terraform, helm,
    docker) do not write caches and credentials into the runner's home. ``RUNNER_API_TOKEN`` is
    never passed, not even when ``extra`` holds it.
    """
    env = {key: os.environ[key] for key in BASE_ENV_KEYS if key in os.environ}
    env.setdefault("PATH", DEFAULT_PATH)
    env.setdefault("LANG", "C.UTF-8")
    if home is not None:
        env["HOME"] = str(home)
    if tmpdir is not None:
        env["TMPDIR"] = str(tmpdir)
    for key, value in (extra or {}).items():
        if key in FORBIDDEN_ENV_KEYS:
            _log.warning("refusing to pass a forbidden variable to a child", variable=key)
            continue
        env[key] = str(value)
    return env


def default_line_handler(log: JobLog, stream: str, line: str) -> None:
    """stdout becomes an info record, stderr a warning; both carry ``stream``.

    stderr is not "error": terraform, git and docker print progress there, and the exit code, not
    the stream, says whether a step failed.
    """
    if stream == "stderr":
        log.warning(line, stream=stream)
    else:
        log.info(line, stream=stream)


# --------------------------------------------------------------------------- process groups


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) pids in process group ``pgid``; Linux /proc, else a signal-0 probe."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return []
    except PermissionError:
        pass
    proc = Path("/proc")
    if not proc.is_dir():  # pragma: no cover - non-Linux fallback
        return [pgid]
    members: list[int] = []
    for entry in os.scandir(proc):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) >= 3 and int(fields[2]) == pgid and fields[0] != b"Z":
            members.append(int(entry.name))
    return members


def _signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Signal the whole group; False when nothing is left in it."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - a pid reused by someone else's process
        _log.warning("no permission to signal process group", pgid=pgid, signal=sig.name)
        return False
    return True


async def _wait_group_gone(pgid: int) -> None:
    # Polling is the only way: the kernel gives no event for "a process group became empty".
    while group_members(pgid):  # noqa: ASYNC110
        await anyio.sleep(_POLL_INTERVAL)


# --------------------------------------------------------------------------- output


class _LineSplitter:
    """Bytes in, complete text lines out; lines over MAX_LINE_BYTES come out in pieces."""

    def __init__(self, max_line: int = MAX_LINE_BYTES) -> None:
        self._pending = b""
        self._max = max_line

    def feed(self, chunk: bytes) -> list[str]:
        data = self._pending + chunk if self._pending else chunk
        parts = data.split(b"\n")
        rest = parts.pop()
        lines: list[str] = []
        for part in parts:
            if len(part) > self._max:
                lines.extend(self._pieces(part))
            else:
                lines.append(_decode(part))
        while len(rest) > self._max:
            cut = _utf8_boundary(rest, self._max)
            lines.append(_decode(rest[:cut]))
            rest = rest[cut:]
        self._pending = rest
        return lines

    def _pieces(self, line: bytes) -> list[str]:
        pieces: list[str] = []
        while len(line) > self._max:
            cut = _utf8_boundary(line, self._max)
            pieces.append(_decode(line[:cut]))
            line = line[cut:]
        pieces.append(_decode(line))
        return pieces

    def flush(self) -> list[str]:
        rest, self._pending = self._pending, b""
        return [_decode(rest)] if rest else []


def _decode(raw: bytes) -> str:
    return raw.rstrip(b"\r").decode("utf-8", errors="replace")


def _utf8_boundary(data: bytes, limit: int) -> int:
    """The largest cut <= limit that does not split a UTF-8 sequence (for valid UTF-8)."""
    cut = limit
    for _ in range(3):
        if cut > 0 and (data[cut] & 0xC0) == 0x80:
            cut -= 1
        else:
            break
    return cut if cut > 0 else limit


@dataclass
class _Child:
    """Book-keeping for one running child, shared by ``run`` and ``terminate_all``."""

    process: anyio.abc.Process
    argv0: str
    grace: float
    done: anyio.Event = field(default_factory=anyio.Event)
    #: ``anyio.current_time()`` when SIGINT was sent; SIGINT is never sent twice.
    interrupted_at: float | None = None

    @property
    def pgid(self) -> int:
        return self.process.pid

    def interrupt(self) -> None:
        if self.interrupted_at is None:
            self.interrupted_at = anyio.current_time()
            if _signal_group(self.pgid, signal.SIGINT):
                _log.debug("sent SIGINT to process group", pgid=self.pgid, argv0=self.argv0)

    def kill(self) -> bool:
        sent = _signal_group(self.pgid, signal.SIGKILL)
        if sent:
            _log.debug("sent SIGKILL to process group", pgid=self.pgid, argv0=self.argv0)
        return sent


@dataclass
class _Output:
    log: JobLog
    line_handler: LineHandler
    capture_stdout: bool
    stdout_chunks: list[bytes] = field(default_factory=list)
    stderr_tail: deque[str] = field(default_factory=lambda: deque(maxlen=STDERR_TAIL_LINES))
    handler_failed: bool = False

    def emit(self, stream: str, lines: list[str]) -> None:
        if stream == "stderr":
            self.stderr_tail.extend(lines)
        handler, log = self.line_handler, self.log
        for line in lines:
            try:
                handler(log, stream, line)
            except Exception as exc:
                # A broken line handler must not stop the pipe from draining (the child would
                # block on a full pipe); it is reported once and output keeps flowing.
                if not self.handler_failed:
                    self.handler_failed = True
                    log.error(f"line handler failed: {type(exc).__name__}: {exc}", stream=stream)


# --------------------------------------------------------------------------- the runner


class JobProcessRunner:
    """Runs a job's child processes (``runner.handler.ProcessRunner``) and can stop them all."""

    def __init__(
        self,
        log: JobLog,
        *,
        workspace: Path,
        default_grace: float = 10.0,
        secrets: SecretRegistry | None = None,
        drain_timeout: float = 2.0,
    ) -> None:
        self._log = log
        self._workspace = workspace
        self._default_grace = default_grace
        self._secrets = secrets
        self._drain_timeout = drain_timeout
        self._children: dict[int, _Child] = {}
        #: Children being started (``open_process`` in flight) and ``terminate_all`` calls running:
        #: a child that appears while its job is being stopped is stopped too.
        self._starting = 0
        self._terminating = 0
        self._changed: anyio.Event | None = None

    @property
    def live_pids(self) -> frozenset[int]:
        """Pids of the children (group leaders) started by ``run`` that are not finished yet."""
        return frozenset(self._children)

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def _wait_change(self, timeout: float) -> None:
        if self._changed is None:
            self._changed = anyio.Event()
        with anyio.move_on_after(timeout):
            await self._changed.wait()

    def _mask(self, text: str) -> str:
        return self._secrets.mask(text) if self._secrets is not None else text

    def _child_env(self, env: Mapping[str, str] | None) -> dict[str, str]:
        home, tmp = self._workspace / ".home", self._workspace / "tmp"
        for directory in (home, tmp):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        return minimal_env(env, home=home, tmpdir=tmp)

    async def run(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        stdin: bytes | None = None,
        capture_stdout: bool = False,
        check: bool = True,
        line_handler: LineHandler | None = None,
        grace_period: float | None = None,
    ) -> ProcessResult:
        args = tuple(os.fspath(arg) for arg in argv)
        if not args:
            raise ValueError("argv must not be empty")
        grace = self._default_grace if grace_period is None else grace_period
        child_env = self._child_env(env)
        shown = self._mask(shlex.join(args))
        self._log.info(f"$ {shown}", stream="runner")
        started = anyio.current_time()
        # Shielded: a cancellation landing inside process creation must not leave an unowned child.
        self._starting += 1
        with anyio.CancelScope(shield=True):
            try:
                process = await anyio.open_process(
                    list(args),
                    stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    cwd=cwd or self._workspace,
                    env=child_env,
                    start_new_session=True,
                )
            except OSError as exc:
                reason = exc.strerror or str(exc)
                self._log.error(f"cannot start {args[0]}: {reason}", stream="runner")
                raise HandlerError(
                    f"cannot start {args[0]}: {reason}", code=ErrorCode.CHILD_PROCESS, argv0=args[0]
                ) from None
            finally:
                self._starting -= 1
        child = _Child(process=process, argv0=args[0], grace=grace)
        self._children[process.pid] = child
        self._notify()
        if self._terminating:
            child.interrupt()
        _log.debug("child started", pid=process.pid, argv0=args[0])
        output = _Output(self._log, line_handler or default_line_handler, capture_stdout)
        try:
            returncode = await self._supervise(child, output, stdin)
        finally:
            with anyio.CancelScope(shield=True):
                await process.aclose()
            del self._children[process.pid]
            child.done.set()
            self._notify()
        elapsed = anyio.current_time() - started
        tail = tuple(self._mask(line) for line in output.stderr_tail)
        self._log.info(
            f"{args[0]} exited with code {returncode} after {elapsed:.1f}s",
            stream="runner",
            exit_code=returncode,
        )
        if check and returncode != 0:
            raise ChildProcessFailed(args[0], returncode, tail)
        stdout = b"".join(output.stdout_chunks) if capture_stdout else None
        return ProcessResult(argv=args, returncode=returncode, stdout=stdout, stderr_tail=tail)

    async def _supervise(self, child: _Child, output: _Output, stdin: bytes | None) -> int:
        """Wait for the child while its pipes drain; on cancellation stop the group, then re-raise."""
        process = child.process
        # The readers are shielded so that output printed during the grace period (terraform's
        # "Interrupt received...") still reaches the log; ``_finish_readers`` ends them.
        readers = anyio.CancelScope(shield=True)
        readers_done = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._read_all, process, output, readers, readers_done)
            if stdin is not None and process.stdin is not None:
                tg.start_soon(_feed_stdin, process.stdin, stdin)
            try:
                returncode = await process.wait()
                await self._finish_readers(child, readers, readers_done)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await self._stop(child)
                    await self._finish_readers(child, readers, readers_done)
                raise
            tg.cancel_scope.cancel()  # a stdin feeder still blocked on a child that stopped reading
        return returncode

    async def _read_all(
        self,
        process: anyio.abc.Process,
        output: _Output,
        scope: anyio.CancelScope,
        done: anyio.Event,
    ) -> None:
        try:
            with scope:
                async with anyio.create_task_group() as tg:
                    if process.stdout is not None:
                        tg.start_soon(_pump, process.stdout, "stdout", output)
                    if process.stderr is not None:
                        tg.start_soon(_pump, process.stderr, "stderr", output)
        finally:
            done.set()

    async def _finish_readers(self, child: _Child, readers: anyio.CancelScope, done: anyio.Event) -> None:
        """After the leader exited: let the pipes drain, kill descendants holding them, clean up."""
        with anyio.move_on_after(self._drain_timeout):
            await done.wait()
        if not done.is_set():
            _log.info("child exited but its pipes are still open; killing its group", pgid=child.pgid)
            child.kill()
            with anyio.move_on_after(self._drain_timeout):
                await done.wait()
            readers.cancel()  # a descendant outside the group may still hold the pipe
            await done.wait()
        if group_members(child.pgid):
            _log.info("killing processes left in the group of an exited child", pgid=child.pgid)
            child.kill()
            with anyio.move_on_after(self._drain_timeout):
                await _wait_group_gone(child.pgid)

    async def _stop(self, child: _Child) -> None:
        """SIGINT once, wait for the group within the grace, SIGKILL, reap. Call shielded."""
        child.interrupt()
        assert child.interrupted_at is not None
        remaining = child.interrupted_at + child.grace - anyio.current_time()
        with anyio.move_on_after(max(0.0, remaining)):
            await child.process.wait()
            await _wait_group_gone(child.pgid)
        child.kill()
        await child.process.wait()
        with anyio.move_on_after(self._drain_timeout):
            await _wait_group_gone(child.pgid)

    async def terminate_all(self, grace: float | None = None) -> None:
        """SIGINT every live group, wait up to ``grace``, SIGKILL the rest; return when none is left.

        The children's own ``run`` calls go on (and raise ``ChildProcessFailed`` for the signal exit
        when ``check`` is set); this waits until each of them has reaped its child. A child whose
        start was in flight is stopped the same way once it appears.
        """
        wait = self._default_grace if grace is None else grace
        self._terminating += 1
        try:
            with anyio.CancelScope(shield=True):
                deadline = anyio.current_time() + wait
                while self._children or self._starting:
                    for child in list(self._children.values()):
                        child.interrupt()
                    remaining = deadline - anyio.current_time()
                    if remaining <= 0:
                        break
                    await self._wait_change(remaining)
                deadline = anyio.current_time() + self._drain_timeout * 2 + 5.0
                while self._children or self._starting:
                    for child in list(self._children.values()):
                        child.kill()
                    remaining = deadline - anyio.current_time()
                    if remaining <= 0:  # pragma: no cover - a run() whose task makes no progress
                        _log.warning("children not reaped after SIGKILL", pids=sorted(self._children))
                        break
                    await self._wait_change(min(remaining, 0.5))
        finally:
            self._terminating -= 1


async def _pump(stream: anyio.abc.ByteReceiveStream, name: str, output: _Output) -> None:
    splitter = _LineSplitter()
    capture = name == "stdout" and output.capture_stdout
    try:
        async for chunk in stream:
            if capture:
                output.stdout_chunks.append(chunk)
            else:
                output.emit(name, splitter.feed(chunk))
    except (anyio.ClosedResourceError, anyio.BrokenResourceError):
        pass
    if not capture:
        output.emit(name, splitter.flush())


async def _feed_stdin(stream: anyio.abc.ByteSendStream, data: bytes) -> None:
    try:
        if data:
            await stream.send(data)
        await stream.aclose()
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, BrokenPipeError, ConnectionResetError):
        pass
