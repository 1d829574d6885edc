"""Polling cadence against a server that ignores ``wait`` (issue 10 break 4; docs/runner-api.md §3.5).

The reference sleeps 5 s after an empty poll. Ours used to poll every second per group even when
idle, and with ``long_poll_jobs`` a server answering an empty list after more than 50 ms made the
poller ask again at once: a tight loop per group. The server here is a loopback HTTP server that
answers every poll with ``[]`` (after ``delay``), whatever ``wait`` says, and counts the polls.
The bounds are on counts of requests in a window; a slow machine only makes fewer.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio
import pytest

from runner.api.client import RunnerClient
from runner.metrics import RunnerMetrics
from runner.poller import GroupPoller, idle_interval, next_poll_delay

pytestmark = pytest.mark.integration

POLL = 0.1
IDLE = 0.4
WINDOW = 2.0


class IgnoresWait(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, delay: float) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.delay = delay
        self.polls: list[tuple[float, dict[str, str]]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: IgnoresWait

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        path, _, query = self.path.partition("?")
        params = dict(part.split("=", 1) for part in query.split("&") if "=" in part)
        if path.endswith("/jobs"):
            self.server.polls.append((time.monotonic(), params))
            time.sleep(self.server.delay)
        body = b"[]"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[IgnoresWait]:
    srv = IgnoresWait(getattr(request, "param", 0.0))
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _run_poller(url: str, *, long_poll: bool) -> None:
    async def main() -> None:
        async with RunnerClient(url, "token", "run1") as api:
            poller = GroupPoller(
                "sync",
                api=api,
                supports=lambda _: True,
                global_limiter=anyio.CapacityLimiter(4),
                concurrency=1,
                long_poll=lambda: long_poll,
                long_poll_wait=20.0,
                poll_interval=POLL,
                idle_poll_interval=IDLE,
                start_job=lambda *_: None,
                metrics=RunnerMetrics(),
            )
            with anyio.move_on_after(WINDOW):
                await poller.run()

    anyio.run(main)


def _most_polls() -> int:
    """Polls that fit in the window when every pause is the full idle interval, plus the ramp."""
    ramp = [idle_interval(n, poll_interval=POLL, idle_poll_interval=IDLE) for n in range(1, 10)]
    total, count = 0.0, 1
    for pause in ramp + [IDLE] * 100:
        total += pause * 0.8  # the plain-poll jitter goes down to 80 %
        if total > WINDOW:
            return count
        count += 1
    return count


def test_plain_polling_backs_off_when_idle(server: IgnoresWait) -> None:
    _run_poller(server.url, long_poll=False)
    polls = len(server.polls)
    # The old 1 s-every-time cadence (here POLL) makes about WINDOW / POLL = 20 polls.
    assert 2 <= polls <= _most_polls(), polls
    assert all("wait" not in params for _, params in server.polls)


@pytest.mark.parametrize("server", [0.0, 0.06], indirect=True, ids=["answers-at-once", "answers-in-60ms"])
def test_long_poll_keeps_a_minimum_interval_when_the_server_ignores_wait(server: IgnoresWait) -> None:
    _run_poller(server.url, long_poll=True)
    starts = [at for at, _ in server.polls]
    assert all(params.get("wait") for _, params in server.polls), "long-poll asks the server to hold"
    # A tight loop would make WINDOW / delay polls (hundreds at once, ~33 at 60 ms).
    assert 2 <= len(starts) <= _most_polls(), len(starts)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= POLL * 0.9, gaps


def test_next_poll_delay_decisions() -> None:
    kw: dict[str, Any] = {"poll_interval": 1.0, "idle_poll_interval": 5.0}
    assert [idle_interval(n, **kw) for n in (1, 2, 3, 4, 10)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert next_poll_delay(claimed=True, long_poll=False, elapsed=0.0, idle_polls=0, **kw) == 0.0
    # Long-poll held by the server (20 s): ask again at once.
    assert next_poll_delay(claimed=False, long_poll=True, elapsed=20.0, idle_polls=7, **kw) == 0.0
    # Long-poll answered after 60 ms: the rest of the interval, not 0 (the old tight loop).
    assert next_poll_delay(claimed=False, long_poll=True, elapsed=0.06, idle_polls=1, **kw) == pytest.approx(
        0.94
    )
    plain = next_poll_delay(claimed=False, long_poll=False, elapsed=0.01, idle_polls=9, **kw)
    assert 4.0 <= plain <= 5.0
