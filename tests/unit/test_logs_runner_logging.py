"""The runner's own logs: JSON or console on stdout, live level changes, the runner token masked."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from runner import logging_setup
from runner.redact import Redactor

pytestmark = pytest.mark.unit

TOKEN = "runner-api-token-0123456789"


@pytest.fixture
def out() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    yield buffer
    structlog.reset_defaults()
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_byoc_runner", False):
            root.removeHandler(handler)
    logging_setup.set_level("INFO")


def lines(buffer: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]


def test_json_lines_with_the_token_masked(out: io.StringIO) -> None:
    redactor = Redactor(TOKEN)
    logging_setup.configure_logging("json", "INFO", stream=out, redactor=redactor)
    structlog.get_logger("runner.test").info("calling the api", url=f"http://x/?token={TOKEN}", n=3)
    (event,) = lines(out)
    assert event["event"] == "calling the api"
    assert event["level"] == "info"
    assert event["n"] == 3
    assert event["url"] == "http://x/?token=***"
    assert "timestamp" in event
    assert TOKEN not in out.getvalue()


def test_tracebacks_are_masked_too(out: io.StringIO) -> None:
    logging_setup.configure_logging("json", "INFO", stream=out, redactor=Redactor(TOKEN))
    try:
        raise ValueError(f"bad token {TOKEN}")
    except ValueError:
        structlog.get_logger().exception("request failed")
    (event,) = lines(out)
    assert "ValueError: bad token ***" in str(event["exception"])
    assert TOKEN not in out.getvalue()


def test_console_format_is_readable_and_masked(out: io.StringIO) -> None:
    logging_setup.configure_logging("console", "INFO", stream=out, redactor=Redactor(TOKEN))
    structlog.get_logger().warning("heartbeat failed", error=f"401 for {TOKEN}")
    text = out.getvalue()
    assert "heartbeat failed" in text
    assert "warning" in text
    assert "***" in text
    assert TOKEN not in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text.splitlines()[0])


def test_level_changes_live(out: io.StringIO) -> None:
    logging_setup.configure_logging("json", "INFO", stream=out)
    log = structlog.get_logger()
    log.debug("hidden")
    logging_setup.set_level("DEBUG")
    log.debug("shown")
    logging_setup.set_level("WARN")
    log.info("hidden too")
    log.warning("warned")
    logging_setup.set_level("ERROR")
    log.warning("hidden as well")
    log.error("failed")
    assert [e["event"] for e in lines(out)] == ["shown", "warned", "failed"]


@pytest.mark.parametrize(
    ("name", "number"),
    [
        ("DEBUG", 10),
        ("info", 20),
        ("WARN", 30),
        ("warning", 30),
        ("ERROR", 40),
        ("INFO+2", 20),
        ("", 20),
        ("x", 20),
    ],
)
def test_level_names_from_settings(name: str, number: int) -> None:
    assert logging_setup.parse_level(name) == number


def test_stdlib_loggers_go_through_the_same_chain(out: io.StringIO) -> None:
    logging_setup.configure_logging("json", "INFO", stream=out, redactor=Redactor(TOKEN))
    logging.getLogger("uvicorn.error").warning("client sent %s", TOKEN)
    logging.getLogger("httpx").info("HTTP Request: GET http://x (quiet at INFO)")
    (event,) = lines(out)
    assert event["event"] == "client sent ***"
    assert event["logger"] == "uvicorn.error"


def test_register_secret_masks_in_the_runner_wide_registry(out: io.StringIO) -> None:
    logging_setup.configure_logging("json", "INFO", stream=out)
    logging_setup.register_secret("another-runner-wide-secret")
    structlog.get_logger().info("x another-runner-wide-secret y")
    assert lines(out)[0]["event"] == "x *** y"


def test_configuring_twice_does_not_duplicate_lines(out: io.StringIO) -> None:
    logging_setup.configure_logging("json", "INFO", stream=out)
    logging_setup.configure_logging("json", "INFO", stream=out)
    logging.getLogger("some.library").warning("once")
    assert len(lines(out)) == 1


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="log format"):
        logging_setup.configure_logging("xml")
