"""The monitor's liveness rule after the control plane's own absence (issue 11, finding 1).

The store and the monitor run for real (SQLite in memory); only the clocks are moved: the
runner's last heartbeat is aged in the database, and the monitor's previous tick is moved back
as a SIGSTOP would.
"""

from __future__ import annotations

import time

import anyio
import pytest

from controlplane.bodies import SubmitJobBody
from controlplane.monitor import Monitor, is_stall
from controlplane.options import ControlPlaneOptions
from controlplane.routes_operator import job_spec
from controlplane.store import Store

pytestmark = pytest.mark.unit

OFFLINE_AFTER = 15.0


async def _running_job(store: Store) -> tuple[str, str, str]:
    """A runner that heartbeated and runs one execution; returns runner, job and execution ids."""
    creds, _ = await store.bootstrap("http://x", 5 * 10**9)
    await store.heartbeat(creds.runner_id, 10**9, "t", "runner", 60 * 10**9)
    job = await store.submit_job(
        creds.runner_id,
        job_spec(SubmitJobBody.model_validate({"type": "noop"}), creds.runner_id),
        auto_create_workspaces=True,
    )
    execution = await store.claim(job["id"], None, runner_scope=creds.runner_id)
    await store.update_execution(job["id"], execution["id"], "in-progress", runner_scope=creds.runner_id)
    return creds.runner_id, job["id"], execution["id"]


def _age_heartbeat(store: Store, runner_id: str, seconds: float) -> None:
    store.db.conn.execute(
        "UPDATE runners SET last_heartbeat_at = ? WHERE id = ?",
        (time.time_ns() - int(seconds * 1e9), runner_id),
    )


def test_a_stall_is_a_gap_well_beyond_the_interval() -> None:
    assert not is_stall(0.5, 0.5)
    assert not is_stall(2.4, 0.5)
    assert is_stall(15.0, 0.5)


def test_first_tick_after_start_gives_runners_a_grace_period() -> None:
    """Restarted on an old database: a heartbeat 20 s old must not fail the running job."""

    async def main() -> None:
        store = Store.open(None)
        runner_id, job_id, _ = await _running_job(store)
        _age_heartbeat(store, runner_id, 20)
        monitor = Monitor(store, ControlPlaneOptions(heartbeat_offline_after=OFFLINE_AFTER))
        await monitor.tick()
        job = await store.get_job(job_id, runner_scope=None)
        assert job["status"] == "in-progress"
        runner = await store.get_runner(runner_id)
        assert runner["status"] == "active"
        store.close()

    anyio.run(main)


def test_a_stall_between_ticks_restarts_the_grace_period() -> None:
    """SIGSTOP for 20 s: the monitor's own tick gap says so, and nobody is failed for it."""

    async def main() -> None:
        store = Store.open(None)
        runner_id, job_id, _ = await _running_job(store)
        monitor = Monitor(store, ControlPlaneOptions(heartbeat_offline_after=OFFLINE_AFTER))
        await monitor.tick()
        # Pretend the previous tick ran 20 s ago, and the runner's heartbeats since were lost.
        monitor.listening_since_ns -= 25 * 10**9
        monitor._last_tick = time.monotonic() - 20
        _age_heartbeat(store, runner_id, 20)
        await monitor.tick()
        assert (await store.get_job(job_id, runner_scope=None))["status"] == "in-progress"
        store.close()

    anyio.run(main)


def test_a_runner_silent_for_a_whole_grace_period_is_offline() -> None:
    """The rule still holds when we were listening all along."""

    async def main() -> None:
        store = Store.open(None)
        runner_id, job_id, _ = await _running_job(store)
        monitor = Monitor(store, ControlPlaneOptions(heartbeat_offline_after=OFFLINE_AFTER))
        await monitor.tick()
        monitor.listening_since_ns -= 30 * 10**9  # we have been up for 30 s, ticking normally
        _age_heartbeat(store, runner_id, 20)
        await monitor.tick()
        job = await store.get_job(job_id, runner_scope=None)
        assert job["status"] == "failed"
        assert "runner went offline" in job["status_description"]
        assert (await store.get_runner(runner_id))["status"] == "offline"
        store.close()

    anyio.run(main)
