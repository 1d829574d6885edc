"""The embedded control plane: the runner API of docs/runner-api.md served over SQLite.

It imports only the wire contract (``runner.api.models``) from the agent, so the agent can be
tested against it exactly as it would run against the real server.
"""

from __future__ import annotations

from controlplane.options import ControlPlaneOptions, Credentials

__all__ = ["ControlPlaneOptions", "Credentials"]
