"""The job logger handlers write to, and the small value types of the log pipeline.

Emitting must be cheap (a job may print a million lines) and must never block or raise (a log
line must not be able to fail a job). So ``JobLogger`` only appends a tuple to its stream's
deque; masking, encoding and shipping happen later, in batches, in the stream's shipper.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from runner.logs.otlp import DEBUG, ERROR, INFO, WARN, attributes_blob
from runner.redact import Redactor

_LEVELS = {
    "debug": DEBUG,
    "trace": DEBUG,
    "info": INFO,
    "warn": WARN,
    "warning": WARN,
    "error": ERROR,
    "err": ERROR,
    "critical": ERROR,
    "fatal": ERROR,
    "exception": ERROR,
}


def severity_index(level: str | int) -> int:
    """A level name (any case) -> severity index; OTel severity numbers are accepted too."""
    if isinstance(level, int):
        if level >= 17:
            return ERROR
        if level >= 13:
            return WARN
        if level >= 9:
            return INFO
        return DEBUG
    return _LEVELS.get(str(level).strip().lower(), INFO)


@dataclass(frozen=True, slots=True)
class LogRecord:
    """A job log record as the tee sees it: already masked, attributes merged."""

    timestamp_ns: int
    severity_number: int
    severity_text: str
    body: str
    attributes: Mapping[str, Any]

    @property
    def observed_timestamp_ns(self) -> int:
        return self.timestamp_ns


@dataclass(frozen=True)
class DeliveryReport:
    """What became of a job's records: accepted by the server (or by the tee alone when the job
    has no log stream), still spooled on disk, or dropped (rejected by the server)."""

    delivered: int
    spooled: int
    lost: int

    def __add__(self, other: DeliveryReport) -> DeliveryReport:
        return DeliveryReport(
            self.delivered + other.delivered, self.spooled + other.spooled, self.lost + other.lost
        )


@dataclass
class LogMetrics:
    """Runner-wide counters (for ``/metrics``): records shipped, written to the spool, lost, and
    failed export requests."""

    shipped: int = 0
    spooled: int = 0
    lost: int = 0
    export_failures: int = 0


class Bound:
    """Attributes shared by every record of one logger, with their serialized form cached.

    The cache is keyed by the redactor's generation: a secret registered after ``bind`` still
    gets masked in the attributes of later records.
    """

    __slots__ = ("_blob", "_generation", "attrs", "keys")

    def __init__(self, attrs: Mapping[str, Any]) -> None:
        self.attrs: dict[str, Any] = {k: v for k, v in attrs.items() if v is not None}
        self.keys = frozenset(self.attrs)
        self._blob = b""
        self._generation = -1

    def child(self, extra: Mapping[str, Any]) -> Bound:
        return Bound({**self.attrs, **extra})

    def blob(self, redactor: Redactor, generation: int | None = None) -> bytes:
        if generation is None:
            generation = redactor.generation
        if generation != self._generation:
            self._blob = attributes_blob(self.attrs, redactor.mask)
            self._generation = generation
        return self._blob


#: (timestamp ns, severity index, body, per-call attributes or None, bound attributes)
RawRecord = tuple[int, int, str, "dict[str, Any] | None", Bound]
Emit = Callable[[int, str, "dict[str, Any] | None", Bound], None]


class JobLogger:
    """Implements ``runner.handler.JobLog`` on top of a stream's emit function."""

    __slots__ = ("_bound", "_emit")

    def __init__(self, emit: Emit, bound: Bound) -> None:
        self._emit = emit
        self._bound = bound

    def log(self, level: str, message: str, **attrs: Any) -> None:
        with contextlib.suppress(Exception):  # a log call must never fail a job
            self._emit(severity_index(level), message, attrs or None, self._bound)

    def debug(self, message: str, **attrs: Any) -> None:
        self._emit(DEBUG, message, attrs or None, self._bound)

    def info(self, message: str, **attrs: Any) -> None:
        self._emit(INFO, message, attrs or None, self._bound)

    def warning(self, message: str, **attrs: Any) -> None:
        self._emit(WARN, message, attrs or None, self._bound)

    def error(self, message: str, **attrs: Any) -> None:
        self._emit(ERROR, message, attrs or None, self._bound)

    warn = warning

    def bind(self, **attrs: Any) -> JobLogger:
        """A logger whose records carry ``attrs`` too (e.g. the execution step name)."""
        return JobLogger(self._emit, self._bound.child(attrs))

    @property
    def attributes(self) -> Mapping[str, Any]:
        return self._bound.attrs
