"""Small wire helpers: timestamps, durations, compact JSON and base64 in the contract's forms.

Timestamps are kept as integer nanoseconds since the epoch (UTC) in the store, so ordering and
deadline arithmetic are integer comparisons; they become RFC 3339 strings only on the way out.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import re
import time
from typing import Any

NS = 1_000_000_000


def now_ns() -> int:
    return time.time_ns()


@functools.lru_cache(maxsize=4096)
def _second(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def rfc3339(ns: int | None) -> str | None:
    """RFC 3339 with microseconds and ``Z``, like the contract's ``2025-06-01T12:00:00.123456Z``.

    Job lists render several timestamps per job; the date part is cached per second.
    """
    if ns is None:
        return None
    seconds, rest = divmod(ns, NS)
    return f"{_second(seconds)}.{rest // 1000:06d}Z"


def seconds_to_ns(seconds: float) -> int:
    return round(seconds * NS)


_DURATION_UNITS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": NS,
    "m": 60 * NS,
    "h": 3600 * NS,
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_wait(text: str) -> float:
    """Seconds from ``20``, ``2.5`` or a Go duration (``20s``, ``500ms``, ``1m30s``).

    Raises ``ValueError`` for anything else, including negative values.
    """
    text = text.strip()
    if not text:
        raise ValueError("empty duration")
    try:
        value = float(text)
    except ValueError:
        pos = 0
        total = 0.0
        for match in _DURATION_PART.finditer(text):
            if match.start() != pos:
                raise ValueError(f"invalid duration {text!r}") from None
            total += float(match.group(1)) * _DURATION_UNITS[match.group(2)] / NS
            pos = match.end()
        if pos != len(text) or pos == 0:
            raise ValueError(f"invalid duration {text!r}") from None
        return total
    if value != value or value < 0 or value == float("inf"):
        raise ValueError(f"invalid duration {text!r}")
    return value


def dumps(value: Any) -> bytes:
    """Compact JSON (no spaces: the init scripts grep the settings, docs/runner-api.md §14.5)."""
    # backslashreplace turns a stray lone surrogate into its own JSON escape instead of failing.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "backslashreplace")


def b64std(data: bytes | None) -> str | None:
    if data is None:
        return None
    return base64.b64encode(data).decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Base64-URL as the runner sends it (padded, but tolerate missing padding).

    ``+`` and ``/`` are refused like Go's ``base64.URLEncoding`` does: a runner that sends
    standard base64 here has a bug worth seeing.
    """
    cleaned = text.strip()
    if "+" in cleaned or "/" in cleaned:
        raise ValueError("not valid base64url: '+' or '/' (standard base64?)")
    cleaned += "=" * (-len(cleaned) % 4)
    try:
        return base64.b64decode(cleaned, altchars=b"-_", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not valid base64url") from exc
