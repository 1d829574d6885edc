"""``runner exec`` and ``runner local --demo``: the README's first command, and one job from a shell."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
    env["HOME"] = str(tmp_path / "home")
    env["XDG_STATE_HOME"] = str(tmp_path / "xdg")
    return env


def run_runner(tmp_path: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m runner ARGS`` from the repository, with a private HOME and state."""
    return subprocess.run(
        [sys.executable, "-m", "runner", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=_env(tmp_path),
    )


def test_exec_runs_one_job_and_prints_outputs(tmp_path: Path) -> None:
    proc = run_runner(tmp_path, "exec", "--type", "health-check", "--state-dir", str(tmp_path / "s"))
    assert proc.returncode == 0, proc.stderr
    outputs = json.loads(proc.stdout)
    assert set(outputs["job_loops"]) == {"operations"}
    assert "health-check" in proc.stderr or "job loops" in proc.stderr


def test_exec_failure_exit_code_and_result_file(tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(
        '{"src_registry": {"RegistryType": "nope"}, "src_tag": "x", "dst_registry": {}, "dst_tag": "y"}'
    )
    result = tmp_path / "result.json"
    proc = run_runner(
        tmp_path,
        "exec",
        "--type",
        "oci-sync",
        "--plan",
        str(plan),
        "--state-dir",
        str(tmp_path / "s"),
        "--result-out",
        str(result),
    )
    assert proc.returncode == 1, proc.stderr
    stored = json.loads(result.read_text())
    assert stored["success"] is False
    assert "nope" in stored["error_metadata"]["message"]
    assert "failed" in proc.stderr


def test_exec_uses_the_per_user_state_dir_by_default(tmp_path: Path) -> None:
    for _ in range(2):
        proc = run_runner(tmp_path, "exec", "--type", "noop")
        assert proc.returncode == 0, proc.stderr
    creds = tmp_path / "xdg" / "byoc-runner" / "controlplane" / "credentials.json"
    assert creds.exists()
    assert oct(creds.stat().st_mode & 0o777) == "0o600"


def test_local_demo_exits_0_when_every_job_finished(tmp_path: Path) -> None:
    proc = run_runner(tmp_path, "local", "--demo", "--state-dir", str(tmp_path / "s"), timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "demo jobs finished" in proc.stderr
    assert "terraform apply outputs" in proc.stderr  # the plan -> apply pair ran (terraform is on PATH)
    assert '"greeting": "hello from runner local --demo"' in proc.stderr
