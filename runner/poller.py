"""Polling one job group: wait for capacity, (long-)poll, pick the oldest supported job, claim it.

Fixes of the reference's job loop: the oldest job goes first (no LIFO starvation), ``limit`` is
sent, job types without a handler are never claimed, a 4xx on the claim means another runner
won the race (not an error), and several jobs of a group may run at once up to the group's
concurrency and the runner-wide cap.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import anyio
import structlog

from runner.api.client import APIError, RunnerClient, TransportError, Unauthorized
from runner.api.models import JobStatus, RunnerJob, RunnerJobExecution
from runner.backoff import backoff_delay
from runner.metrics import RunnerMetrics

log = structlog.get_logger("runner.poller")


def pick_claimable(jobs: Sequence[RunnerJob], supports: Callable[[str], bool]) -> list[RunnerJob]:
    """Available jobs with a handler, oldest first (a job without ``created_at`` sorts last)."""
    far_future = datetime.max.replace(tzinfo=UTC)
    candidates = [j for j in jobs if j.status == JobStatus.AVAILABLE and j.id and supports(j.type)]
    return sorted(candidates, key=lambda j: (j.created_at or far_future, j.id))


def idle_interval(idle_polls: int, *, poll_interval: float, idle_poll_interval: float) -> float:
    """The interval between the starts of two polls after ``idle_polls`` (>= 1) answers in a row
    that gave this runner nothing to run: ``poll_interval``, doubling up to ``idle_poll_interval``.

    The reference sleeps 5 s after an empty poll (``starvedJobPollBackoff``); an idle fleet of ours
    puts the same load on the API, and the first polls after work still come within a second.
    """
    ceiling = max(idle_poll_interval, poll_interval)
    return min(ceiling, poll_interval * (2.0 ** min(max(idle_polls - 1, 0), 16)))


def next_poll_delay(
    *,
    claimed: bool,
    long_poll: bool,
    elapsed: float,
    idle_polls: int,
    poll_interval: float,
    idle_poll_interval: float,
) -> float:
    """How long to pause before the next poll (docs/runner-api.md §3.5).

    After a claim: at once. Plain polling: the idle interval (jittered down, never past it).
    Long-poll: whatever is left of the idle interval since the poll started, so a server that
    holds the poll is asked again at once, and one that answers at once (it ignores ``wait``, or
    has only jobs we cannot take) is not polled in a tight loop, however slow its answer.
    """
    if claimed:
        return 0.0
    interval = idle_interval(idle_polls, poll_interval=poll_interval, idle_poll_interval=idle_poll_interval)
    if long_poll:
        return max(0.0, interval - elapsed)
    return interval * random.uniform(0.8, 1.0)


@dataclass
class Slot:
    """Capacity held by one claimed job: a token in the group's and the global limiter."""

    group_limiter: anyio.CapacityLimiter
    global_limiter: anyio.CapacityLimiter
    token: object

    def release(self) -> None:
        self.group_limiter.release_on_behalf_of(self.token)
        self.global_limiter.release_on_behalf_of(self.token)


class _Failed(float):
    """A pause that follows a failed poll (so the caller counts consecutive failures)."""


StartJob = Callable[[RunnerJob, RunnerJobExecution, Slot], None]


