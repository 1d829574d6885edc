"""``runner exec --type actions-workflow --workflow FILE`` from a shell, and ``runner jobs submit``
of the same file to a running control plane with a runner process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from controlplane.cli import jobs_group
from tests.support.runner_proc import RunnerProcess

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

WORKFLOW = """\
name: smoke
timeout: 1m
run_env_vars: {GREETING: hello}
steps:
  - name: greet
    env_vars: {WHO: world}
    inline_contents: |
      echo "greeting=$GREETING $WHO" >> "$NUON_ACTIONS_OUTPUT_FILEPATH"
      echo "said $GREETING"
  - name: count
    timeout: 20s
    command: >-
      bash -c 'echo "{\\"n\\": 3}" >> "$NUON_ACTIONS_OUTPUT_FILEPATH"'
"""


def _runner(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
    env["HOME"] = str(tmp_path / "home")
    env["XDG_STATE_HOME"] = str(tmp_path / "xdg")
    return subprocess.run(
        [sys.executable, "-m", "runner", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
    )


def test_exec_runs_a_workflow_file_and_prints_its_outputs(tmp_path: Path) -> None:
    workflow = tmp_path / "smoke.yaml"
    workflow.write_text(WORKFLOW)
    proc = _runner(
        tmp_path,
        "exec",
        "--type",
        "actions-workflow",
        "--workflow",
        str(workflow),
        "--state-dir",
        str(tmp_path / "s"),
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {
        "greeting": "hello world",
        "n": 3,
        "steps": {"greet": {"greeting": "hello world"}, "count": {"n": 3}},
    }
    assert "said hello" in proc.stderr


def test_exec_of_a_failing_workflow_exits_1_and_says_which_step(tmp_path: Path) -> None:
    workflow = tmp_path / "bad.yaml"
    workflow.write_text(
        "steps:\n  - name: boom\n    inline_contents: exit 4\n  - name: never\n    command: 'true'\n"
    )
    proc = _runner(
        tmp_path,
        "exec",
        "--type",
        "actions-workflow",
        "--workflow",
        str(workflow),
        "--state-dir",
        str(tmp_path / "s"),
    )
    assert proc.returncode == 1
    assert "step boom failed: bash exited with code 4" in proc.stderr
    assert json.loads(proc.stdout) == {}


def test_exec_refuses_a_bad_workflow_file_before_starting(tmp_path: Path) -> None:
    workflow = tmp_path / "bad.yaml"
    workflow.write_text("steps:\n  - name: nothing\n")
    proc = _runner(
        tmp_path,
        "exec",
        "--type",
        "actions-workflow",
        "--workflow",
        str(workflow),
        "--state-dir",
        str(tmp_path / "s"),
    )
    assert proc.returncode == 2
    assert "steps[0] (nothing): needs command or inline_contents" in proc.stderr
    proc = _runner(
        tmp_path, "exec", "--type", "noop", "--workflow", str(workflow), "--state-dir", str(tmp_path / "s")
    )
    assert proc.returncode == 2
    assert "--workflow is for --type actions-workflow" in proc.stderr


def test_jobs_submit_sends_the_same_file_to_a_running_control_plane(
    control_plane: Any, operator: Any, runner_process: RunnerProcess, tmp_path: Path
) -> None:
    workflow = tmp_path / "smoke.yaml"
    workflow.write_text(WORKFLOW)
    env = {"RUNNER_API_URL": "", "RUNNER_ADMIN_TOKEN": "", "RUNNER_ID": "", "RUNNER_STATE_DIR": ""}
    args = ["--state-dir", str(control_plane.state_dir), "submit", "--type", "actions-workflow"]
    done = CliRunner().invoke(jobs_group, [*args, "--workflow", str(workflow), "--wait", "--json"], env=env)
    assert done.exit_code == 0, done.output
    job = json.loads(done.output)
    assert job["status"] == "finished"
    assert job["outputs"]["greeting"] == "hello world"
    assert job["execution_timeout"] == 120 * 10**9  # the workflow's minute plus one
    plan = json.loads(operator.plan(job["id"]))
    run = operator.json("GET", f"/v1/installs/local/action-workflows/runs/{plan['id']}")
    assert [s["status"] for s in run["steps"]] == ["finished", "finished"]
    refused = CliRunner().invoke(jobs_group, [*args[:-1], "noop", "--workflow", str(workflow)], env=env)
    assert refused.exit_code == 2
    assert "is for --type actions-workflow" in refused.output
