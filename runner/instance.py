"""One runner id, one process: refuse to start while another process runs as the same runner.

Why: a second process started with the same runner id (a supervisor gone wrong, a copy-pasted
deployment) made the control plane cancel the first one's running job as "runner restarted"
(issue 11): heartbeats carried nothing that told two live processes from a restart.

Each process now sends a random ``instance_id`` with its heartbeats. Our control plane answers
409 to a heartbeat from another instance while the current one is alive (it heartbeated within
about two periods), and changes nothing. At start-up the runner sends that first heartbeat
before it recovers orphans or claims jobs; while it keeps getting 409 for longer than the other
process could stay silent if it were dead, it gives up with a clear message. A runner killed
with -9 and started again is accepted as soon as its old instance's heartbeats stop being fresh.

The reference server ignores unknown heartbeat fields (gin's ``BindJSON`` into a struct), so
against it nothing changes: the check is ours.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable

import anyio
import structlog

from runner.api.client import APIError, TransportError

log = structlog.get_logger("runner.instance")


class DuplicateRunner(Exception):
    """Another process is running as this runner id."""


def new_instance_id() -> str:
    return "ins" + secrets.token_hex(12)


def refusal_window(heartbeat_period: float) -> float:
    """How long a 409 is retried: longer than the server's window (two periods and a second)
    plus a request's worth, so that a dead predecessor always ages out first."""
    return 3 * max(heartbeat_period, 1.0) + 5.0


async def claim_runner_id(
    send_heartbeat: Callable[[], Awaitable[object]],
    *,
    window: float,
    retry_every: float = 1.0,
) -> None:
    """Send heartbeats until one is accepted; ``DuplicateRunner`` after ``window`` seconds of 409.

    A transport error or any other API error returns at once: the server may be down, and the
    heartbeat loop (with the same instance id) keeps trying; the server still refuses a live
    duplicate there.
    """
    deadline = time.monotonic() + window
    warned = False
    while True:
        try:
            await send_heartbeat()
            return
        except TransportError:
            return
        except APIError as exc:
            if exc.status != 409:
                return
            if time.monotonic() >= deadline:
                raise DuplicateRunner(
                    exc.description or "another process is running as this runner id"
                ) from None
            if not warned:
                log.warning(
                    "another process seems to be running as this runner id; waiting to see whether"
                    " it is alive",
                    detail=exc.description,
                    wait_seconds=round(window, 1),
                )
                warned = True
        await anyio.sleep(retry_every)
