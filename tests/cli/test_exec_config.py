"""``runner exec`` reads the runner's configuration as ``runner run`` does (issue 9 point 8), and
fails at once for a job type no installed handler serves (point 5)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ECHO = "actions-workflow=tests.support.handlers:SettingsEchoHandler"


def exec_runner(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m runner exec ARGS`` with a private HOME and state, plus ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
    base.update(HOME=str(tmp_path / "home"), XDG_STATE_HOME=str(tmp_path / "xdg"))
    return subprocess.run(
        [sys.executable, "-m", "runner", "exec", "--state-dir", str(tmp_path / "s"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**base, **(env or {})},
    )


def test_environment_reaches_the_handlers(tmp_path: Path) -> None:
    proc = exec_runner(
        tmp_path,
        "--type",
        "actions-workflow",
        env={
            "RUNNER_HANDLERS": ECHO,
            "RUNNER_TERRAFORM_SHORTCUTS": "false",
            "RUNNER_INSECURE_REGISTRIES": "registry.internal:5000",
            "RUNNER_CHILD_GRACE": "3",
        },
    )
    assert proc.returncode == 0, proc.stderr
    outputs = json.loads(proc.stdout)
    assert outputs["terraform_shortcuts"] is False
    assert outputs["insecure_registries"] == ["registry.internal:5000"]
    assert outputs["child_grace"] == 3.0


def test_config_file_applies_and_the_environment_wins(tmp_path: Path) -> None:
    config = tmp_path / "runner.toml"
    config.write_text(
        'handlers = {actions-workflow = "tests.support.handlers:SettingsEchoHandler"}\n'
        "terraform_shortcuts = false\n"
        'terraform_version = "1.5.0"\n'
        'insecure_registries = ["from-file:5000"]\n'
    )
    proc = exec_runner(
        tmp_path,
        "--type",
        "actions-workflow",
        "--config",
        str(config),
        env={"RUNNER_TERRAFORM_VERSION": "1.11.4"},
    )
    assert proc.returncode == 0, proc.stderr
    outputs = json.loads(proc.stdout)
    assert outputs["terraform_shortcuts"] is False
    assert outputs["terraform_version"] == "1.11.4"
    assert outputs["insecure_registries"] == ["from-file:5000"]


def test_a_bad_value_is_one_line_and_exit_2(tmp_path: Path) -> None:
    proc = exec_runner(
        tmp_path, "--type", "noop", env={"RUNNER_TERRAFORM_SHORTCUTS": "maybe", "RUNNER_CHILD_GRACE": "x"}
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1
    assert lines[0].startswith("runner: configuration error: RUNNER_")


def test_a_known_type_without_a_handler_fails_at_once(tmp_path: Path) -> None:
    proc = exec_runner(tmp_path, "--type", "runner-helm")  # in the job-type table, no handler
    assert proc.returncode == 2
    assert "timeout waiting" not in proc.stderr
    message = proc.stderr.strip()
    assert "no installed handler serves this job type" in message
    assert "installed: " in message
    assert "noop" in message.split("installed: ", 1)[1]
    assert "RUNNER_HANDLERS=runner-helm=module:Class" in message
    assert not (tmp_path / "s" / "controlplane").exists(), "nothing was started"
