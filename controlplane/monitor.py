"""The dispatcher's clock: timeouts and runner liveness, enforced in the background.

Every ``monitor_interval`` one store transaction (only when something expired) applies:
* ``available_timeout``: another availability window while attempts remain, else ``timed-out``;
* ``execution_timeout``: the execution and its job ``timed-out``;
* ``overall_timeout``: the job (and a running execution) ``timed-out``;
* a runner silent for longer than ``heartbeat_offline_after``: ``offline``, and its running
  executions ``failed`` with the reason in the job's ``status_description``. Silence is counted
  only from the moment this control plane could hear again: its own start, or the end of a stall
  (SIGSTOP, a frozen VM, a blocked loop) seen as a gap between two of its own ticks. A runner that
  kept heartbeating into the void while we were away gets a full ``heartbeat_offline_after`` to
  be heard before it is judged.
Restart detection needs no clock: it runs with each heartbeat (``Store.heartbeat``). The monitor
also checkpoints the WAL every ``CHECKPOINT_EVERY`` seconds in a worker thread and prunes old
heartbeats hourly.
"""

from __future__ import annotations

import time

import anyio

from controlplane.logs import logger
from controlplane.options import ControlPlaneOptions
from controlplane.store import Store
from controlplane.wire import seconds_to_ns

#: Seconds between WAL checkpoints (automatic ones are off so that fsyncs stay off the loop).
CHECKPOINT_EVERY = 2.0
#: Seconds between housekeeping runs (heartbeat pruning).
PRUNE_EVERY = 3600.0
#: A gap between two ticks this much longer than ``monitor_interval`` means the control plane
#: itself was not running (stopped, paused, starved): runners get a fresh grace period.
STALL_SLACK = 2.0


def is_stall(gap: float, interval: float) -> bool:
    """Whether ``gap`` seconds between two ticks means we were away rather than busy."""
    return gap > interval + STALL_SLACK


class Monitor:
    def __init__(self, store: Store, options: ControlPlaneOptions) -> None:
        self.store = store
        self.options = options
        self.ticks = 0
        self._next_checkpoint = 0.0
        self._next_prune = 0.0
        #: Monotonic time of the previous tick (None before the first: a start is a resume too).
        self._last_tick: float | None = None
        #: Wall-clock ns since which we have been able to hear runners.
        self.listening_since_ns = 0

    def _note_tick(self) -> None:
        """Start a grace period at start-up and after a stall between our own ticks."""
        now = time.monotonic()
        previous, self._last_tick = self._last_tick, now
        if previous is None or is_stall(now - previous, self.options.monitor_interval):
            self.listening_since_ns = time.time_ns()
            if previous is not None:
                logger("controlplane.monitor").warning(
                    "the control plane was not running; runners get a grace period before liveness"
                    " is judged again",
                    stalled_seconds=round(now - previous, 1),
                    grace_seconds=self.options.heartbeat_offline_after,
                )

    async def tick(self) -> None:
        self._note_tick()
        report = await self.store.monitor_tick(
            seconds_to_ns(self.options.heartbeat_offline_after), self.listening_since_ns
        )
        if report:
            logger("controlplane.monitor").info(
                "monitor",
                available_timeouts=report.available_timeouts,
                retried=report.retried,
                execution_timeouts=report.execution_timeouts,
                overall_timeouts=report.overall_timeouts,
                offline_runners=report.offline_runners,
            )
        self.ticks += 1
        now = anyio.current_time()
        if now >= self._next_checkpoint:
            self._next_checkpoint = now + CHECKPOINT_EVERY
            await self.store.db.checkpoint()
        if now >= self._next_prune:
            self._next_prune = now + PRUNE_EVERY
            await self.store.prune()

    async def run(self) -> None:
        """Tick forever; a failing tick is logged and retried next interval, never fatal."""
        while True:
            try:
                await self.tick()
            except Exception:  # noqa: BLE001 - the monitor must outlive one bad tick
                logger("controlplane.monitor").exception("monitor tick failed")
            await anyio.sleep(self.options.monitor_interval)
