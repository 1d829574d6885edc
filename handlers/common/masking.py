"""Which environment values are secrets, so that plan-supplied variables get masked in job logs.

Plans hand children variables by name (``env_vars``, hook variables, ``cluster_info.env_vars``);
the name is all there is to go on, so a name that looks like it holds a credential has its
value registered with the job's secret registry before any child or log line can show it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

_SECRET_NAME_HINTS = ("SECRET", "TOKEN", "PASSWORD", "PASSWD", "CREDENTIAL", "PRIVATE", "_KEY")


class SecretSink(Protocol):
    """The part of the SDK's ``SecretRegistry`` these libraries use: ``register`` only."""

    def register(self, *values: str | None) -> None: ...


def looks_secret(name: str) -> bool:
    """``GITHUB_TOKEN``, ``ARM_CLIENT_SECRET``, ``AWS_ACCESS_KEY`` ... but not ``AWS_REGION``."""
    upper = name.upper()
    return any(hint in upper for hint in _SECRET_NAME_HINTS)


def register_env_secrets(env: Mapping[str, str], secrets: SecretSink) -> None:
    """Register the values of the variables whose names suggest a secret."""
    secrets.register(*(value for key, value in env.items() if value and looks_secret(key)))
