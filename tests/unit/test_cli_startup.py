"""Start-up: the CLI paths that need no heavy module do not import one (issue 17).

``runner version`` (and ``runner --version``) must cost an interpreter start plus click: no
pydantic (the wire and plan models, the handlers' models), no boto3, protobuf, rich, httpx or
anyio. Checked by the modules a fresh interpreter has loaded when the command returns, not by
timing (bench/README.md has the figures).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]

HEAVY = (
    "pydantic",
    "pydantic_core",
    "boto3",
    "botocore",
    "google.protobuf",
    "rich",
    "httpx",
    "anyio",
    "yaml",
    "runner.config",
    "runner.api.models",
    "runner.sdk",
    "handlers",
    "controlplane",
)

PROBE = """
import atexit, json, sys
def report():
    sys.__stderr__.write("MODULES " + json.dumps(sorted(sys.modules)) + "\\n")
atexit.register(report)
sys.argv = ["runner", *ARGS]
from runner.cli import main
main()
"""


def loaded_modules(*args: str) -> tuple[str, set[str]]:
    code = PROBE.replace("ARGS", repr(list(args)))
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    line = next(line for line in proc.stderr.splitlines() if line.startswith("MODULES "))
    return proc.stdout, set(json.loads(line.removeprefix("MODULES ")))


@pytest.mark.parametrize("args", [("version",), ("--version",)])
def test_version_imports_nothing_heavy(args: tuple[str, ...]) -> None:
    stdout, modules = loaded_modules(*args)
    assert "0." in stdout
    loaded = sorted(
        name for name in modules for heavy in HEAVY if name == heavy or name.startswith(heavy + ".")
    )
    assert loaded == []
