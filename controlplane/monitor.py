"""The dispatcher's clock: timeouts and runner liveness, enforced in the background.

Every ``monitor_interval`` one store transaction (only when something expired) applies:
* ``available_timeout``: another availability window while attempts remain, else ``timed-out``;
* ``execution_timeout``: the execution and its job ``timed-out``;
* ``overall_timeout``: the job (and a running execution) ``timed-out``;
* a runner silent for longer than ``heartbeat_offline_after``: ``offline``, and its running
  executions ``failed`` with the reason in the job's ``status_description``.
Restart detection needs no clock: it runs with each heartbeat (``Store.heartbeat``). The monitor
also checkpoints the WAL every ``CHECKPOINT_EVERY`` seconds in a worker thread and prunes old
heartbeats hourly.
"""

from __future__ import annotations

import anyio

from controlplane.logs import logger
from controlplane.options import ControlPlaneOptions
from controlplane.store import Store
from controlplane.wire import seconds_to_ns

#: Seconds between WAL checkpoints (automatic ones are off so that fsyncs stay off the loop).
CHECKPOINT_EVERY = 2.0
#: Seconds between housekeeping runs (heartbeat pruning).
PRUNE_EVERY = 3600.0


class Monitor:
    def __init__(self, store: Store, options: ControlPlaneOptions) -> None:
        self.store = store
        self.options = options
        self.ticks = 0
        self._next_checkpoint = 0.0
        self._next_prune = 0.0

    async def tick(self) -> None:
        report = await self.store.monitor_tick(seconds_to_ns(self.options.heartbeat_offline_after))
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
