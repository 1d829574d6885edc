"""The per-user state directory that ``runner local``/``runner exec`` and ``runner jobs`` share.

It lives with the contract (``runner.api``) because both sides use it: the agent keeps its
state there, and the control plane's operator CLI finds the credentials of a local control plane
there (the control plane may import only ``runner.api``).
"""

from __future__ import annotations

import os
from pathlib import Path


def default_state_dir() -> Path:
    """A per-user state directory (XDG on Linux), so consecutive local runs share state."""
    if os.geteuid() == 0 and Path("/var/lib").is_dir() and os.environ.get("RUNNER_IN_CONTAINER"):
        return Path("/var/lib/byoc-runner")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "byoc-runner"