class GroupPoller:
    """The loop of one group. ``stop()`` stops claiming; running jobs are not touched."""

    def __init__(
        self,
        group: str,
        *,
        api: RunnerClient,
        supports: Callable[[str], bool],
        global_limiter: anyio.CapacityLimiter,
        concurrency: int,
        long_poll: Callable[[], bool],
        long_poll_wait: float,
        poll_interval: float,
        start_job: StartJob,
        metrics: RunnerMetrics,
        idle_poll_interval: float = 5.0,
    ) -> None:
        self.group = group
        self.api = api
        self.supports = supports
        self.global_limiter = global_limiter
        self.limiter = anyio.CapacityLimiter(concurrency)
        self.long_poll = long_poll
        self.long_poll_wait = long_poll_wait
        self.poll_interval = poll_interval
        self.idle_poll_interval = idle_poll_interval
        #: Answers in a row that gave this runner nothing to run.
        self.idle_polls = 0
        self.start_job = start_job
        self.metrics = metrics
        self.last_poll = time.monotonic()
        self._scope: anyio.CancelScope | None = None
        self._stopped = False

    def set_concurrency(self, concurrency: int) -> None:
        self.limiter.total_tokens = max(1, concurrency)

    def stop(self) -> None:
        self._stopped = True
        if self._scope is not None:
            self._scope.cancel()

    @property
    def age_ns(self) -> int:
        """Nanoseconds since this loop last polled (or started): a stuck loop shows here."""
        return int((time.monotonic() - self.last_poll) * 1e9)

    async def _acquire_slot(self) -> Slot:
        token = object()
        await self.limiter.acquire_on_behalf_of(token)
        try:
            await self.global_limiter.acquire_on_behalf_of(token)
        except BaseException:
            self.limiter.release_on_behalf_of(token)
            raise
        return Slot(self.limiter, self.global_limiter, token)

    def _try_slot(self) -> Slot | None:
        token = object()
        try:
            self.limiter.acquire_on_behalf_of_nowait(token)
        except anyio.WouldBlock:
            return None
        try:
            self.global_limiter.acquire_on_behalf_of_nowait(token)
        except anyio.WouldBlock:
            self.limiter.release_on_behalf_of(token)
            return None
        return Slot(self.limiter, self.global_limiter, token)

    async def run(self) -> None:
        failures = 0
        with anyio.CancelScope() as scope:
            self._scope = scope
            if self._stopped:
                scope.cancel()
            while not self._stopped:
                delay = await self._poll_once(failures)
                failures = failures + 1 if isinstance(delay, _Failed) else 0
                if delay:
                    await anyio.sleep(float(delay))
        self._scope = None

    async def _poll_once(self, failures: int) -> float:
        """One poll with one slot held; returns how long to pause before the next."""
        slot: Slot | None = await self._acquire_slot()
        try:
            long_poll = self.long_poll()
            began = time.monotonic()
            try:
                jobs = await self.api.list_jobs(
                    self.group, limit=10, wait=self.long_poll_wait if long_poll else None
                )
            except Unauthorized as exc:
                self.metrics.polls.inc(1, self.group, "unauthorized")
                log.error(
                    "the control plane rejected the runner token (401); check RUNNER_API_TOKEN",
                    group=self.group,
                    error=str(exc),
                )
                return _Failed(max(30.0, backoff_delay(failures, base=0.5, cap=30.0)))
            except (APIError, TransportError) as exc:
                self.metrics.polls.inc(1, self.group, "error")
                log.warning("poll failed", group=self.group, error=str(exc), failures=failures + 1)
                return _Failed(backoff_delay(failures, base=0.5, cap=30.0))
            finally:
                self.last_poll = time.monotonic()
            self.metrics.polls.inc(1, self.group, "ok" if jobs else "empty")
            claimed = 0
            for job in pick_claimable(jobs, self.supports):
                slot = slot or self._try_slot()
                if slot is None:
                    break
                if await self._claim(job, slot):
                    claimed += 1
                    slot = None
            self.idle_polls = 0 if claimed else self.idle_polls + 1
            return next_poll_delay(
                claimed=bool(claimed),
                long_poll=long_poll,
                elapsed=time.monotonic() - began,
                idle_polls=self.idle_polls,
                poll_interval=self.poll_interval,
                idle_poll_interval=self.idle_poll_interval,
            )
        finally:
            if slot is not None:
                slot.release()

    async def _claim(self, job: RunnerJob, slot: Slot) -> bool:
        # Shielded: a claim that reached the server must be followed by running the job.
        with anyio.CancelScope(shield=True):
            try:
                execution = await self.api.create_execution(job.id)
            except APIError as exc:
                if exc.is_client_error:
                    self.metrics.claims_lost.inc(1, self.group)
                    log.debug("claim lost", job_id=job.id, status=exc.status)
                    return False
                log.warning("claim failed", job_id=job.id, error=str(exc))
                return False
            except TransportError as exc:
                log.warning("claim failed", job_id=job.id, error=str(exc))
                return False
            if job.created_at is not None:
                latency = (datetime.now(UTC) - job.created_at).total_seconds()
                if latency >= 0:
                    self.metrics.pickup_seconds.observe(latency, self.group)
            self.start_job(job, execution, slot)
            return True
        return False  # pragma: no cover - a shielded scope is never cancelled
