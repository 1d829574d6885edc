"""Start-up: the CLI paths that need no heavy module do not import one (issue 17).

``runner version`` (and ``runner --version``) must cost an interpreter start plus click: no
pydantic (the wire and plan models, the handlers' models), no boto3, protobuf, rich, httpx or
anyio. Checked by the modules a fresh interpreter has loaded when the command returns, not by
timing (bench/README.md has the figures).
"""

from __future__ import annotations

import json
import os
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
    loaded = sorted(k for k, v in sys.modules.items() if v is not None)
    sys.__stderr__.write("MODULES " + json.dumps(loaded) + "\\n")
atexit.register(report)
sys.argv = ["runner", *ARGS]
from runner.cli import main
main()
"""


def loaded_modules(*args: str, exit_code: int = 0, env: dict[str, str] | None = None) -> tuple[str, set[str]]:
    code = PROBE.replace("ARGS", repr(list(args)))
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert proc.returncode == exit_code, proc.stderr
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


def test_run_does_not_load_rich() -> None:
    # `runner run` with no runner id stops at the configuration (exit 2), after importing the
    # daemon: rich (structlog's and httpx's optional pretty-printers) is not among its modules.
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
    _, modules = loaded_modules("run", exit_code=2, env=env)
    assert "runner.daemon" in modules
    assert not [name for name in modules if name == "rich" or name.startswith("rich.")]
