"""Prometheus metrics of the runner, in the text exposition format.

A dozen counters, gauges and histograms do not justify a dependency: this module keeps them in
plain dicts keyed by label values and renders ``/metrics`` on demand. Updates are O(1) and
happen on the event loop only, so no locking is needed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _fmt(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value):
        return str(int(value))
    return repr(value)


@dataclass
class Counter:
    name: str
    help: str
    labelnames: tuple[str, ...] = ()
    values: dict[tuple[str, ...], float] = field(default_factory=dict)
    kind: str = "counter"

    def inc(self, amount: float = 1.0, *labels: str) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def get(self, *labels: str) -> float:
        return self.values.get(labels, 0.0)

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} {self.kind}"
        for labels, value in sorted(self.values.items()):
            yield f"{self.name}{_labels(self.labelnames, labels)} {_fmt(value)}"


@dataclass
class Gauge(Counter):
    kind: str = "gauge"

    def set(self, value: float, *labels: str) -> None:
        self.values[labels] = value


DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)


@dataclass
class Histogram:
    name: str
    help: str
    labelnames: tuple[str, ...] = ()
    buckets: tuple[float, ...] = DEFAULT_BUCKETS
    counts: dict[tuple[str, ...], list[int]] = field(default_factory=dict)
    sums: dict[tuple[str, ...], float] = field(default_factory=dict)

    def observe(self, value: float, *labels: str) -> None:
        counts = self.counts.setdefault(labels, [0] * (len(self.buckets) + 1))
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                counts[i] += 1
        counts[-1] += 1
        self.sums[labels] = self.sums.get(labels, 0.0) + value

    def count(self, *labels: str) -> int:
        counts = self.counts.get(labels)
        return counts[-1] if counts else 0

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} histogram"
        for labels, counts in sorted(self.counts.items()):
            for bound, count in zip((*self.buckets, math.inf), counts, strict=True):
                le = f'le="{_fmt(bound)}"'
                yield f"{self.name}_bucket{_labels(self.labelnames, labels, le)} {count}"
            yield f"{self.name}_sum{_labels(self.labelnames, labels)} {_fmt(self.sums[labels])}"
            yield f"{self.name}_count{_labels(self.labelnames, labels)} {counts[-1]}"


class RunnerMetrics:
    """Every metric the runner exports, named ``byoc_runner_*``."""

    def __init__(self) -> None:
        self.jobs = Counter("byoc_runner_jobs_total", "Jobs run, by type and outcome.", ("type", "outcome"))
        self.jobs_running = Gauge("byoc_runner_jobs_running", "Jobs running now, by group.", ("group",))
        self.step_seconds = Histogram(
            "byoc_runner_step_duration_seconds", "Duration of each job step.", ("type", "step")
        )
        self.pickup_seconds = Histogram(
            "byoc_runner_pickup_latency_seconds",
            "Job created (or available) -> execution created.",
            ("group",),
            buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
        )
        self.heartbeats = Counter("byoc_runner_heartbeats_total", "Heartbeats sent.", ())
        self.heartbeat_failures = Counter(
            "byoc_runner_heartbeat_failures_total", "Heartbeats that failed.", ()
        )
        self.polls = Counter(
            "byoc_runner_polls_total", "Job polls, by group and result.", ("group", "result")
        )
        self.claims_lost = Counter("byoc_runner_claims_lost_total", "Claims another runner won.", ("group",))
        self.api_requests = Counter(
            "byoc_runner_api_requests_total", "Runner API requests (each attempt), by method.", ("method",)
        )
        self.api_errors = Counter(
            "byoc_runner_api_errors_total", "Failed API attempts, by method.", ("method",)
        )
        self.log_records = Counter(
            "byoc_runner_log_records_total", "Job log records by fate (shipped, spooled, lost).", ("fate",)
        )
        self.settings_refreshes = Counter(
            "byoc_runner_settings_refreshes_total", "Settings fetches, by result.", ("result",)
        )
        self.up = Gauge("byoc_runner_up", "1 while the runner process runs.", ())
        self.up.set(1)

    def all(self) -> list[Counter | Histogram]:
        return [
            self.up,
            self.jobs,
            self.jobs_running,
            self.step_seconds,
            self.pickup_seconds,
            self.heartbeats,
            self.heartbeat_failures,
            self.polls,
            self.claims_lost,
            self.api_requests,
            self.api_errors,
            self.log_records,
            self.settings_refreshes,
        ]

    def render(self) -> str:
        lines: list[str] = []
        for metric in self.all():
            lines.extend(metric.render())
        return "\n".join(lines) + "\n"
