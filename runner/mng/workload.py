"""The two workload kinds behind one small interface, so the supervisor's logic is written once.

A ``Workload`` installs versions and starts one; a ``Handle`` is one running incarnation: the
supervisor waits on it, stops it (SIGTERM: the runner's drain; SIGKILL after a timeout) and
records it in the state file so that a restarted mng adopts it.
"""

from __future__ import annotations

from typing import Protocol

from runner.mng.state import WorkloadState


class Handle(Protocol):
    #: Set by the supervisor before it stops the workload itself: that exit is not a crash.
    intentional: bool

    def exited(self) -> bool: ...

    async def wait(self) -> int | None:
        """The exit code (negative: killed by that signal); None when it cannot be known."""
        ...

    async def stop(self, timeout: float) -> int | None: ...

    def remember(self, state: WorkloadState) -> None:
        """Write what finds this incarnation again into ``state``."""
        ...

    def describe(self) -> str: ...


class Workload(Protocol):
    mode: str
    #: The workload's ``/readyz``.
    health_url: str

    async def adopt(self, state: WorkloadState) -> Handle | None:
        """The incarnation a previous mng started, if it still runs."""
        ...

    async def install(self, version: str) -> None:
        """Make ``version`` startable (pip into a new virtualenv; pull the image tag)."""
        ...

    async def start(self, version: str) -> Handle: ...

    def installed_version(self) -> str | None:
        """The version a start would run when the state file names none."""
        ...
