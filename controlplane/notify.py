"""Wake-ups for held job polls (long-poll), without touching the database.

A held ``GET /v1/runners/{id}/jobs?wait=…`` takes the event of its (runner, group) *before* it
queries, then waits on it; whoever makes a job available for that runner sets the group's event
and the runner's "any group" event. Taking the event first closes the race between a query
that found nothing and a job committed right after it.
"""

from __future__ import annotations

import anyio

ANY_GROUP = ""


class JobNotifier:
    def __init__(self) -> None:
        self._events: dict[tuple[str, str], anyio.Event] = {}
        self.closed = False

    def event(self, runner_id: str, group: str) -> anyio.Event:
        key = (runner_id, group)
        event = self._events.get(key)
        if event is None:
            event = anyio.Event()
            if self.closed:
                event.set()
            else:
                self._events[key] = event
        return event

    def notify(self, runner_id: str, group: str) -> None:
        for key in ((runner_id, group), (runner_id, ANY_GROUP)):
            event = self._events.pop(key, None)
            if event is not None:
                event.set()

    def close(self) -> None:
        """Release every held poll (shutdown): they answer with what they have."""
        self.closed = True
        events, self._events = self._events, {}
        for event in events.values():
            event.set()
