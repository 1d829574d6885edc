"""Shared fixtures live in tests/support/; each tier's module registers its own."""

from __future__ import annotations

import importlib.util

_PLUGINS = [
    "tests.support.controlplane",
    "tests.support.runner_proc",
    "tests.support.registry",
    "tests.support.terraform",
]

# A support module that does not exist yet (work in progress) must not break the other tiers.
pytest_plugins = [name for name in _PLUGINS if importlib.util.find_spec(name) is not None]
