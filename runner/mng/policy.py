"""The supervisor's decisions as plain functions: what an exit means, how long to wait before the
next start, when restarts are a crash loop, which version an update targets, and whether a new
version is kept or rolled back. Side effects live in ``supervisor``; these are unit-tested alone.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass

from runner.backoff import backoff_delay

#: The runner's "start me again" exit code (``runner.sdk.EXIT_RESTART``: ``update-version``).
EXIT_RESTART = 75

#: A version is a pip version and a docker tag at once: letters, digits, ``_ . - +``, and no
#: leading punctuation (so it can never read as an option or a path).
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$")


class ExitKind(enum.StrEnum):
    #: Exit 0: asked to stop (a ``shut-down`` job, SIGTERM): held until a management job restarts it.
    STOPPED = "stopped"
    #: Exit 75: restart now, on the desired version (``update-version``); not a crash.
    RESTART = "restart"
    #: Anything else, a signal, or an exit whose code nobody could read (an adopted process).
    CRASH = "crash"


def classify_exit(code: int | None) -> ExitKind:
    if code == 0:
        return ExitKind.STOPPED
    if code == EXIT_RESTART:
        return ExitKind.RESTART
    return ExitKind.CRASH


def describe_exit(code: int | None) -> str:
    """``exit code 3``, ``killed by SIGKILL`` or ``exit code unknown`` for a log line."""
    if code is None:
        return "exit code unknown (not our child: adopted after a restart of mng)"
    if code < 0:
        import signal

        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


@dataclass(frozen=True)
class RestartPolicy:
    """Backoff between crash restarts, and the crash-loop limit (as systemd's StartLimitBurst)."""

    base: float = 1.0
    cap: float = 60.0
    #: This many crashes within ``window`` seconds is a crash loop: restarts stop, and it is reported.
    crash_loop_limit: int = 5
    window: float = 300.0


@dataclass(frozen=True)
class RestartDecision:
    #: Seconds to wait before the next start (ignored when ``crash_loop``).
    delay: float
    crash_loop: bool
    #: Crashes counted in the window, this one included.
    recent_crashes: int


def recent(crash_times: Sequence[float], now: float, window: float) -> list[float]:
    return [t for t in crash_times if now - t <= window]


def after_crash(crash_times: Sequence[float], now: float, policy: RestartPolicy) -> RestartDecision:
    """``crash_times`` includes the crash just seen. The first crash restarts after about
    ``base``, each further one in the window doubles it up to ``cap`` (equal jitter: never 0, so a
    runner that dies at once cannot spin); the ``crash_loop_limit``-th stops the restarts."""
    count = len(recent(crash_times, now, policy.window))
    if count >= policy.crash_loop_limit:
        return RestartDecision(delay=0.0, crash_loop=True, recent_crashes=count)
    delay = backoff_delay(max(count - 1, 0), base=policy.base, cap=policy.cap, jitter="equal")
    return RestartDecision(delay=delay, crash_loop=False, recent_crashes=count)


class VersionError(ValueError):
    """No usable version: the message says where it was looked for."""


def check_version(version: str) -> str:
    if not _VERSION.match(version):
        raise VersionError(f"{version!r} is not a valid version (letters, digits, '_.+-', at most 128)")
    return version


def update_on_restart(current: str, desired: str | None) -> str | None:
    """After an exit 75: the version to switch to before the restart, or None to restart as is."""
    if not desired:
        return None
    try:
        check_version(desired)
    except VersionError:
        return None
    return desired if desired != current else None


class Verdict(enum.StrEnum):
    KEEP = "keep"
    ROLL_BACK = "roll-back"


@dataclass(frozen=True)
class ReadyResult:
    """What waiting for ``/readyz`` found."""

    ready: bool
    seconds: float
    #: The last answer or error, or how the workload exited.
    detail: str = ""
    exited: bool = False


def after_update(result: ReadyResult, *, have_previous: bool) -> Verdict:
    """A new version that is not ready within the deadline goes back to the previous one, when
    there is one (a first install has nothing to go back to and stays, failing the job)."""
    if result.ready or not have_previous:
        return Verdict.KEEP
    return Verdict.ROLL_BACK


def rollback_message(new: str, old: str, result: ReadyResult, deadline: float, *, old_ready: bool) -> str:
    why = "exited before it was ready" if result.exited else f"was not ready within {deadline:g}s"
    back = "and is ready again" if old_ready else "but it is not ready either (see the runner's log)"
    return (
        f"version {new} failed its health check (/readyz): it {why} ({result.detail}); "
        f"rolled back to {old} {back}"
    )
