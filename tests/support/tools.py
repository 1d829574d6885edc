"""Finding the real tools a test tier needs.

In CI (``CI=true``) a missing tool is a failure, never a silent skip: a green run must mean the
tier really ran. On a developer machine the test is skipped with a message naming the tool.
"""

from __future__ import annotations

import os
import shutil

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_tool(name: str, *, hint: str = "") -> str:
    """Path of ``name`` on PATH; fails in CI and skips elsewhere when it is missing."""
    path = shutil.which(name)
    if path:
        return path
    message = f"required tool {name!r} is not installed" + (f" ({hint})" if hint else "")
    if in_ci():
        pytest.fail(message + " - .ci/run must install it", pytrace=False)
    pytest.skip(message)
