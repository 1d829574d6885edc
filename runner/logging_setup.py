"""The runner's own logs: structlog to stdout, JSON by default, masked, level changeable live.

Why: the reference runner's "system" logger has no processor and silently discards everything
(docs/runner-api.md §5.6), so heartbeat and poll errors are recorded nowhere. Here every line
goes to stdout (JSON for log collectors, or a readable console rendering with
``--log-format console``), library loggers that use ``logging`` (uvicorn, httpx) are rendered
through the same chain, and the final rendered line passes through the runner-wide ``Redactor``
so the runner token can never be printed, whatever field or traceback it hides in.

The level comes from the config at start-up and from the settings' ``logging_level`` later, so
it is a mutable threshold read by a filter processor rather than baked into the logger class.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from runner.redact import RUNNER_SECRETS, Redactor

_LEVELS = {
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARN": logging.WARNING,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
    "CRITICAL": logging.CRITICAL,
}

_NAMES_TO_NUMBERS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
}

#: Library loggers that are chatty at INFO (httpx logs every request URL).
_QUIET_LIBRARIES = ("httpx", "httpcore", "uvicorn.access", "asyncio")


class _State:
    level: int = logging.INFO


def parse_level(level: str | int) -> int:
    """A level name as used by settings (``DEBUG|INFO|WARN|ERROR``, Go slog style) -> number.

    Unknown names fall back to INFO rather than failing: the reference runner refuses to start on
    an empty ``logging_level`` (docs/runner-api.md §2.3), we do not.
    """
    if isinstance(level, int):
        return level
    name = level.strip().upper()
    # Go's slog accepts offsets such as "INFO+2"; keep the base name.
    for sep in ("+", "-"):
        if sep in name[1:]:
            name = name.split(sep, 1)[0]
    return _LEVELS.get(name, logging.INFO)


def set_level(level: str | int) -> None:
    """Change the runner's log level now (settings ``logging_level`` refresh)."""
    number = parse_level(level)
    _State.level = number
    logging.getLogger().setLevel(number)


def current_level() -> int:
    return _State.level


def register_secret(*values: str | None) -> None:
    """Mask these values (and their encoded forms) in every line the runner prints."""
    RUNNER_SECRETS.register(*values)


def _filter_by_level(_: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    if _NAMES_TO_NUMBERS.get(method_name, logging.INFO) < _State.level:
        raise structlog.DropEvent
    return event_dict


class MaskRendered:
    """The last processor: masks the rendered line, so keys, nested values and tracebacks are covered."""

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor

    def __call__(self, _: WrappedLogger, __: str, rendered: Any) -> Any:
        if isinstance(rendered, str):
            return self._redactor.mask(rendered)
        return rendered


def _renderer(fmt: str, out: TextIO) -> Processor:
    if fmt == "console":
        return structlog.dev.ConsoleRenderer(colors=out.isatty())
    return structlog.processors.JSONRenderer()


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def configure_logging(
    fmt: str = "json",
    level: str | int = "INFO",
    *,
    stream: TextIO | None = None,
    redactor: Redactor = RUNNER_SECRETS,
) -> None:
    """Set up structlog (and the stdlib root logger) for the runner process.

    ``fmt`` is ``"json"`` (default: one JSON object per line on stdout) or ``"console"``. Safe to
    call more than once (tests, ``runner exec`` after ``runner run`` options are parsed).
    """
    if fmt not in ("json", "console"):
        raise ValueError(f"unknown log format {fmt!r} (expected 'json' or 'console')")
    out = stream if stream is not None else sys.stdout
    set_level(level)
    renderer = _renderer(fmt, out)
    shared = _shared_processors()
    structlog.configure(
        processors=[
            _filter_by_level,
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
            MaskRendered(redactor),
        ],
        logger_factory=structlog.WriteLoggerFactory(file=out),
        wrapper_class=structlog.make_filtering_bound_logger(logging.NOTSET),
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
            MaskRendered(redactor),
        ],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_byoc_runner", False):
            root.removeHandler(old)
    handler._byoc_runner = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    for name in _QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(logging.WARNING, _State.level))


def bind_context(**values: Any) -> None:
    """Attach values to every runner log line of the current task (e.g. the job being run)."""
    structlog.contextvars.bind_contextvars(**values)


def unbind_context(*keys: str) -> None:
    structlog.contextvars.unbind_contextvars(*keys)
