"""The control plane's own log, through structlog, imported on first use.

structlog (and the console renderer it pulls in) costs a few hundred milliseconds to import;
the server logs rarely (monitor actions, unexpected errors), so it should not slow its start.
"""

from __future__ import annotations

from typing import Any


def logger(name: str = "controlplane") -> Any:
    import structlog

    return structlog.get_logger(name)
